"""The whole-table checks and the resolved defaults of the switcher's tables
(``[oswitch]``, its ``backoff``, a target's ``rate_limit``): the rules that read
several keys at once, used by ``structure.py``'s converter, each given the raw table
(a check: the problems it finds) or the structured one (a post step). The fleet's
``store`` table has its own, in ``fleet_rules.py``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from oswitch.config.model import BackoffConfig, CircuitBreakerConfig, SwitcherConfig, TargetConfig
from oswitch.config.problems import Invalid, show


def _default(cl: type, name: str) -> Any:
    return getattr(attrs.fields(cl), name).default


def _number(raw: Mapping[str, Any], key: str, default: float) -> float | None:
    """The raw value of a numeric key if valid (a default when absent), else None."""
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def check_backoff(raw: Mapping[str, Any]) -> Iterator[Invalid]:
    """``[oswitch.backoff]``: max_ms no smaller than base_ms."""
    base = _number(raw, "base_ms", _default(BackoffConfig, "base_ms"))
    top = _number(raw, "max_ms", _default(BackoffConfig, "max_ms"))
    if base is not None and top is not None and 0 < top < base:
        yield Invalid(f"must be >= base_ms (got {top:g} < {base:g})", ("max_ms",))


def check_switcher(raw: Mapping[str, Any]) -> Iterator[Invalid]:
    """``[oswitch]``: the backpressure threshold within the queue, at least one
    target, no target_id twice."""
    limit = _number(raw, "queue_limit", _default(SwitcherConfig, "queue_limit"))
    threshold = _number(raw, "backpressure_threshold", 0)
    given = "backpressure_threshold" in raw
    if given and limit is not None and threshold is not None and 1 <= limit < threshold:
        yield Invalid(
            f"must be <= queue_limit (got {threshold:g} > {limit:g})",
            ("backpressure_threshold",),
        )
    targets = raw.get("targets")
    if isinstance(targets, list | tuple):
        if not targets:
            yield Invalid("must list at least one target", ("targets",))
        first: dict[str, int] = {}
        for index, target in enumerate(targets):
            if not isinstance(target, Mapping):
                continue
            target_id = target.get("target_id")
            if not isinstance(target_id, str) or not target_id:
                continue
            if target_id in first:
                yield Invalid(
                    f"duplicate target_id {show(target_id)} "
                    f"(first used by targets[{first[target_id]}])",
                    ("targets", index, "target_id"),
                )
            else:
                first[target_id] = index


def post_switcher(config: SwitcherConfig, raw: Mapping[str, Any]) -> SwitcherConfig:
    """``[oswitch]`` once structured: the defaults that depend on other keys resolved
    (the backpressure threshold, each target's circuit_breaker)."""
    if "backpressure_threshold" not in raw:
        # An unset threshold follows a small queue down rather than exceed it.
        threshold = min(_default(SwitcherConfig, "backpressure_threshold"), config.queue_limit)
        config = attrs.evolve(config, backpressure_threshold=threshold)
    targets = tuple(
        _merge_breaker(target, raw_target, config.circuit_breaker)
        for target, raw_target in zip(config.targets, raw["targets"], strict=True)
    )
    return attrs.evolve(config, targets=targets)


def _merge_breaker(
    target: TargetConfig, raw: Mapping[str, Any], shared: CircuitBreakerConfig
) -> TargetConfig:
    """A target's circuit_breaker overrides the global one key by key: what it
    leaves out comes from the global table, not from the built-in defaults."""
    if target.circuit_breaker is None:
        return target
    given = {key: getattr(target.circuit_breaker, key) for key in raw["circuit_breaker"]}
    return attrs.evolve(target, circuit_breaker=attrs.evolve(shared, **given))


def check_rate_limit(raw: Mapping[str, Any]) -> Iterator[Invalid]:
    """A ``rate_limit`` table: a request or token rate, and no burst without its rate."""

    def given(key: str) -> bool:
        return raw.get(key) is not None

    if not given("requests_per_minute") and not given("tokens_per_minute"):
        # One of the two is required (either alone, or both); named as before tokens.
        yield Invalid("missing required key", ("requests_per_minute",))
    # A config written back out (validate_config, a reload) carries the resolved
    # defaults: burst 1 and burst_tokens null say nothing of their own.
    if raw.get("burst", 1) != 1 and not given("requests_per_minute"):
        yield Invalid("has no effect without requests_per_minute", ("burst",))
    if given("burst_tokens") and not given("tokens_per_minute"):
        yield Invalid("has no effect without tokens_per_minute", ("burst_tokens",))
