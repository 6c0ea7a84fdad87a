"""Shared builders for engine tests (configs with inline fake keys)."""

from __future__ import annotations

from typing import Any

import attrs

from oswitch.config import CircuitBreakerConfig, SwitcherConfig, TargetConfig
from oswitch.core.secret import Secret

BASE_URL = "https://api.fake.test/v1"


def target(
    target_id: str,
    key: str | None = None,
    *,
    model: str | None = "gpt-4o",
    serves: tuple[str, ...] | None = None,
    **fields: Any,
) -> TargetConfig:
    """A target whose fake key is ``key`` (default: ``key-<target_id>``)."""
    return TargetConfig(
        target_id=target_id,
        provider_id="openai",
        base_url=fields.pop("base_url", BASE_URL),
        api_key=fields.pop("api_key") if "api_key" in fields else Secret(key or f"key-{target_id}"),
        model=model,
        serves=serves if serves is not None else ((model,) if model else ("*",)),
        **fields,
    )


def config(*targets: TargetConfig, **fields: Any) -> SwitcherConfig:
    return SwitcherConfig(targets=targets, **fields)


def breaker(**fields: Any) -> CircuitBreakerConfig:
    return attrs.evolve(CircuitBreakerConfig(), **fields)


def chat(model: str = "gpt-4o", text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}
