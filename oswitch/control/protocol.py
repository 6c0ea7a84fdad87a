"""The control channel's wire protocol, sans I/O: frames in, typed commands out.

Every frame is one JSON object in a websocket text frame. ``parse_frame`` turns a
frame into one of the command types below or raises :class:`ProtocolError`, whose
message names the offending field by path (``$.target_id``) and says what is wrong.
The ``*_reply`` and ``event_frame`` builders render what the server sends back.
No trio, no sockets: the server (``oswitch.control.server``) does the I/O.

The full protocol is described in docs/control-protocol.md.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias, cast

import attrs

from oswitch.core.kinds import kind_of
from oswitch.core.secret import Secret
from oswitch.core.trace import RequestTrace
from oswitch.errors import SwitcherError

PROTOCOL_VERSION = 1

# Websocket close codes the server uses (RFC 6455, section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011

# An ``id`` is echoed verbatim; a long string id would only bloat every reply.
MAX_ID_CHARS = 128

# Subscription topics, as oswitch.runtime.events sorts events into them (kept here
# as plain data so that this module stays free of trio).
TOPICS: tuple[str, ...] = ("audit", "targets")

TARGET_OPS: tuple[str, ...] = ("pause_target", "resume_target", "drain_target", "disable_target")

RequestId: TypeAlias = int | str | None


class ErrorCode(enum.StrEnum):
    """The ``error.code`` of a refused frame."""

    AUTH_REQUIRED = "auth_required"
    AUTH_FAILED = "auth_failed"
    AUTH_TIMEOUT = "auth_timeout"
    ALREADY_AUTHENTICATED = "already_authenticated"
    BAD_JSON = "bad_json"
    BAD_FRAME = "bad_frame"
    UNKNOWN_OP = "unknown_op"
    BAD_ARGUMENT = "bad_argument"
    UNKNOWN_TARGET = "unknown_target"
    UNKNOWN_REQUEST = "unknown_request"
    INVALID_CONFIG = "invalid_config"
    INTERNAL = "internal"


class ProtocolError(SwitcherError):
    """A frame the server refuses: ``code`` (an :class:`ErrorCode`), a message,
    the frame's ``id`` when it could be read (else None) and ``problems``, the
    ``(path, reason)`` pairs behind a ``bad_argument`` or ``invalid_config``."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        id: RequestId = None,
        problems: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id
        self.problems: tuple[tuple[str, str], ...] = tuple(problems)


# ---- commands ------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Auth:
    """``{"op": "auth", "token": ...}``: the first frame of every connection."""

    id: RequestId
    token: Secret


@attrs.frozen(kw_only=True)
class ListTargets:
    """``{"op": "list_targets"}``: a snapshot of every target."""

    id: RequestId


@attrs.frozen(kw_only=True)
class TargetCommand:
    """``pause_target`` / ``resume_target`` / ``drain_target`` / ``disable_target``."""

    id: RequestId
    op: str
    target_id: str


@attrs.frozen(kw_only=True)
class InspectRequest:
    """``{"op": "inspect_request", "request_id": ...}``: one request's trace."""

    id: RequestId
    request_id: str


@attrs.frozen(kw_only=True)
class ReloadConfig:
    """``reload_config`` with exactly one of ``path`` (read by the server) or an
    inline ``config`` object."""

    id: RequestId
    path: str | None = None
    config: Mapping[str, Any] | None = None


@attrs.frozen(kw_only=True)
class Subscribe:
    """``{"op": "subscribe", "topics": [...]}``: stream events of ``topics``."""

    id: RequestId
    topics: frozenset[str]


@attrs.frozen(kw_only=True)
class Unsubscribe:
    """``{"op": "unsubscribe"}``: stop the event stream."""

    id: RequestId


Command: TypeAlias = (
    Auth | ListTargets | TargetCommand | InspectRequest | ReloadConfig | Subscribe | Unsubscribe
)


# ---- parsing -------------------------------------------------------------------------


