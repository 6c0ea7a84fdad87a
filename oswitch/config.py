"""The configuration model (attrs), and loading it from TOML, JSON or opencode.json.

The model classes below are the single schema: every key oswitch accepts is a
field here, with its default, and has an effect documented in
docs/configuration.md. Durations are milliseconds, as in o-switcher.

Loading is one pass of one cattrs converter. Field constraints live in structure
hooks (never attrs validators, whose messages cattrs loses), and the converter's
ExceptionGroup is walked into ``(path, reason)`` pairs, so a bad file reports
every problem at once, each at its JSONPath-like location.
"""

from __future__ import annotations

import contextvars
import difflib
import json
import math
import os
import re
import tomllib
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeAlias, Union, cast, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, override

from oswitch.core.secret import Secret
from oswitch.errors import ConfigError
from oswitch.known_providers import KNOWN_PROVIDERS, NPM_PACKAGES

__all__ = [
    "BackoffConfig",
    "CircuitBreakerConfig",
    "ControlConfig",
    "RateLimitConfig",
    "RoutingWeights",
    "ServerConfig",
    "SwitcherConfig",
    "TargetConfig",
    "describe_target",
    "describe_targets",
    "load_config",
    "parse_config",
    "validate_config",
]

Jitter = Literal["full", "equal", "none"]
Api = Literal["openai", "anthropic"]
StreamResume = Literal["continue", "restart", "off"]
DeploymentModeHint = Literal["auto", "plugin-only", "server-companion", "sdk-control"]


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


@attrs.frozen(kw_only=True)
class RateLimitConfig:
    """A target's own request rate: ``requests_per_minute`` refilled continuously,
    at most ``burst`` at once (default: one second's worth, at least 1)."""

    requests_per_minute: float
    burst: int | None = None


