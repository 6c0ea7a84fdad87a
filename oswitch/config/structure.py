"""The one cattrs converter that turns a parsed document into the model.

Field constraints live in structure hooks (never attrs validators, whose messages
cattrs loses), and the converter's ExceptionGroup is walked into ``(path, reason)``
pairs, so a bad file reports every problem at once, each at its JSONPath-like
location.
"""

from __future__ import annotations

import difflib
import math
import re
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeAlias, Union, get_args, get_origin

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

from oswitch.config.fleet_rules import check_store, key_prefix, store_url
from oswitch.config.model import (
    MODEL_CLASSES,
    SHORTHANDS,
    AuditConfig,
    BackoffConfig,
    CircuitBreakerConfig,
    ControlConfig,
    OtelConfig,
    RateLimitConfig,
    RoutingWeights,
    ServerConfig,
    StoreConfig,
    SwitcherConfig,
    TargetConfig,
)
from oswitch.config.problems import ConfigPath, Invalid, PreparedTable, show
from oswitch.config.table_rules import (
    check_backoff,
    check_rate_limit,
    check_switcher,
    post_switcher,
)
from oswitch.core.kinds import kind_of
from oswitch.core.secret import Secret

# ---------------------------------------------------------------------------
# Unknown keys, with the key the user probably meant


def _unknown_key(key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown key '{key}'{hint}"


# ---------------------------------------------------------------------------
# Leaf hooks: strict types, messages of our own

_converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)


def _structure_int(value: object, _: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"expected an integer (got {show(value)})")
    return value


def _structure_float(value: object, _: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"expected a number (got {show(value)})")
    if not math.isfinite(value):
        raise Invalid(f"must be a finite number (got {show(value)})")
    return float(value)


def _structure_str(value: object, _: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a string (got {show(value)})")
    return value


def _structure_bool(value: object, _: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false (got {show(value)})")
    return value


def _structure_secret(value: object, _: object) -> Secret:
    # The value is a credential: messages name its kind, never echo it.
    if isinstance(value, Secret):
        secret = value
    elif isinstance(value, str):
        secret = Secret(value)
    else:
        raise Invalid(f"expected a string (got {kind_of(value)})")
    if not secret.reveal():
        raise Invalid("must not be empty")
    return secret


def _is_literal(t: Any) -> bool:
    return get_origin(t) is Literal


def _literal_hook(t: Any) -> Callable[[object, object], str]:
    allowed: tuple[str, ...] = get_args(t)

    def structure(value: object, _: object) -> str:
        if isinstance(value, str) and value in allowed:
            return value
        raise Invalid(f"must be one of {', '.join(allowed)} (got {show(value)})")

    return structure


def _is_homogeneous_tuple(t: Any) -> bool:
    args = get_args(t)
    return get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis


def _tuple_hook(t: Any) -> Callable[[object, object], tuple[Any, ...]]:
    element = get_args(t)[0]
    secret = element is Secret

    def structure(value: object, _: object) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            got = kind_of(value) if secret else show(value)
            raise Invalid(f"expected a list (got {got})")
        items: list[Any] = []
        errors: list[Exception] = []
        for index, item in enumerate(value):
            try:
                structured = _converter.structure(item, element)
                if element is str and not structured:
                    raise Invalid("must not be empty")
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
        raise Invalid(f"expected a mapping of model names to lists (got {show(value)})")
    chains: dict[str, tuple[str, ...]] = {}
    errors: list[Exception] = []
    for model, chain in value.items():
        try:
            if not model:
                raise Invalid("model name must not be empty")
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

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # what an environment variable may be called

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


def url_problem(v: str) -> str | None:
    """Why ``v`` is not a base URL oswitch can call, or None when it is one."""
    ok = re.fullmatch(r"https?://[^\s/]+(/\S*)?", v) is not None
    return None if ok else "must be an http:// or https:// URL"


def _env_name(v: str) -> str | None:
    if ENV_NAME.fullmatch(v):
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
    RateLimitConfig: {
        "requests_per_minute": _gt(0),
        "burst": _ge(1),
        "tokens_per_minute": _gt(0),
        "burst_tokens": _ge(1),
    },
    StoreConfig: {
        "url": store_url,
        "url_env": _env_name,
        "key_prefix": key_prefix,
        "timeout_ms": _gt(0),
        "expected_replicas": _ge(1),
    },
    TargetConfig: {
        "target_id": _nonempty,
        "provider_id": _nonempty,
        "base_url": url_problem,
        "api_key_env": _env_name,
        "model": _nonempty,
        "concurrency_limit": _ge(1),
        "first_token_timeout_ms": _gt(0),
        "stream_idle_timeout_ms": _gt(0),
        "context_window": _ge(1),
        "price_per_million_input": _ge(0),
        "price_per_million_output": _ge(0),
    },
    ServerConfig: {
        "host": _nonempty,
        "port": _port,
        "max_body_bytes": _ge(1),
        "header_timeout_ms": _gt(0),
        "body_timeout_ms": _gt(0),
        "write_timeout_ms": _gt(0),
        "max_connections": _ge(1),
        "shutdown_grace_ms": _ge(0),
    },
    ControlConfig: {
        "host": _nonempty,
        "port": _port,
        "token_env": _env_name,
        "max_message_bytes": _ge(1),
        "max_connections": _ge(1),
    },
    AuditConfig: {"path": _nonempty, "max_bytes": _ge(1024), "backups": _ge(0)},
    OtelConfig: {"endpoint": url_problem, "service_name": _nonempty},
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
        "health_half_life_ms": _ge(0),
        "quota_cooldown_ms": _gt(0),
        "quota_delay_cap_ms": _gt(0),
        "hedge_after_ms": _gt(0),
        "trace_capacity": _ge(1),
        "trace_store_bytes": _ge(1),
    },
}
# Rules whose message must not echo the value: someone may have pasted the key
# itself where its variable's name belongs.
_SILENT_RULES = {_env_name, _nonempty, store_url}


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
                raise Invalid(reason)
            raise Invalid(f"{reason} (got {show(value)})")
        return result

    return structure


