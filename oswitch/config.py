"""The configuration model (attrs), and loading it from TOML, JSON or opencode.json.

The model classes below are the single schema: every key oswitch accepts is a
field here, with its default, and has an effect documented in
docs/configuration.md. Durations are milliseconds, as in o-switcher.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs

from oswitch.core.secret import Secret

Jitter = Literal["full", "equal", "none"]
Api = Literal["openai", "anthropic"]
StreamResume = Literal["continue", "restart", "off"]
DeploymentModeHint = Literal["auto", "plugin-only", "server-companion", "sdk-control"]


@attrs.frozen(kw_only=True)
class BackoffConfig:
    base_ms: float = 1000.0
    multiplier: float = 2.0
    max_ms: float = 30000.0
    jitter: Jitter = "full"


@attrs.frozen(kw_only=True)
class RoutingWeights:
    health: float = 1.0
    latency: float = 0.5
    failure: float = 0.8
    priority: float = 0.3


@attrs.frozen(kw_only=True)
class CircuitBreakerConfig:
    failure_threshold: int = 5
    failure_rate_threshold: float = 0.5
    sliding_window_size: int = 10
    half_open_after_ms: float = 30000.0
    half_open_max_probes: int = 1
    success_threshold: int = 2


@attrs.frozen(kw_only=True)
class RateLimitConfig:
    """A target's own request rate: ``requests_per_minute`` refilled continuously,
    at most ``burst`` at once (default: one second's worth, at least 1)."""

    requests_per_minute: float
    burst: int | None = None


@attrs.frozen(kw_only=True)
class TargetConfig:
    target_id: str
    provider_id: str
    api: Api = "openai"
    base_url: str = ""
    api_key_env: str | None = None
    api_key: Secret | None = None
    model: str | None = None
    serves: tuple[str, ...] = ()
    capabilities: tuple[str, ...] | None = None
    enabled: bool = True
    operator_priority: int = 0
    policy_tags: tuple[str, ...] = ()
    concurrency_limit: int = 10
    circuit_breaker: CircuitBreakerConfig | None = None
    rate_limit: RateLimitConfig | None = None
    first_token_timeout_ms: float | None = None
    stream_idle_timeout_ms: float | None = None
    context_window: int | None = None


@attrs.frozen(kw_only=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8787
    api_keys: tuple[Secret, ...] = ()
    max_body_bytes: int = 4 * 1024 * 1024
    header_timeout_ms: float = 10000.0
    shutdown_grace_ms: float = 10000.0


@attrs.frozen(kw_only=True)
class ControlConfig:
    host: str = "127.0.0.1"
    port: int | None = None
    token: Secret | None = None
    token_env: str = "OSWITCH_CONTROL_TOKEN"
    max_message_bytes: int = 1024 * 1024


@attrs.frozen(kw_only=True)
class SwitcherConfig:
    targets: tuple[TargetConfig, ...]
    retry_budget: int = 3
    failover_budget: int = 2
    backoff: BackoffConfig = BackoffConfig()
    routing_weights: RoutingWeights = RoutingWeights()
    queue_limit: int = 100
    concurrency_limit: int = 10
    backpressure_threshold: int = 50
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    max_expected_latency_ms: float = 30000.0
    deployment_mode_hint: DeploymentModeHint = "auto"
    request_timeout_ms: float = 120000.0
    first_token_timeout_ms: float | None = None
    stream_idle_timeout_ms: float = 30000.0
    max_wait_ms: float = 10000.0
    quota_cooldown_ms: float = 3_600_000.0
    quota_delay_cap_ms: float = 3_600_000.0
    hedge_after_ms: float | None = None
    fallbacks: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    stream_resume: StreamResume = "continue"
    trace_capacity: int = 1000
    server: ServerConfig = ServerConfig()
    control: ControlConfig = ControlConfig()