@attrs.frozen(kw_only=True)
class TargetConfig:
    """One target: a provider endpoint, one credential, a model (or passthrough).

    After parsing, ``api``, ``base_url`` and ``api_key_env`` hold their resolved
    values and ``serves`` is never empty.
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


@attrs.frozen(kw_only=True)
class ServerConfig:
    """The OpenAI-compatible HTTP sidecar (``oswitch serve``)."""

    host: str = "127.0.0.1"
    port: int = 8787
    api_keys: tuple[Secret, ...] = ()
    max_body_bytes: int = 4 * 1024 * 1024
    header_timeout_ms: float = 10000.0
    shutdown_grace_ms: float = 10000.0


@attrs.frozen(kw_only=True)
class ControlConfig:
    """The websocket operator channel; ``port`` None means it is not served."""

    host: str = "127.0.0.1"
    port: int | None = None
    token: Secret | None = None
    token_env: str = "OSWITCH_CONTROL_TOKEN"
    max_message_bytes: int = 1024 * 1024


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


_MODEL_CLASSES: tuple[type, ...] = (
    BackoffConfig,
    RoutingWeights,
    CircuitBreakerConfig,
    RateLimitConfig,
    TargetConfig,
    ServerConfig,
    ControlConfig,
    SwitcherConfig,
)


def _resolve_model_types() -> None:
    # The hooks dispatch on real types, not the strings `from __future__` leaves.
    for cls in _MODEL_CLASSES:
        attrs.resolve_types(cls)


_resolve_model_types()

# o-switcher's short spellings of two global keys.
SHORTHANDS: Mapping[str, str] = types.MappingProxyType(
    {"retry": "retry_budget", "timeout": "max_expected_latency_ms"}
)

# ---------------------------------------------------------------------------
# Problems and paths

PathSeg: TypeAlias = str | int
Path_: TypeAlias = tuple[PathSeg, ...]

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _render_path(path: Path_) -> str:
    out = ["$"]
    for seg in path:
        if isinstance(seg, int):
            out.append(f"[{seg}]")
        elif _PLAIN_KEY.fullmatch(seg):
            out.append(f".{seg}")
        else:
            out.append(f"[{json.dumps(seg)}]")
    return "".join(out)


class _Invalid(ValueError):
    """One problem, raised from a hook. ``at`` is relative to where cattrs caught
    it, unless ``absolute`` (problems found in an opencode.json provider entry)."""

    def __init__(self, reason: str, at: Path_ = (), *, absolute: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.at = at
        self.absolute = absolute


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str | Secret):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _show(value: object) -> str:
    """Render a scalar as the user wrote it (JSON spelling); containers by kind.

    Never call this on a value that may be a secret."""
    if value is None or isinstance(value, bool | int | float | str):
        text = json.dumps(value) if not isinstance(value, float) else repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return _kind(value)


def _unknown_key(key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown key '{key}'{hint}"


# ---------------------------------------------------------------------------
# Leaf hooks: strict types, messages of our own

_converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)


def _structure_int(value: object, _: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"expected an integer (got {_show(value)})")
    return value


def _structure_float(value: object, _: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(f"expected a number (got {_show(value)})")
    if not math.isfinite(value):
        raise _Invalid(f"must be a finite number (got {_show(value)})")
    return float(value)


def _structure_str(value: object, _: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string (got {_show(value)})")
    return value


def _structure_bool(value: object, _: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false (got {_show(value)})")
    return value


def _structure_secret(value: object, _: object) -> Secret:
    # The value is a credential: messages name its kind, never echo it.
    if isinstance(value, Secret):
        secret = value
    elif isinstance(value, str):
        secret = Secret(value)
    else:
        raise _Invalid(f"expected a string (got {_kind(value)})")
    if not secret.reveal():
        raise _Invalid("must not be empty")
    return secret


def _is_literal(t: Any) -> bool:
    return get_origin(t) is Literal


def _literal_hook(t: Any) -> Callable[[object, object], str]:
    allowed: tuple[str, ...] = get_args(t)

    def structure(value: object, _: object) -> str:
        if isinstance(value, str) and value in allowed:
            return value
        raise _Invalid(f"must be one of {', '.join(allowed)} (got {_show(value)})")

    return structure


def _is_homogeneous_tuple(t: Any) -> bool:
    args = get_args(t)
    return get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis


def _tuple_hook(t: Any) -> Callable[[object, object], tuple[Any, ...]]:
    element = get_args(t)[0]
    secret = element is Secret

    def structure(value: object, _: object) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            got = _kind(value) if secret else _show(value)
            raise _Invalid(f"expected a list (got {got})")
        items: list[Any] = []
        errors: list[Exception] = []
        for index, item in enumerate(value):
            try:
                structured = _converter.structure(item, element)
                if element is str and not structured:
                    raise _Invalid("must not be empty")
                items.append(structured)
            except Exception as exc:
                exc.add_note(IterableValidationNote(f"index {index}", index, element))
                errors.append(exc)
        if errors:
            raise IterableValidationError("invalid list", errors, t)
        return tuple(items)

    return structure


def _structure_fallbacks(value: object, _: object) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, Mapping):
        raise _Invalid(f"expected a mapping of model names to lists (got {_show(value)})")
    chains: dict[str, tuple[str, ...]] = {}
    errors: list[Exception] = []
    for model, chain in value.items():
        try:
            if not model:
                raise _Invalid("model name must not be empty")
            chains[model] = _converter.structure(chain, tuple[str, ...])
        except Exception as exc:
            exc.add_note(IterableValidationNote(f"key {model!r}", model, tuple[str, ...]))
            errors.append(exc)
    if errors:
        raise IterableValidationError("invalid fallbacks", errors, dict)
    return chains


_converter.register_structure_hook(int, _structure_int)
_converter.register_structure_hook(float, _structure_float)
_converter.register_structure_hook(str, _structure_str)
_converter.register_structure_hook(bool, _structure_bool)
_converter.register_structure_hook(Secret, _structure_secret)
_converter.register_structure_hook_factory(_is_literal, _literal_hook)
_converter.register_structure_hook_factory(_is_homogeneous_tuple, _tuple_hook)
_converter.register_structure_hook_func(
    lambda t: t == Mapping[str, tuple[str, ...]], _structure_fallbacks
)

# ---------------------------------------------------------------------------
# Field rules: checked after the type, inside the field's own hook

Rule: TypeAlias = Callable[[Any], str | None]


def _gt(bound: float) -> Rule:
    return lambda v: None if v > bound else f"must be > {bound:g}"


def _ge(bound: float) -> Rule:
    return lambda v: None if v >= bound else f"must be >= {bound:g}"


def _rate(v: float) -> str | None:
    return None if 0 < v <= 1 else "must be in (0, 1]"


def _port(v: int) -> str | None:
    return None if 0 <= v <= 65535 else "must be a port number, 0 to 65535"


def _nonempty(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


def _url(v: str) -> str | None:
    ok = re.fullmatch(r"https?://[^\s/]+(/\S*)?", v) is not None
    return None if ok else "must be an http:// or https:// URL"


def _env_name(v: str) -> str | None:
    if _ENV_NAME.fullmatch(v):
        return None
    return "must be the name of an environment variable, like OPENAI_API_KEY"


_RULES: Mapping[type, Mapping[str, Rule]] = {
    BackoffConfig: {"base_ms": _ge(0), "multiplier": _ge(1), "max_ms": _gt(0)},
    RoutingWeights: {name: _ge(0) for name in ("health", "latency", "failure", "priority")},
    CircuitBreakerConfig: {
        "failure_threshold": _ge(1),
        "failure_rate_threshold": _rate,
        "sliding_window_size": _ge(1),
        "half_open_after_ms": _gt(0),
        "half_open_max_probes": _ge(1),
        "success_threshold": _ge(1),
    },
    RateLimitConfig: {"requests_per_minute": _gt(0), "burst": _ge(1)},
    TargetConfig: {
        "target_id": _nonempty,
        "provider_id": _nonempty,
        "base_url": _url,
        "api_key_env": _env_name,
        "model": _nonempty,
        "concurrency_limit": _ge(1),
        "first_token_timeout_ms": _gt(0),
        "stream_idle_timeout_ms": _gt(0),
        "context_window": _ge(1),
    },
    ServerConfig: {
        "host": _nonempty,
        "port": _port,
        "max_body_bytes": _ge(1),
        "header_timeout_ms": _gt(0),
        "shutdown_grace_ms": _ge(0),
    },
    ControlConfig: {
        "host": _nonempty,
        "port": _port,
        "token_env": _env_name,
        "max_message_bytes": _ge(1),
    },
    SwitcherConfig: {
        "retry_budget": _ge(0),
        "failover_budget": _ge(0),
        "queue_limit": _ge(1),
        "concurrency_limit": _ge(1),
        "backpressure_threshold": _ge(1),
        "max_expected_latency_ms": _gt(0),
        "request_timeout_ms": _gt(0),
        "first_token_timeout_ms": _gt(0),
        "stream_idle_timeout_ms": _gt(0),
        "max_wait_ms": _ge(0),
        "quota_cooldown_ms": _gt(0),
        "quota_delay_cap_ms": _gt(0),
        "hedge_after_ms": _gt(0),
        "trace_capacity": _ge(1),
    },
}
# Rules whose message must not echo the value: someone may have pasted the key
# itself where its variable's name belongs.
_SILENT_RULES = {_env_name, _nonempty}


def _optional_inner(t: Any) -> Any | None:
    if get_origin(t) in (Union, types.UnionType):
        args = [a for a in get_args(t) if a is not type(None)]
        if len(args) == 1 and len(get_args(t)) == 2:
            return args[0]
    return None


def _checked(t: Any, rule: Rule) -> Callable[[object, object], Any]:
    inner = _optional_inner(t)
    base = t if inner is None else inner

    def structure(value: object, _: object) -> Any:
        if value is None and inner is not None:
            return None
        result = _converter.structure(value, base)
        reason = rule(result)
        if reason is not None:
            if rule in _SILENT_RULES:
                raise _Invalid(reason)
            raise _Invalid(f"{reason} (got {_show(value)})")
        return result

    return structure


# ---------------------------------------------------------------------------
# Whole-table checks and resolved defaults, per class


def _default(cl: type, name: str) -> Any:
    return getattr(attrs.fields(cl), name).default


def _number(raw: Mapping[str, Any], key: str, default: float) -> float | None:
    """The raw value of a numeric key if valid (a default when absent), else None."""
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _check_backoff(raw: Mapping[str, Any]) -> Iterator[_Invalid]:
    base = _number(raw, "base_ms", _default(BackoffConfig, "base_ms"))
    top = _number(raw, "max_ms", _default(BackoffConfig, "max_ms"))
    if base is not None and top is not None and 0 < top < base:
        yield _Invalid(f"must be >= base_ms (got {top:g} < {base:g})", ("max_ms",))


def _check_switcher(raw: Mapping[str, Any]) -> Iterator[_Invalid]:
    limit = _number(raw, "queue_limit", _default(SwitcherConfig, "queue_limit"))
    threshold = _number(raw, "backpressure_threshold", 0)
    given = "backpressure_threshold" in raw
    if given and limit is not None and threshold is not None and 1 <= limit < threshold:
        yield _Invalid(
            f"must be <= queue_limit (got {threshold:g} > {limit:g})",
            ("backpressure_threshold",),
        )
    targets = raw.get("targets")
    if isinstance(targets, list | tuple):
        if not targets:
            yield _Invalid("must list at least one target", ("targets",))
        first: dict[str, int] = {}
        for index, target in enumerate(targets):
            if not isinstance(target, Mapping):
                continue
            target_id = target.get("target_id")
            if not isinstance(target_id, str) or not target_id:
                continue
            if target_id in first:
                yield _Invalid(
                    f"duplicate target_id {_show(target_id)} "
                    f"(first used by targets[{first[target_id]}])",
                    ("targets", index, "target_id"),
                )
            else:
                first[target_id] = index


def _check_target(raw: Mapping[str, Any]) -> Iterator[_Invalid]:
    ctx = _CONTEXT.get()
    if ctx is not None:
        _, problems = ctx.resolution_problems.pop(id(raw), (0, []))
        yield from problems


def _post_target(target: TargetConfig, raw: Mapping[str, Any]) -> TargetConfig:
    if target.serves:
        return target
    serves = (target.model,) if target.model else ("*",)
    return attrs.evolve(target, serves=serves)


def _post_rate_limit(limit: RateLimitConfig, raw: Mapping[str, Any]) -> RateLimitConfig:
    if limit.burst is not None:
        return limit
    return attrs.evolve(limit, burst=max(1, math.ceil(limit.requests_per_minute / 60)))


def _post_switcher(config: SwitcherConfig, raw: Mapping[str, Any]) -> SwitcherConfig:
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


_CHECKS: Mapping[type, Callable[[Mapping[str, Any]], Iterator[_Invalid]]] = {
    BackoffConfig: _check_backoff,
    SwitcherConfig: _check_switcher,
    TargetConfig: _check_target,
}
_POSTS: Mapping[type, Callable[[Any, Mapping[str, Any]], Any]] = {
    TargetConfig: _post_target,
    RateLimitConfig: _post_rate_limit,
    SwitcherConfig: _post_switcher,
}
_ALIASES: Mapping[type, tuple[str, ...]] = {SwitcherConfig: tuple(SHORTHANDS)}


def _class_hook(cl: type) -> Callable[[object, object], Any]:
    rules = _RULES.get(cl, {})
    overrides = {
        field.name: override(struct_hook=_checked(field.type, rules[field.name]))
        for field in attrs.fields(cl)
        if field.name in rules
    }
    generated: Callable[[Mapping[str, Any], Any], Any] = make_dict_structure_fn(
        cl,
        _converter,
        **overrides,  # type: ignore[arg-type]
    )
    valid_keys = tuple(field.name for field in attrs.fields(cl))
    suggestions = valid_keys + _ALIASES.get(cl, ())
    check = _CHECKS.get(cl)
    post = _POSTS.get(cl)

    def structure(value: object, _: object) -> Any:
        if not isinstance(value, Mapping):
            raise _Invalid(f"expected a mapping (got {_show(value)})")
        errors: list[Exception] = [
            _Invalid(_unknown_key(str(key), suggestions), (str(key),))
            for key in value
            if key not in valid_keys
        ]
        known = {key: item for key, item in value.items() if key in valid_keys}
        result = None
        try:
            result = generated(known, cl)
        except ClassValidationError as exc:
            errors.extend(exc.exceptions)
        if check is not None:
            errors.extend(check(value))
        if errors:
            raise ClassValidationError(f"invalid {cl.__name__}", errors, cl)
        return post(result, value) if post is not None else result

    return structure


_converter.register_structure_hook_factory(lambda t: t in _MODEL_CLASSES, _class_hook)


def _walk(exc: BaseException, at: Path_) -> Iterator[tuple[Path_, str, bool]]:
    """Yield ``(path, reason, absolute)`` for every leaf of cattrs' error tree."""
    if isinstance(exc, _Invalid):
        yield (exc.at if exc.absolute else at + exc.at), exc.reason, exc.absolute
    elif isinstance(exc, ForbiddenExtraKeysError):
        names = tuple(field.name for field in attrs.fields(exc.cl))
        for key in sorted(exc.extra_fields):
            yield (*at, key), _unknown_key(key, names), False
    elif isinstance(exc, KeyError):
        yield at, "missing required key", False
    elif isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            yield from _walk(sub, at + _note_segment(sub))
    else:
        # Not one of ours; its text might quote the value, so say only where.
        yield at, "invalid value", False


