"""Snapshots of one target: its ``TargetView`` (``Switcher.list_targets``) and its
scoring ``Candidate`` (routing)."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from oswitch.config import SwitcherConfig, TargetConfig
from oswitch.core.scoring import Candidate
from oswitch.core.target_health import TargetHealth


@attrs.frozen(kw_only=True)
class TargetView:
    """A read-only snapshot of one target, as ``Switcher.list_targets`` returns it.

    Times (``cooldown_until``) are on the switcher's trio clock;
    ``cooldown_remaining_s`` is relative to when the view was taken. ``in_flight``
    is the target actor's one count of work: attempts holding one of its slots plus
    orders waiting in its inbox. Never contains a key: ``key_source`` says only where
    the key comes from.
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
    fleet: Mapping[str, object] | None = None,
) -> TargetView:
    """The view of ``target`` at ``now``, its state read from ``health``."""
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
        fleet=fleet,
    )


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