class _Bad(ValueError):
    def __init__(self, reason: str, path: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = path


def _kind(value: object) -> str:
    """A JSON value's kind, for messages (never the value: it may be a token)."""
    return kind_of(value, mapping="an object", sequence="an array")


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise _Bad(f"expected a string (got {_kind(value)})", path)
    if not value:
        raise _Bad("must not be empty", path)
    return value


def _topics(value: object, path: str) -> frozenset[str]:
    if not isinstance(value, list):
        raise _Bad(f"expected an array of topics (got {_kind(value)})", path)
    if not value:
        raise _Bad(f"must not be empty (topics: {', '.join(TOPICS)})", path)
    topics: set[str] = set()
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(item, str):
            raise _Bad(f"expected a string (got {_kind(item)})", where)
        if item not in TOPICS:
            raise _Bad(f"unknown topic (topics: {', '.join(TOPICS)})", where)
        topics.add(item)
    return frozenset(topics)


def _object(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(f"expected an object (got {_kind(value)})", path)
    return value


# Per op: its arguments, each with its checker and whether it is required.
_Arg = tuple[Callable[[object, str], Any], bool]
_ARGS: dict[str, dict[str, _Arg]] = {
    "auth": {"token": (lambda v, p: Secret(_string(v, p)), True)},
    "list_targets": {},
    **{op: {"target_id": (_string, True)} for op in TARGET_OPS},
    "inspect_request": {"request_id": (_string, True)},
    "reload_config": {"path": (_string, False), "config": (_object, False)},
    "subscribe": {"topics": (_topics, False)},
    "unsubscribe": {},
}

OPS: tuple[str, ...] = tuple(sorted(_ARGS))
_OP_LIKE = re.compile(r"[a-z][a-z_-]{0,31}")


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _decode(frame: str | bytes) -> object:
    if isinstance(frame, bytes | bytearray):
        raise ProtocolError(ErrorCode.BAD_FRAME, "expected a text frame (got a binary frame)")
    try:
        return json.loads(frame, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            ErrorCode.BAD_JSON,
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        ) from None
    except RecursionError:
        raise ProtocolError(ErrorCode.BAD_JSON, "not valid JSON: nested too deeply") from None
    except ValueError as exc:
        # NaN/Infinity, or an integer past Python's digit limit.
        reason = str(exc) if "not valid JSON" in str(exc) else "number too large"
        raise ProtocolError(ErrorCode.BAD_JSON, f"not valid JSON: {reason}") from None


def _frame_id(frame: Mapping[str, Any]) -> RequestId:
    value = frame.get("id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ProtocolError(
            ErrorCode.BAD_ARGUMENT,
            f"expected an integer or a string (got {_kind(value)}) @ $.id",
            problems=[("$.id", f"expected an integer or a string (got {_kind(value)})")],
        )
    if isinstance(value, str) and len(value) > MAX_ID_CHARS:
        reason = f"must be at most {MAX_ID_CHARS} characters"
        raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"{reason} @ $.id", problems=[("$.id", reason)])
    return value


def _bad_arguments(id: RequestId, problems: list[tuple[str, str]]) -> ProtocolError:
    message = "; ".join(f"{reason} @ {path}" for path, reason in problems)
    return ProtocolError(ErrorCode.BAD_ARGUMENT, message, id=id, problems=problems)


def parse_frame(frame: str | bytes) -> Command:
    """Parse one websocket frame into a command.

    Raises ProtocolError: ``bad_frame`` (binary, or JSON that is not an object),
    ``bad_json``, ``unknown_op`` (the message lists the valid ops) or
    ``bad_argument`` (every missing, unknown or mistyped field, by path). The
    error carries the frame's ``id`` whenever that could be read.
    """
    document = _decode(frame)
    if not isinstance(document, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, f"expected a JSON object (got {_kind(document)})")
    id = _frame_id(document)
    op = document.get("op")
    if "op" not in document:
        raise _bad_arguments(id, [("$.op", "missing required key")])
    if not isinstance(op, str):
        raise _bad_arguments(id, [("$.op", f"expected a string (got {_kind(op)})")])
    spec = _ARGS.get(op)
    if spec is None:
        # Echo only what looks like an op name (a typo): never an arbitrary value.
        shown = f" {json.dumps(op)}" if _OP_LIKE.fullmatch(op) else ""
        raise ProtocolError(
            ErrorCode.UNKNOWN_OP, f"unknown op{shown}; valid ops: {', '.join(OPS)}", id=id
        )
    problems: list[tuple[str, str]] = []
    values: dict[str, Any] = {}
    for key in sorted(document):
        if key not in spec and key not in ("id", "op"):
            problems.append((_path(key), "unknown key"))
    for name, (check, required) in spec.items():
        if name not in document:
            if required:
                problems.append((f"$.{name}", "missing required key"))
            continue
        try:
            values[name] = check(document[name], f"$.{name}")
        except _Bad as bad:
            problems.append((bad.path, bad.reason))
    if op == "reload_config" and not problems:
        if "path" in values and "config" in values:
            problems.append(("$", "give either path or config, not both"))
        elif not values:
            problems.append(("$", "missing required key: path or config"))
    if problems:
        raise _bad_arguments(id, problems)
    return _build(op, id, values)


def _path(key: str) -> str:
    plain = key.isidentifier() and key.isascii()
    return f"$.{key}" if plain else f"$[{json.dumps(key)}]"


def _build(op: str, id: RequestId, values: dict[str, Any]) -> Command:
    if op == "auth":
        return Auth(id=id, token=values["token"])
    if op == "list_targets":
        return ListTargets(id=id)
    if op in TARGET_OPS:
        return TargetCommand(id=id, op=op, target_id=values["target_id"])
    if op == "inspect_request":
        return InspectRequest(id=id, request_id=values["request_id"])
    if op == "reload_config":
        return ReloadConfig(id=id, path=values.get("path"), config=values.get("config"))
    if op == "subscribe":
        return Subscribe(id=id, topics=values.get("topics", frozenset(TOPICS)))
    return Unsubscribe(id=id)


# ---- replies -------------------------------------------------------------------------


def to_json(value: object) -> Any:
    """``value`` as plain JSON data: attrs instances become objects (by field
    name), enums their values, tuples and sets arrays, non-finite floats null.

    A ``Secret`` becomes ``"***"`` so that a secret reaching a reply by mistake
    is still never revealed. Anything else unknown becomes its ``str()``.
    """
    if value is None or isinstance(value, bool | int | str):
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Secret):
        return "***"
    if isinstance(value, enum.Enum):
        return to_json(value.value)
    if attrs.has(type(value)):
        return {
            field.name: to_json(getattr(value, field.name))
            for field in attrs.fields(cast(Any, type(value)))
        }
    if isinstance(value, Mapping):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if isinstance(value, set | frozenset):
        return sorted((to_json(item) for item in value), key=str)
    return str(value)