def _note_segment(exc: BaseException) -> Path_:
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, AttributeValidationNote):
            return (note.name,)
        if isinstance(note, IterableValidationNote):
            return (note.index,)
    return ()


# ---------------------------------------------------------------------------
# OpenCode provider entries and target resolution


@attrs.frozen(kw_only=True)
class _Provider:
    """What one entry of an opencode.json ``provider`` section gives its targets."""

    name: str
    defaults_from: str | None
    api: Api | None
    base_url: str | None
    api_key: str | Secret | None
    api_key_env: str | None
    models: tuple[str, ...]
    context_window: int | None
    api_path: Path_
    base_url_path: Path_
    key_path: Path_


_ENV_REF = re.compile(r"\{env:([^}]*)\}")


def _read_provider(name: str, raw: object, at: Path_) -> tuple[_Provider | None, list[_Invalid]]:
    """Read one OpenCode provider entry, in its real or its short shape."""
    problems: list[_Invalid] = []

    def bad(reason: str, *where: PathSeg) -> None:
        problems.append(_Invalid(reason, at + where, absolute=True))

    if not isinstance(raw, Mapping):
        bad(f"expected a mapping (got {_show(raw)})")
        return None, problems
    options = raw.get("options", {})
    if not isinstance(options, Mapping):
        bad(f"expected a mapping (got {_show(options)})", "options")
        options = {}

    defaults_from: str | None = name if name in KNOWN_PROVIDERS else None
    api: Api | None = None
    api_path: Path_ = at
    npm = raw.get("npm")
    if npm is not None:
        api_path = (*at, "npm")
        if not isinstance(npm, str):
            bad(f"expected a string (got {_show(npm)})", "npm")
        elif npm not in NPM_PACKAGES:
            bad(
                f"unsupported package {_show(npm)}: oswitch speaks the OpenAI and Anthropic "
                "APIs (use @ai-sdk/openai-compatible with options.baseURL)",
                "npm",
            )
        else:
            defaults_from = NPM_PACKAGES[npm] or defaults_from
            api = "anthropic" if npm == "@ai-sdk/anthropic" else "openai"
    short_api = raw.get("api")
    if short_api is not None:
        api_path = (*at, "api")
        if short_api in get_args(Api):
            api = short_api
        else:
            bad(f"must be one of {', '.join(get_args(Api))} (got {_show(short_api)})", "api")

    base_url: str | None = None
    short_shape = "options" not in raw and "npm" not in raw
    base_url_path = at + (("baseURL",) if short_shape else ("options", "baseURL"))
    for where, container in ((("options", "baseURL"), options), (("baseURL",), raw)):
        value = container.get(where[-1])
        if value is None:
            continue
        base_url_path = at + where
        if not isinstance(value, str):
            bad(f"expected a string (got {_show(value)})", *where)
        elif _url(value) is not None:
            bad(f"must be an http:// or https:// URL (got {_show(value)})", *where)
        else:
            base_url = value
        break
    resource = options.get("resourceName")
    if base_url is None and isinstance(resource, str) and resource:
        base_url = f"https://{resource}.openai.azure.com/openai/v1"

    api_key: str | None = None
    api_key_env: str | None = None
    key_path = at + (("apiKey",) if short_shape else ("options", "apiKey"))
    for where, container in ((("options", "apiKey"), options), (("apiKey",), raw)):
        value = container.get(where[-1])
        if value is None:
            continue
        key_path = at + where
        if not isinstance(value, str):
            bad(f"expected a string (got {_kind(value)})", *where)
        elif ref := _ENV_REF.fullmatch(value.strip()):
            if _ENV_NAME.fullmatch(ref.group(1)):
                api_key_env = ref.group(1)
            else:
                bad("{env:...} must name an environment variable, like OPENAI_API_KEY", *where)
        elif value.strip().startswith("{file:"):
            bad("{file:...} references are not supported: use {env:VAR}", *where)
        elif not value:
            bad("must not be empty", *where)
        else:
            api_key = value
        break

    models: list[str] = []
    windows: list[int] = []
    raw_models = raw.get("models", {})
    if isinstance(raw_models, list):
        for index, model in enumerate(raw_models):
            if isinstance(model, str) and model:
                models.append(model)
            else:
                bad(f"expected a model name (got {_show(model)})", "models", index)
    elif isinstance(raw_models, Mapping):
        for key, entry in raw_models.items():
            wire_name = key
            if isinstance(entry, Mapping):
                # OpenCode's `id` is the name sent upstream when it differs from the key.
                if isinstance(entry.get("id"), str) and entry["id"]:
                    wire_name = entry["id"]
                limit = entry.get("limit")
                context = limit.get("context") if isinstance(limit, Mapping) else None
                if isinstance(context, int) and not isinstance(context, bool) and context > 0:
                    windows.append(context)
            if wire_name:
                models.append(wire_name)
    else:
        bad(f"expected a mapping of model entries (got {_show(raw_models)})", "models")

    if problems:
        return None, problems
    provider = _Provider(
        name=name,
        defaults_from=defaults_from,
        api=api,
        base_url=base_url,
        api_key=api_key,
        api_key_env=api_key_env,
        models=tuple(models),
        context_window=windows[0] if len(windows) == 1 and len(models) == 1 else None,
        api_path=api_path,
        base_url_path=base_url_path,
        key_path=key_path,
    )
    return provider, problems


