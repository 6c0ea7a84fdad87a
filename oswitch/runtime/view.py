"""Snapshots of one target: its ``TargetView`` (``Switcher.list_targets``) and its
scoring ``Candidate`` (routing)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from oswitch.config import SwitcherConfig, TargetConfig
from oswitch.core.key_budget import BudgetSnapshot
from oswitch.core.ratelimit_headers import DIMENSIONS
from oswitch.core.scoring import Candidate
from oswitch.core.target_health import TargetHealth
from oswitch.runtime.timings import ModelDeadlines


@attrs.frozen(kw_only=True)
class TargetView:
    """A read-only snapshot of one target, as ``Switcher.list_targets`` returns it.

    Times (``cooldown_until``) are on the switcher's trio clock;
    ``cooldown_remaining_s`` is relative to when the view was taken. ``in_flight``
    is the target actor's one count of work: attempts holding one of its slots plus
    orders waiting in its inbox. Never contains a key: ``key_source`` says only where
    the key comes from. ``deadlines``: the deadlines it applies per model it has
    served (learned, cold start or explicit; see docs/deadlines.md).

    Tokens: ``tokens_per_minute`` the provider counted over the last minute;
    ``tokens_used`` since start by kind (``prompt``, ``completion``, ``cached``);
    ``cost`` since start at the target's prices (None without prices);
    ``token_budget_available`` left in the configured token bucket (None: none);
    ``provider_limits`` the provider's latest view by dimension (``requests``,
    ``tokens``, ``input_tokens``, ``output_tokens``: each ``limit``, ``remaining``
    and ``reset_in_s``, any None when not reported; only reported dimensions).
    """

    target_id: str
    provider_id: str
    api: str
    base_url: str
    model: str | None
    serves: tuple[str, ...]
    state: str
    condition: str
    breaker_state: str
    health: float
    latency_ms: float | None
    failure_rate: float
    in_flight: int
    concurrency_limit: int
    operator_priority: int
    enabled: bool
    capabilities: tuple[str, ...] | None
    policy_tags: tuple[str, ...]
    context_window: int | None
    deployment_mode_hint: str
    cooldown_until: float | None
    cooldown_remaining_s: float | None
    model_cooldowns: Mapping[str, float]
    attempts: int
    successes: int
    failures_by_class: Mapping[str, int]
    breaker_trips: int
    key_source: str
    # The class of the latest failed attempt and how long ago it ended (seconds
    # before the view was taken); None while none has failed.
    last_error: str | None = None
    last_error_ago_s: float | None = None
    deadlines: tuple[ModelDeadlines, ...] = ()
    tokens_per_minute: int = 0
    tokens_used: Mapping[str, int] = attrs.field(factory=dict)
    cost: float | None = None
    token_budget_available: float | None = None
    provider_limits: Mapping[str, Mapping[str, float | None]] = attrs.field(factory=dict)
    # With a store: the fleet-wide state and which replica set it (FleetLink.view_of).
    fleet: Mapping[str, object] | None = None


def target_view(
    target: TargetConfig,
    config: SwitcherConfig,
    health: TargetHealth,
    now: float,
    *,
    in_flight: int,
    key_source: str,
    deadlines: tuple[ModelDeadlines, ...] = (),
    budget: BudgetSnapshot | None = None,
    fleet: Mapping[str, object] | None = None,
) -> TargetView:
    """The view of ``target`` at ``now``, its state read from ``health`` and its tokens
    from ``budget``."""
    tracker = health.health
    latency = tracker.latency_at(now)
    cooldown = health.cooldown_until(now)
    return TargetView(
        target_id=target.target_id,
        provider_id=target.provider_id,
        api=target.api,
        base_url=target.base_url,
        model=target.model,
        serves=target.serves,
        state=str(health.state),
        condition=str(health.condition(now)),
        breaker_state=str(health.breaker.state(now)),
        health=tracker.health_at(now),
        latency_ms=None if latency is None else latency * 1000.0,
        failure_rate=tracker.failure_rate_at(now),
        in_flight=in_flight,
        concurrency_limit=target.concurrency_limit,
        operator_priority=target.operator_priority,
        enabled=target.enabled,
        capabilities=target.capabilities,
        policy_tags=target.policy_tags,
        context_window=target.context_window,
        deployment_mode_hint=config.deployment_mode_hint,
        cooldown_until=cooldown,
        cooldown_remaining_s=None if cooldown is None else cooldown - now,
        model_cooldowns=health.model_cooldowns(now),
        attempts=health.attempts,
        successes=health.successes,
        failures_by_class=dict(health.failures),
        breaker_trips=health.breaker.statistics(now).trips,
        key_source=key_source,
        last_error=health.last_error,
        last_error_ago_s=None if health.last_error_at is None else now - health.last_error_at,
        deadlines=deadlines,
        **({} if budget is None else _token_fields(budget, now)),
        fleet=fleet,
    )


def _token_fields(budget: BudgetSnapshot, now: float) -> dict[str, Any]:
    totals = budget.totals
    limits: dict[str, Mapping[str, float | None]] = {}
    learned = budget.learned
    if learned is not None:
        for dimension in DIMENSIONS:
            window = learned.window(dimension)
            if window.reported:
                reset_at = window.reset_at
                limits[dimension] = {
                    "limit": window.limit,
                    "remaining": window.remaining,
                    "reset_in_s": None if reset_at is None else max(0.0, reset_at - now),
                }
    return {
        "tokens_per_minute": budget.tokens_per_minute,
        "tokens_used": {
            "prompt": totals.prompt_tokens,
            "completion": totals.completion_tokens,
            "cached": totals.cached_tokens,
        },
        "cost": totals.cost,
        "token_budget_available": budget.configured_available,
        "provider_limits": limits,
    }


def target_candidate(
    target: TargetConfig, health: TargetHealth, now: float, *, in_flight: int
) -> Candidate:
    """What ranking reads of ``target`` at ``now``."""
    tracker = health.health
    return Candidate(
        target_id=target.target_id,
        tier=target.operator_priority,
        health=tracker.health_at(now),
        latency_s=tracker.latency_at(now),
        failure_rate=tracker.failure_rate_at(now),
        priority=float(target.operator_priority),
        in_flight=in_flight,
    )
