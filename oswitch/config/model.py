"""The configuration model: attrs classes, the single schema.

Every key oswitch accepts is a field here, with its default, and has an effect
documented in docs/configuration.md. Durations are milliseconds, as in o-switcher.
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping
from typing import Literal

import attrs

from oswitch.core.secret import Secret

Jitter = Literal["full", "equal", "none"]
Api = Literal["openai", "anthropic"]
StreamResume = Literal["continue", "restart", "off"]
DeploymentModeHint = Literal["auto", "plugin-only", "server-companion", "sdk-control"]
OnStoreError = Literal["local", "open", "closed"]


@attrs.frozen(kw_only=True)
class BackoffConfig:
    """Delay before re-sending to a target already tried: attempt ``n`` (0-based)
    waits ``min(max_ms, base_ms * multiplier**n)`` shaped by ``jitter`` — full:
    uniform(0, d); equal: d/2 + uniform(0, d/2); none: d."""

    base_ms: float = 1000.0
    multiplier: float = 2.0
    max_ms: float = 30000.0
    jitter: Jitter = "full"


@attrs.frozen(kw_only=True)
class RoutingWeights:
    """Weights of health, latency, failure rate and priority in a target's score
    (ranking within one ``operator_priority`` tier)."""

    health: float = 1.0
    latency: float = 0.5
    failure: float = 0.8
    priority: float = 0.3


@attrs.frozen(kw_only=True)
class CircuitBreakerConfig:
    """When a target's breaker opens (``failure_threshold`` failures, or a failure
    rate at or above ``failure_rate_threshold`` over the last
    ``sliding_window_size`` attempts), how long it stays open, and how it closes."""

    failure_threshold: int = 5
    failure_rate_threshold: float = 0.5
    sliding_window_size: int = 10
    half_open_after_ms: float = 30000.0
    half_open_max_probes: int = 1
    success_threshold: int = 2


def _one_second_of(limit: RateLimitConfig) -> int:
    if limit.requests_per_minute is None:
        return 1
    return max(1, math.ceil(limit.requests_per_minute / 60))


def _one_minute_of(limit: RateLimitConfig) -> int | None:
    if limit.tokens_per_minute is None:
        return None
    return max(1, math.ceil(limit.tokens_per_minute))


@attrs.frozen(kw_only=True)
class RateLimitConfig:
    """A target's own rates, each refilled continuously: ``requests_per_minute``, at
    most ``burst`` at once (default: one second's worth, at least 1), and
    ``tokens_per_minute`` (prompt and completion tokens), at most ``burst_tokens`` at
    once (default: the whole minute's budget). Either may be left out (None), not both.
    """

    requests_per_minute: float | None = None
    burst: int = attrs.field(default=attrs.Factory(_one_second_of, takes_self=True))
    tokens_per_minute: float | None = None
    burst_tokens: int | None = attrs.field(default=attrs.Factory(_one_minute_of, takes_self=True))


@attrs.frozen(kw_only=True)
class TargetConfig:
    """One target: a provider endpoint, one credential, a model (or passthrough).

    After parsing, ``api``, ``base_url`` and ``api_key_env`` hold their resolved
    values. ``serves`` is never empty, however the target was built: left empty, it is
    ``(model,)``, or ``("*",)`` for a passthrough target (no ``model``).
    """

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
    stream_usage: bool | None = None
    price_per_million_input: float | None = None
    price_per_million_output: float | None = None

    def __attrs_post_init__(self) -> None:
        # The one place the default is resolved (a frozen class sets it this way).
        if not self.serves:
            object.__setattr__(self, "serves", (self.model,) if self.model else ("*",))


@attrs.frozen(kw_only=True)
class ServerConfig:
    """The OpenAI-compatible HTTP sidecar (``oswitch serve``)."""

    host: str = "127.0.0.1"
    port: int = 8787
    api_keys: tuple[Secret, ...] = ()
    max_body_bytes: int = 4 * 1024 * 1024
    header_timeout_ms: float = 10000.0
    body_timeout_ms: float = 30000.0
    write_timeout_ms: float = 30000.0
    max_connections: int = 1000
    shutdown_grace_ms: float = 10000.0


@attrs.frozen(kw_only=True)
class ControlConfig:
    """The websocket operator channel; ``port`` None means it is not served."""

    host: str = "127.0.0.1"
    port: int | None = None
    token: Secret | None = None
    token_env: str = "OSWITCH_CONTROL_TOKEN"
    max_message_bytes: int = 1024 * 1024
    max_connections: int = 32


@attrs.frozen(kw_only=True)
class AuditConfig:
    """Where ``oswitch serve`` writes the audit log (NDJSON); ``path`` None = stdout.

    A file is rotated when a write would take it past ``max_bytes`` (``FILE.1`` …
    ``FILE.<backups>`` kept, the oldest deleted) and reopened on SIGUSR1, for an
    outside logrotate that moved it away.
    """

    path: str | None = None
    max_bytes: int = 100 * 1024 * 1024
    backups: int = 5


@attrs.frozen(kw_only=True)
class OtelConfig:
    """OpenTelemetry traces (``pip install 'oswitch[otel]'``): off while ``endpoint`` is
    None; else spans go by OTLP/HTTP to that URL (a collector's ``/v1/traces``)."""

    endpoint: str | None = None
    service_name: str = "oswitch"


@attrs.frozen(kw_only=True)
class StoreConfig:
    """The shared store of a fleet of replicas (Redis or Valkey, docs/fleet.md).

    ``url`` (``redis://``, ``rediss://``, ``unix://``; it may carry a password, so it
    is a Secret) or ``url_env``, the environment variable holding it; exactly one.
    ``timeout_ms`` bounds every store call on the request path; ``on_store_error``
    says what limits apply while the store is unreachable: ``local`` (each replica
    enforces ``1/expected_replicas`` of each limit), ``open`` (no limit of oswitch's)
    or ``closed`` (no attempt is sent).
    """

    url: Secret | None = None
    url_env: str | None = None
    key_prefix: str = "osw"
    timeout_ms: float = 50.0
    on_store_error: OnStoreError = "local"
    expected_replicas: int = 1


@attrs.frozen(kw_only=True)
class SwitcherConfig:
    """The whole configuration. Build it with :func:`parse_config` or
    :func:`load_config`, which validate and resolve defaults."""

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
    first_token_timeout_ms: float | None = None  # None: learned per target and model
    stream_idle_timeout_ms: float | None = None  # None: learned per target and model
    max_wait_ms: float = 10000.0
    health_half_life_ms: float = 30000.0
    quota_cooldown_ms: float = 3_600_000.0
    quota_delay_cap_ms: float = 3_600_000.0
    hedge_after_ms: float | None = None
    learn_rate_limits: bool = True
    # A dict: compared by value, but left out of the hash so the config stays hashable.
    fallbacks: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict, hash=False)
    stream_resume: StreamResume = "continue"
    trace_capacity: int = 1000
    trace_store_bytes: int = 16 * 1024 * 1024
    server: ServerConfig = ServerConfig()
    control: ControlConfig = ControlConfig()
    audit: AuditConfig = AuditConfig()
    otel: OtelConfig = OtelConfig()
    store: StoreConfig | None = None


# Every class of the schema, for the converter's hooks and for unstructuring.
MODEL_CLASSES: tuple[type, ...] = (
    BackoffConfig,
    RoutingWeights,
    CircuitBreakerConfig,
    RateLimitConfig,
    TargetConfig,
    ServerConfig,
    ControlConfig,
    AuditConfig,
    OtelConfig,
    StoreConfig,
    SwitcherConfig,
)


def _resolve_model_types() -> None:
    # The hooks dispatch on real types, not the strings `from __future__` leaves.
    for cls in MODEL_CLASSES:
        attrs.resolve_types(cls)


_resolve_model_types()

# o-switcher's short spellings of two global keys.
SHORTHANDS: Mapping[str, str] = types.MappingProxyType(
    {"retry": "retry_budget", "timeout": "max_expected_latency_ms"}
)