def encode(message: Mapping[str, Any]) -> str:
    """Render a reply or event as compact JSON text (ASCII only; never NaN)."""
    return json.dumps(to_json(message), ensure_ascii=True, allow_nan=False, separators=(",", ":"))


# An attempt's token fields, shown only for an attempt whose usage was reported.
_USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "cached_tokens", "cost")


def trace_json(trace: RequestTrace) -> dict[str, Any]:
    """A request trace as JSON data, with its ``duration_s`` (null while running);
    an attempt with no reported usage leaves out its token and cost fields."""
    data: dict[str, Any] = to_json(trace)
    data["duration_s"] = to_json(trace.duration_s)
    for attempt in data.get("attempts", ()):
        if attempt.get("prompt_tokens") is None:
            for name in _USAGE_FIELDS:
                attempt.pop(name, None)
    return data


def ok_reply(id: RequestId, result: object) -> str:
    """``{"id": id, "ok": true, "result": result}`` as text."""
    return encode({"id": id, "ok": True, "result": result})


def error_reply(
    id: RequestId,
    code: ErrorCode,
    message: str,
    problems: Sequence[tuple[str, str]] = (),
) -> str:
    """``{"id": id, "ok": false, "error": {"code", "message"[, "problems"]}}`` as text.

    ``problems`` (``(path, reason)`` pairs) are listed as ``{"path", "reason"}``
    objects when there are any.
    """
    error: dict[str, Any] = {"code": code, "message": message}
    if problems:
        error["problems"] = [{"path": path, "reason": reason} for path, reason in problems]
    return encode({"id": id, "ok": False, "error": error})


def protocol_error_reply(error: ProtocolError) -> str:
    """The error reply for a refused frame."""
    return error_reply(error.id, error.code, error.message, error.problems)


def event_frame(name: str, at: float, topic: str | None, fields: Mapping[str, Any]) -> str:
    """``{"event": name, "at": at, "topic": topic, "fields": {...}}`` as text."""
    return encode({"event": name, "at": at, "topic": topic, "fields": fields})
