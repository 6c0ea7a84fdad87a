"""Is this a chat request oswitch can send? One check for the sidecar and the engine.

A request oswitch cannot encode, or that is not a chat request, is the caller's fault:
it is refused before any attempt (the sidecar answers 400, the engine raises
``RequestFailed(InvalidRequest)``), so no target is ever charged for it. The check is
one pass over the request, linear in its size, recursing at most 64 containers deep, so
a hostile body can neither exhaust the interpreter's stack nor cost much more than
decoding it did (a 4 MB body of a million tiny objects: about as long as json.loads).

Every string a caller chose that an error echoes goes through :func:`shorten` first: a
4 MB model name costs a 400 of a few hundred bytes, never 4 MB in a reply or a log.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from oswitch.core.clip import ECHO_CHARS, shorten
from oswitch.core.inbound import ORIGINAL_KEY, OriginalRequest

# Limits (docs/limits.md lists them; each is a fixed constant).
MAX_DEPTH = 64  # containers nested in the request, the request object counting as 1
MAX_MODEL_CHARS = 256
MAX_REQUEST_ID_CHARS = 128
MAX_TAG_CHARS = 256  # one routing tag in the request's "oswitch" object
MAX_TAGS = 64
MAX_INT_DIGITS = 300  # larger integers: no provider takes them, and str() of them is slow
MAX_TOKENS = 2**31 - 1  # max_tokens / max_completion_tokens (a 32-bit count)
MAX_N = 128  # choices per request (OpenAI's own ceiling)
MAX_PROBLEMS = 8  # problems listed in one error; the rest are counted

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_PRINTABLE_ID = re.compile(r"[\x21-\x7e]+")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# 2**996 < 10**300 < 2**997: below this bit length an integer surely has <= 300 digits.
_SURELY_SHORT_INT_BITS = 996
_SURELY_SHORT_INT = 2**_SURELY_SHORT_INT_BITS
_isfinite = math.isfinite

Problem = tuple[str, str]
_Fault = tuple[list[object], str] | None


def shown(value: object) -> str:
    """A caller's value as an error may echo it: strings clipped and quoted, other
    values by type (a huge list is never rendered)."""
    if isinstance(value, str):
        return repr(shorten(value))
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int | float) and len(repr_safe := _short_number(value)) <= ECHO_CHARS:
        return repr_safe
    return type(value).__name__


def _short_number(value: int | float) -> str:
    if isinstance(value, int) and value.bit_length() > _SURELY_SHORT_INT_BITS:
        return "int"
    return repr(value)


def describe(problems: list[Problem]) -> str:
    """One message for a refused request: ``reason @ path; …`` (at most MAX_PROBLEMS)."""
    listed = "; ".join(f"{reason} @ {path}" for path, reason in problems[:MAX_PROBLEMS])
    more = len(problems) - MAX_PROBLEMS
    if more > 0:
        listed += f"; and {more} more"
    return f"not a chat completion request: {listed}"


def request_id_problem(request_id: object) -> str | None:
    """Why ``request_id`` (given by an embedded caller) is not acceptable, or None.

    Ids are kept in traces and written to logs, so they are short and plain:
    1 to 128 printable ASCII characters, no spaces.
    """
    if isinstance(request_id, str) and (
        len(request_id) <= MAX_REQUEST_ID_CHARS and _PRINTABLE_ID.fullmatch(request_id)
    ):
        return None
    return (
        f"request_id must be 1 to {MAX_REQUEST_ID_CHARS} printable ASCII characters "
        f"without spaces (got {shown(request_id)})"
    )


def chat_request_problems(request: object) -> list[Problem]:
    """What makes ``request`` not a chat-completions request oswitch can send, as
    ``(path, reason)`` pairs; empty when it is one.

    Checks the fields oswitch or its adapters read (model, messages, stream,
    stream_options, max_tokens, n, tools, stop, the ``oswitch`` options, …) and that
    every value is one JSON can carry: no NaN or infinity, no lone surrogate, string
    keys only, no bytes/sets/objects, integers of at most 300 digits, nesting at most
    64 deep. Tuples pass (they are sent as arrays). Ranges a provider judges
    (``temperature`` 7) are left to the provider.
    """
    if type(request) is not dict and not isinstance(request, Mapping):
        return [("$", f"must be a JSON object (got {type(request).__name__})")]
    problems = _shape_problems(request)
    if ORIGINAL_KEY in request:
        # Set by the sidecar for a request that arrived in another shape; a Python
        # object, so no JSON body can carry one (the original was checked on arrival).
        if not isinstance(request[ORIGINAL_KEY], OriginalRequest):
            problems.append((f"$.{ORIGINAL_KEY}", "reserved for oswitch's own use"))
        request = {k: v for k, v in request.items() if k != ORIGINAL_KEY}
    unencodable = _first_unencodable(request)
    if unencodable is not None:
        problems.append(unencodable)
    return problems


class CheckedChatRequest(dict[str, Any]):
    """A chat request :func:`check_chat_request` found no fault in, so the engine does
    not walk it again (the sidecar checks every body before handing it on, and the
    check is ~10-20 us of a typical request). Made only by that function; changing it
    afterwards voids what its type says."""

    __slots__ = ()


def check_chat_request(request: object) -> tuple[CheckedChatRequest | None, list[Problem]]:
    """:func:`chat_request_problems`, and when there are none the request marked as
    checked (a shallow copy: its values are shared, not copied)."""
    problems = chat_request_problems(request)
    if problems:
        return None, problems
    assert isinstance(request, Mapping)
    return CheckedChatRequest(request), problems


# ---- shape -----------------------------------------------------------------------
#
# A check takes a field's value and returns None, or (suffix, reason) where suffix
# extends the field's path ("" for the field itself, "[3]" for an item of it). Only
# the fields a request carries are looked up, so a small request costs little.

Found = tuple[str, str] | None
Check = Callable[[Any], Found]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _all_strings(value: object) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(item, str) for item in value)


def _rule(test: Callable[[Any], bool], reason: str, *, nullable: bool = True) -> Check:
    def check(value: Any) -> Found:
        if (value is None and nullable) or test(value):
            return None
        return ("", reason)

    return check


def _objects(value: Any) -> Found:
    if not isinstance(value, list):
        return ("", "must be an array of objects")
    for index, item in enumerate(value):
        if not isinstance(item, Mapping):
            return (f"[{index}]", "must be an object")
    return None


def _stream_options(value: Any) -> Found:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        return ("", "must be an object or null")
    if "include_usage" in value and not isinstance(value["include_usage"], bool):
        return (".include_usage", "must be true or false")
    return None


def _routing_options(value: Any) -> Found:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        return ("", "must be an object")
    for name in ("require_tags", "avoid_tags"):
        tags = value.get(name)
        if tags is None:
            continue
        listed = (tags,) if isinstance(tags, str) else tags
        if not _all_strings(listed):
            return (f".{name}", "must be a string or an array of strings")
        if len(listed) > MAX_TAGS:
            return (f".{name}", f"at most {MAX_TAGS} tags")
        if any(len(tag) > MAX_TAG_CHARS for tag in listed):
            return (f".{name}", f"a tag longer than {MAX_TAG_CHARS} characters")
    return None


def _content(value: Any) -> Found:
    if value is None or isinstance(value, str):
        return None
    if not isinstance(value, list):
        return ("", "must be a string, an array or null")
    for index, part in enumerate(value):
        if not isinstance(part, Mapping):
            return (f"[{index}]", "must be an object")
    return None


def _tool_calls(value: Any) -> Found:
    found = _objects(value)
    if found is not None or value is None:
        return found
    for index, call in enumerate(value):
        function = call.get("function")
        if function is not None and not isinstance(function, Mapping):
            return (f"[{index}].function", "must be an object")
    return None


_TOKENS = f"must be an integer from 1 to {MAX_TOKENS}"
_NUMBER = "must be a number or null"
_OBJECT = "must be an object or null"

_REQUEST_FIELDS: Mapping[str, Check] = {
    "stream": _rule(lambda v: isinstance(v, bool), "must be true or false", nullable=False),
    "stream_options": _stream_options,
    "max_tokens": _rule(lambda v: _is_int(v) and 1 <= v <= MAX_TOKENS, _TOKENS),
    "max_completion_tokens": _rule(lambda v: _is_int(v) and 1 <= v <= MAX_TOKENS, _TOKENS),
    "n": _rule(lambda v: _is_int(v) and 1 <= v <= MAX_N, f"must be an integer from 1 to {MAX_N}"),
    "temperature": _rule(_is_number, _NUMBER),
    "top_p": _rule(_is_number, _NUMBER),
    "presence_penalty": _rule(_is_number, _NUMBER),
    "frequency_penalty": _rule(_is_number, _NUMBER),
    "seed": _rule(_is_int, "must be an integer or null"),
    "stop": _rule(
        lambda v: isinstance(v, str) or _all_strings(v),
        "must be a string, an array of strings or null",
    ),
    "tools": _objects,
    "functions": _objects,
    "tool_choice": _rule(lambda v: isinstance(v, str | Mapping), "must be a string or an object"),
    "response_format": _rule(lambda v: isinstance(v, Mapping), _OBJECT),
    "metadata": _rule(lambda v: isinstance(v, Mapping), _OBJECT),
    "logit_bias": _rule(lambda v: isinstance(v, Mapping), _OBJECT),
    "user": _rule(lambda v: isinstance(v, str), "must be a string"),
    "oswitch": _routing_options,
}

_MESSAGE_FIELDS: Mapping[str, Check] = {
    "content": _content,
    "name": _rule(lambda v: isinstance(v, str), "must be a string"),
    "tool_call_id": _rule(lambda v: isinstance(v, str), "must be a string"),
    "tool_calls": _tool_calls,
}


def _shape_problems(body: Mapping[Any, Any]) -> list[Problem]:
    problems: list[Problem] = []
    model = body.get("model")
    if not isinstance(model, str) or not model:
        problems.append(("$.model", "required: a non-empty string"))
    elif len(model) > MAX_MODEL_CHARS:
        problems.append(
            ("$.model", f"model name longer than {MAX_MODEL_CHARS} characters ({shown(model)})")
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        problems.append(("$.messages", "required: a non-empty array of messages"))
    else:
        for index, message in enumerate(messages):
            _message_problems(message, index, problems)
            if len(problems) > MAX_PROBLEMS:
                break
    for key in body:
        check = _REQUEST_FIELDS.get(key)
        if check is not None and (found := check(body[key])) is not None:
            problems.append((f"$.{key}{found[0]}", found[1]))
    n = body.get("n")
    if body.get("stream") is True and _is_int(n) and n != 1:
        problems.append(("$.n", "streaming supports n = 1 only"))
    return problems


def _message_problems(message: object, index: int, problems: list[Problem]) -> None:
    if type(message) is not dict and not isinstance(message, Mapping):
        problems.append((f"$.messages[{index}]", "must be an object"))
        return
    role = message.get("role")
    if not (isinstance(role, str) and role in ROLES):  # an unhashable role must not raise
        problems.append(
            (f"$.messages[{index}].role", f"must be one of {sorted(ROLES)} (got {shown(role)})")
        )
    for key in message:
        check = _MESSAGE_FIELDS.get(key)
        if check is not None and (found := check(message[key])) is not None:
            problems.append((f"$.messages[{index}].{key}{found[0]}", found[1]))


# ---- encodability ----------------------------------------------------------------


def _first_unencodable(root: Mapping[Any, Any]) -> Problem | None:
    """The first value in ``root`` that JSON cannot carry, with its path."""
    found = _walk(root, 1)
    if found is None:
        return None
    keys, reason = found
    return (_path(keys[::-1]), reason)


def _walk(container: Mapping[Any, Any] | list[Any] | tuple[Any, ...], depth: int) -> _Fault:
    """None, or the keys to the first fault (innermost first) and its reason.

    Recursive, but only into containers and never past MAX_DEPTH, so at most 64
    frames. The loop is the hot path: plain str/int/float/None/bool values take
    its first branches and cost a few operations each; a problem's path is only
    assembled on the way out.
    """
    # type() first: an ABC check costs as much as the rest of a small container's walk.
    container_type = type(container)
    is_mapping = container_type is dict or (
        container_type is not list and isinstance(container, Mapping)
    )
    pairs = container.items() if is_mapping else enumerate(container)  # type: ignore[union-attr]
    for key, item in pairs:
        if is_mapping and (type(key) is not str or not key.isascii()):
            reason = _key_problem(key)
            if reason is not None:
                return ([], reason)
        kind = type(item)
        if kind is str:
            if item.isascii() or not _has_surrogate(item):
                continue
            return ([key], "contains a lone surrogate (not valid UTF-8)")
        if kind is int:
            if -_SURELY_SHORT_INT < item < _SURELY_SHORT_INT:
                continue
        elif kind is float:
            if _isfinite(item):
                continue
        elif item is None or kind is bool:
            continue
        elif kind is dict or kind is list or isinstance(item, dict | list | tuple):
            # Subclasses too: json encodes them as their base type.
            if depth >= MAX_DEPTH:
                return ([key], f"nested deeper than {MAX_DEPTH} levels")
            if not item:
                continue
            found = _walk(item, depth + 1)
            if found is not None:
                found[0].append(key)
                return found
            continue
        reason = _other_problem(item)
        if reason is not None:
            return ([key], reason)
    return None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _key_problem(key: object) -> str | None:
    if not isinstance(key, str):
        return f"object keys must be strings (got a {type(key).__name__} key)"
    if not key.isascii() and _has_surrogate(key):
        return f"key {shown(key)} contains a lone surrogate (not valid UTF-8)"
    return None


def _number_problem(value: int | float) -> str | None:
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return f"must be a finite number; NaN and Infinity are not JSON (got {value!r})"
    if value.bit_length() > _SURELY_SHORT_INT_BITS and abs(value) >= 10**MAX_INT_DIGITS:
        return f"integer with more than {MAX_INT_DIGITS} digits"
    return None


def _other_problem(value: object) -> str | None:
    """Why a value that is neither a plain JSON scalar nor a container cannot be sent.

    Subclasses of str, int and float (an IntEnum, a str subclass) are encoded as
    their base type and only fail as their base would; anything else fails.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _number_problem(value)
    if isinstance(value, str):
        return "contains a lone surrogate (not valid UTF-8)" if _has_surrogate(value) else None
    return f"not a JSON value (got {type(value).__name__})"


def _path(keys: list[object]) -> str:
    parts = ["$"]
    for key in keys:
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif isinstance(key, str) and len(key) <= ECHO_CHARS and _PLAIN_KEY.fullmatch(key):
            parts.append(f".{key}")
        else:
            parts.append(f"[{shown(key)}]")
    return "".join(parts)
