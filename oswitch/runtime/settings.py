"""The config in the runtime's units, derived in one place.

The config speaks o-switcher's milliseconds; the runtime and the pure core work in
seconds. Every conversion and every "this target's value, else the global one" rule
lives here: :class:`Settings` for what the dispatcher and the switcher read per
config, :func:`target_settings` for what one target's actor reads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import attrs

from oswitch.config import CircuitBreakerConfig, SwitcherConfig, TargetConfig
from oswitch.core.backoff import BackoffSettings
from oswitch.core.breaker import BreakerSettings
from oswitch.core.deadline_learning import DeadlinePolicies, DeadlinePolicy, bounded_by
from oswitch.core.scoring import Weights
from oswitch.core.target_health import HealthSettings, RateLimit

# The learned deadlines' policies when the embedder gives none (docs/deadlines.md).
DEFAULT_POLICIES = DeadlinePolicies()


def seconds(ms: float) -> float:
    """A duration of the config (milliseconds) in the runtime's seconds."""
    return ms / 1000.0


def backoff_settings(config: SwitcherConfig) -> BackoffSettings:
    """The backoff before re-sending to a target already tried (``backoff``)."""
    b = config.backoff
    return BackoffSettings(
        base_s=seconds(b.base_ms), multiplier=b.multiplier, max_s=seconds(b.max_ms), jitter=b.jitter
    )


def breaker_settings(cb: CircuitBreakerConfig) -> BreakerSettings:
    """A breaker's settings from a (merged) ``circuit_breaker`` table."""
    return BreakerSettings(
        failure_threshold=cb.failure_threshold,
        failure_rate_threshold=cb.failure_rate_threshold,
        sliding_window_size=cb.sliding_window_size,
        half_open_after_s=seconds(cb.half_open_after_ms),
        half_open_max_probes=cb.half_open_max_probes,
        success_threshold=cb.success_threshold,
    )


class Settings:
    """The global knobs the dispatcher and the switcher read, converted once per config.

    ``max_expected_latency_s`` is both the attempt limit of a non-streamed call and
    the latency that scores zero in ranking (``max_expected_latency_ms``, o-switcher's
    ``timeout``).
    """

    def __init__(self, config: SwitcherConfig) -> None:
        self.config = config
        self.retry_budget = config.retry_budget
        self.failover_budget = config.failover_budget
        self.max_wait_s = seconds(config.max_wait_ms)
        self.max_expected_latency_s = seconds(config.max_expected_latency_ms)
        self.request_timeout_s = seconds(config.request_timeout_ms)
        self.hedge_after_s = (
            None if config.hedge_after_ms is None else seconds(config.hedge_after_ms)
        )
        w = config.routing_weights
        self.weights = Weights(
            health=w.health, latency=w.latency, failure=w.failure, priority=w.priority
        )
        self.backoff = backoff_settings(config)
        self.fallbacks: Mapping[str, Sequence[str]] = config.fallbacks

    def without_budgets(self) -> Settings:
        """A copy allowing no retry and no failover (``stream_resume = "off"``)."""
        copy = Settings(self.config)
        copy.retry_budget = 0
        copy.failover_budget = 0
        return copy


@attrs.frozen(kw_only=True)
class TargetSettings:
    """What one target's actor reads, in seconds.

    ``first_token_override_s``: an explicit first-token limit (the target's
    ``first_token_timeout_ms``, else the global one), None when the deadline is
    learned; ``idle_override_s`` likewise for the stall limit
    (``stream_idle_timeout_ms``). ``policies``: how the learned deadlines are
    derived; ``response_policy``: the non-streamed response deadline's, whose cold
    start and cap are ``max_expected_latency_ms`` (the attempt limit of a non-streamed
    call: learning only shortens it). ``quota_after_s``: a provider delay at or
    past this is a quota (``quota_delay_cap_ms``); ``health``: the pure core's rules;
    ``tokens``: the configured token budget (``rate_limit.tokens_per_minute``), None
    for none; ``learn_limits``: whether the provider's rate-limit headers are learned
    (``learn_rate_limits``).
    """

    health: HealthSettings
    first_token_override_s: float | None
    idle_override_s: float | None
    policies: DeadlinePolicies
    response_policy: DeadlinePolicy
    quota_after_s: float
    tokens: RateLimit | None = None
    learn_limits: bool = True

    @property
    def silence_cap_s(self) -> float:
        """How long a streamed attempt may go without content before it is abandoned
        for good: the explicit first-token limit, else the first-token policy's cap
        (a hedge starts long before, at the learned deadline)."""
        if self.first_token_override_s is not None:
            return self.first_token_override_s
        return self.policies.first_token.cap_s


def target_settings(
    config: SwitcherConfig,
    target: TargetConfig,
    policies: DeadlinePolicies = DEFAULT_POLICIES,
) -> TargetSettings:
    """Derive ``target``'s settings under ``config`` (see :class:`TargetSettings`)."""
    limit = target.rate_limit
    health = HealthSettings(
        passthrough=target.model is None,
        concurrency_limit=target.concurrency_limit,
        breaker=breaker_settings(target.circuit_breaker or config.circuit_breaker),
        backoff=backoff_settings(config),
        quota_cooldown_s=seconds(config.quota_cooldown_ms),
        health_half_life_s=seconds(config.health_half_life_ms),
        rate_limit=None
        if limit is None or limit.requests_per_minute is None
        else RateLimit(rate_per_s=limit.requests_per_minute / 60.0, burst=limit.burst),
    )
    tokens = None
    if limit is not None and limit.tokens_per_minute is not None:
        burst = limit.burst_tokens or max(1, math.ceil(limit.tokens_per_minute))
        tokens = RateLimit(rate_per_s=limit.tokens_per_minute / 60.0, burst=burst)
    first_token_ms = target.first_token_timeout_ms or config.first_token_timeout_ms
    idle_ms = target.stream_idle_timeout_ms or config.stream_idle_timeout_ms
    return TargetSettings(
        health=health,
        first_token_override_s=None if first_token_ms is None else seconds(first_token_ms),
        idle_override_s=None if idle_ms is None else seconds(idle_ms),
        policies=policies,
        response_policy=bounded_by(
            policies.response_headers, seconds(config.max_expected_latency_ms)
        ),
        quota_after_s=seconds(config.quota_delay_cap_ms),
        tokens=tokens,
        learn_limits=config.learn_rate_limits,
    )