@attrs.define
class _ParseContext:
    """State of one parse_config call, read by the target hook."""

    providers: Mapping[str, object]
    providers_path: Path_
    read: dict[str, _Provider | None] = attrs.Factory(dict)
    reported: set[str] = attrs.Factory(set)
    # Problems found while resolving a raw target, keyed by id() of its
    # resolved dict, raised from inside that target's hook so they keep order.
    resolution_problems: dict[int, tuple[int, list[_Invalid]]] = attrs.Factory(dict)

    def provider(self, name: str) -> tuple[_Provider | None, list[_Invalid]]:
        if name not in self.providers:
            return None, []
        if name in self.read:
            return self.read[name], []
        provider, problems = _read_provider(
            name, self.providers[name], (*self.providers_path, name)
        )
        self.read[name] = provider
        return provider, problems


_CONTEXT: contextvars.ContextVar[_ParseContext | None] = contextvars.ContextVar(
    "oswitch_config_parse", default=None
)


def _resolve_target(
    raw: Mapping[str, Any], index: int, ctx: _ParseContext, *, discovered: bool
) -> dict[str, Any]:
    """Fill api, base_url, the key and serves from the opencode.json provider entry
    of the same name, then from the known-provider table; record what is missing."""
    resolved = dict(raw)
    problems: list[_Invalid] = []
    provider_id = raw.get("provider_id")
    if not isinstance(provider_id, str) or not provider_id.strip():
        return resolved
    entry, entry_problems = ctx.provider(provider_id)
    problems.extend(entry_problems)
    if entry is None and provider_id in ctx.providers:
        # The entry itself is broken and has been reported; guessing further
        # would only add noise.
        ctx.resolution_problems[id(resolved)] = (index, problems)
        return resolved
    table_key = entry.defaults_from if entry is not None else provider_id
    known = KNOWN_PROVIDERS.get(table_key) if table_key is not None else None

    if "api" not in raw:
        api = (entry.api if entry else None) or (known.api if known else None)
        if api is not None:
            resolved["api"] = api

    if "base_url" not in raw:
        base_url = (entry.base_url if entry else None) or (known.base_url if known else None)
        if base_url is not None:
            resolved["base_url"] = base_url
        else:
            if known is not None and known.base_url_hint:
                why = (
                    f"{_show(provider_id)} has no default URL; give one like {known.base_url_hint}"
                )
            else:
                why = f"required, as {_show(provider_id)} is not a well-known provider"
            if discovered and entry is not None:
                problems.append(_Invalid(f"missing: {why}", entry.base_url_path, absolute=True))
            else:
                problems.append(_Invalid(f"missing: {why}", ("base_url",)))

    if raw.get("api_key") is not None and raw.get("api_key_env") is not None:
        problems.append(_Invalid("give api_key or api_key_env, not both", ("api_key",)))
    elif raw.get("api_key") is None and raw.get("api_key_env") is None:
        if entry is not None and entry.api_key is not None:
            resolved["api_key"] = entry.api_key
        elif entry is not None and entry.api_key_env is not None:
            resolved["api_key_env"] = entry.api_key_env
        elif known is not None and known.key_env is not None:
            resolved["api_key_env"] = known.key_env

    if entry is not None:
        if "model" not in raw and "serves" not in raw and entry.models:
            resolved["serves"] = list(entry.models)
        if "context_window" not in raw and entry.context_window is not None:
            resolved["context_window"] = entry.context_window

    if problems:
        ctx.resolution_problems[id(resolved)] = (index, problems)
    return resolved