# ---------------------------------------------------------------------------
# Whole-table checks and resolved defaults, per class (table_rules.py, fleet_rules.py)


_CHECKS: Mapping[type, Callable[[Mapping[str, Any]], Iterator[Invalid]]] = {
    BackoffConfig: check_backoff,
    RateLimitConfig: check_rate_limit,
    SwitcherConfig: check_switcher,
    StoreConfig: check_store,
}
_POSTS: Mapping[type, Callable[[Any, Mapping[str, Any]], Any]] = {
    SwitcherConfig: post_switcher,
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
            raise Invalid(f"expected a mapping (got {show(value)})")
        errors: list[Exception] = [
            Invalid(_unknown_key(str(key), suggestions), (str(key),))
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
        if isinstance(value, PreparedTable):
            errors.extend(value.take_problems())
        if errors:
            raise ClassValidationError(f"invalid {cl.__name__}", errors, cl)
        return post(result, value) if post is not None else result

    return structure


_converter.register_structure_hook_factory(lambda t: t in MODEL_CLASSES, _class_hook)


def structure_switcher(section: Mapping[str, Any]) -> tuple[SwitcherConfig | None, list[Invalid]]:
    """Structure oswitch's section into a SwitcherConfig, or find every problem in it.

    Returns the config and no problems, or None and each problem in document order,
    its ``at`` a path inside ``section`` (in the whole document when ``absolute``).
    Problems carried by a :class:`PreparedTable` are reported by its own hook.
    """
    try:
        return _converter.structure(section, SwitcherConfig), []
    except (ClassValidationError, Invalid) as exc:
        return None, [
            Invalid(reason, at, absolute=absolute) for at, reason, absolute in _walk(exc, ())
        ]


def _walk(exc: BaseException, at: ConfigPath) -> Iterator[tuple[ConfigPath, str, bool]]:
    """Yield ``(path, reason, absolute)`` for every leaf of cattrs' error tree."""
    if isinstance(exc, Invalid):
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


def _note_segment(exc: BaseException) -> ConfigPath:
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, AttributeValidationNote):
            return (note.name,)
        if isinstance(note, IterableValidationNote):
            return (note.index,)
    return ()