# ---------------------------------------------------------------------------
# Public API

_MISSING = object()


def parse_config(mapping: Mapping[str, Any], *, source: str | None = None) -> SwitcherConfig:
    """Validate ``mapping`` (a parsed TOML/JSON document) into a SwitcherConfig.

    A mapping with ``provider`` or ``switcher`` at the top level is an opencode.json:
    its ``switcher`` section is oswitch's, and without ``switcher.targets`` each
    entry of ``provider`` becomes a target. Otherwise the whole mapping is
    oswitch's section. Defaults are resolved (see docs/configuration.md).
    ``source`` (a file name) is added to the error as a note.

    Raises ConfigError listing every problem as ``(path, reason)``; no secret
    value ever appears in it.
    """
    problems: list[tuple[Path_, str]] = []
    if not isinstance(mapping, Mapping):
        _raise([((), f"expected a mapping at the top level (got {_show(mapping)})")], source)

    prefix: Path_ = ()
    section: Mapping[str, Any] = mapping
    providers: Mapping[str, Any] = {}
    opencode = "provider" in mapping or "switcher" in mapping
    if opencode:
        prefix = ("switcher",)
        section, providers = {}, {}
        raw_section, raw_providers = mapping.get("switcher", {}), mapping.get("provider", {})
        if isinstance(raw_section, Mapping):
            section = raw_section
        else:
            problems.append((prefix, f"expected a mapping (got {_show(raw_section)})"))
        if isinstance(raw_providers, Mapping):
            providers = raw_providers
        else:
            problems.append((("provider",), f"expected a mapping (got {_show(raw_providers)})"))

    own = dict(section)
    renamed: dict[str, str] = {}
    for short, long in SHORTHANDS.items():
        if short not in own:
            continue
        value = own.pop(short)
        if long not in own:
            own[long] = value
            renamed[long] = short
        elif not _same_value(value, own[long]):
            problems.append(
                (
                    (*prefix, short),
                    f"conflicts with {long} ({_show(value)} vs {_show(own[long])}): "
                    "give only one of them",
                )
            )

    ctx = _ParseContext(providers=providers, providers_path=("provider",))
    discovered: dict[int, str] = {}
    raw_targets = own.get("targets", _MISSING)
    discovering = raw_targets is _MISSING and opencode and "provider" in mapping
    if discovering:
        disabled = mapping.get("disabled_providers", [])
        disabled = set(disabled) if isinstance(disabled, list) else set()
        targets: list[Any] = []
        for name in providers:
            raw: dict[str, Any] = {"target_id": str(name), "provider_id": str(name)}
            if name in disabled:
                raw["enabled"] = False
            discovered[len(targets)] = str(name)
            targets.append(_resolve_target(raw, len(targets), ctx, discovered=True))
        own["targets"] = targets
        if not targets and isinstance(mapping.get("provider"), Mapping):
            problems.append(
                (("provider",), "lists no providers, and switcher.targets is not given")
            )
    elif isinstance(raw_targets, list | tuple):
        own["targets"] = [
            _resolve_target(raw, index, ctx, discovered=False) if isinstance(raw, Mapping) else raw
            for index, raw in enumerate(raw_targets)
        ]

    config: SwitcherConfig | None = None
    token = _CONTEXT.set(ctx)
    try:
        config = _converter.structure(own, SwitcherConfig)
    except (ClassValidationError, _Invalid) as exc:
        for path, reason, absolute in _walk(exc, ()):
            if path == ("targets",) and discovering and not discovered:
                continue  # already reported at $.provider, where targets should come from
            where = path if absolute else _place(path, prefix, renamed, discovered, ctx)
            problems.append((where, reason))
    finally:
        _CONTEXT.reset(token)
    # Resolution problems of a target the converter never reached (it failed
    # before that element) would otherwise be lost.
    for index, leftovers in ctx.resolution_problems.values():
        for problem in leftovers:
            at = problem.at if problem.absolute else (*prefix, "targets", index, *problem.at)
            problems.append((at, problem.reason))
    if problems or config is None:
        _raise(problems, source)
    return config


def _same_value(a: object, b: object) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _place(
    path: Path_,
    prefix: Path_,
    renamed: Mapping[str, str],
    discovered: Mapping[int, str],
    ctx: _ParseContext,
) -> Path_:
    """Turn a path inside oswitch's section into a path in the document."""
    if path and isinstance(path[0], str) and path[0] in renamed:
        path = (renamed[path[0]], *path[1:])
    if len(path) >= 2 and path[0] == "targets" and isinstance(path[1], int):
        name = discovered.get(path[1])
        if name is not None:
            # A discovered target exists only as its provider entry; point there.
            return (*ctx.providers_path, name)
    return prefix + path


def _raise(problems: Sequence[tuple[Path_, str]], source: str | None) -> NoReturn:
    error = ConfigError([(_render_path(path), reason) for path, reason in problems])
    if source is not None:
        error.add_note(f"in {source}")
    raise error


_TOML_WHERE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def load_config(path: str | os.PathLike[str]) -> SwitcherConfig:
    """Read and validate a config file: TOML when the name ends in ``.toml``, else
    JSON (an opencode.json included; see :func:`parse_config`).

    Raises ConfigError for an unreadable file (naming it), a syntax error (naming
    file, line and column, as ``FILE:LINE:COL``) and every invalid value.
    """
    name = os.fspath(path)
    try:
        data = Path(name).read_bytes()
    except OSError as exc:
        raise ConfigError([(name, f"cannot read file: {exc.strerror or exc}")]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError([(name, f"not UTF-8 text (byte {exc.start})")]) from None
    document: object
    if name.lower().endswith(".toml"):
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            message = str(exc)
            where = _TOML_WHERE.search(message)
            location = f"{name}:{where.group(1)}:{where.group(2)}" if where else name
            reason = _TOML_WHERE.sub("", message)
            raise ConfigError([(location, f"invalid TOML: {reason}")]) from None
    else:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            location = f"{name}:{exc.lineno}:{exc.colno}"
            raise ConfigError([(location, f"invalid JSON: {exc.msg}")]) from None
    if not isinstance(document, Mapping):
        _raise([((), f"expected a mapping at the top level (got {_show(document)})")], name)
    return parse_config(document, source=name)


def validate_config(config: SwitcherConfig) -> None:
    """Check a SwitcherConfig built in code (not parsed) against every rule of
    :func:`parse_config`, e.g. before ``Switcher.reload_config`` applies it.

    A ``backpressure_threshold`` left at its default is not held against a smaller
    ``queue_limit`` (parsing would have lowered it). Raises ConfigError with the
    same ``(path, reason)`` problems parsing the equivalent mapping would give.
    """
    document = cast(dict[str, Any], _unstructure(config))
    if config.backpressure_threshold == _default(SwitcherConfig, "backpressure_threshold"):
        del document["backpressure_threshold"]
    parse_config(document)


def _unstructure(value: object) -> object:
    """The mapping parse_config would accept for ``value``; secrets stay Secrets."""
    if type(value) in _MODEL_CLASSES:
        fields: tuple[attrs.Attribute[Any], ...] = attrs.fields(type(value))  # type: ignore[arg-type]
        # None is every optional field's default: leaving it out reads the same.
        return {
            field.name: _unstructure(getattr(value, field.name))
            for field in fields
            if getattr(value, field.name) is not None
        }
    if isinstance(value, Mapping):
        return {key: _unstructure(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_unstructure(item) for item in value]
    return value


def describe_target(target: TargetConfig, *, environ: Mapping[str, str] | None = None) -> str:
    """One line about ``target`` for humans; its key shows only where it comes from.

    With ``environ`` the key variable is reported ``(set)`` or ``(missing → starts
    ReauthRequired)``; the variable's value is never read into the line.
    Raises nothing.
    """
    if target.api_key is not None:
        key = "inline (hidden)"
    elif target.api_key_env is not None:
        key = f"env {target.api_key_env}"
        if environ is not None:
            present = bool(environ.get(target.api_key_env))
            key += " (set)" if present else " (missing → starts ReauthRequired)"
    else:
        key = "none"
    model = target.model if target.model is not None else "(passthrough)"
    parts = [
        f"provider {target.provider_id}",
        f"api {target.api}",
        target.base_url,
        f"model {model}",
        f"serves {', '.join(target.serves)}",
        f"priority {target.operator_priority}",
        f"key {key}",
    ]
    if not target.enabled:
        parts.append("disabled")
    return f"{target.target_id}: " + "; ".join(parts)


def describe_targets(
    config: SwitcherConfig, *, environ: Mapping[str, str] | None = None
) -> list[str]:
    """One :func:`describe_target` line per target, in config order. Raises nothing."""
    return [describe_target(target, environ=environ) for target in config.targets]
