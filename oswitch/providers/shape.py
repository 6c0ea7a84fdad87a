"""Reading a provider's JSON by the types its fields must have.

A reply or chunk whose fields have the wrong types (``choices`` not a list, a number
for ``content``, a string for ``usage``) is the provider's fault, and must never be
handed to the caller as if it were an answer. The getters here return a field when
it has its type (or is absent / null) and raise :class:`MalformedReply` naming the
field by path otherwise; the messages name types, never values, so no provider text
travels in them. Only what oswitch or its callers read is checked: this runs on
every chunk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oswitch.core.kinds import kind_of
from oswitch.providers.adapter import MalformedReply


def kind(value: object) -> str:
    """The JSON name of ``value``'s type, for messages: "a number", "an array", …"""
    return kind_of(value, mapping="an object", sequence="an array", integer="a number")


def wrong(at: str, expected: str, value: object) -> MalformedReply:
    """The fault of the field at path ``at`` (``choices[0].delta.content``)."""
    return MalformedReply(f"{at}: not {expected} (got {kind(value)})")


def field(at: str, name: str) -> str:
    """The path of field ``name`` inside the value at ``at`` ("" is the top level)."""
    return f"{at}.{name}" if at else name


def get_str(obj: Mapping[str, Any], name: str, at: str) -> str | None:
    """``obj[name]`` if it is a string, None if absent or null."""
    value = obj.get(name)
    if value is None or isinstance(value, str):
        return value
    raise wrong(field(at, name), "a string", value)


def get_count(obj: Mapping[str, Any], name: str, at: str) -> int | None:
    """``obj[name]`` if it is a whole number >= 0 (a token count, an index)."""
    value = obj.get(name)
    if value is None or (type(value) is int and value >= 0):
        return value
    raise wrong(field(at, name), "a count", value)


def get_object(obj: Mapping[str, Any], name: str, at: str) -> dict[str, Any] | None:
    """``obj[name]`` if it is an object, None if absent or null."""
    value = obj.get(name)
    if value is None or isinstance(value, dict):
        return value
    raise wrong(field(at, name), "an object", value)


def get_list(obj: Mapping[str, Any], name: str, at: str) -> list[Any] | None:
    """``obj[name]`` if it is an array, None if absent or null."""
    value = obj.get(name)
    if value is None or isinstance(value, list):
        return value
    raise wrong(field(at, name), "an array", value)


USAGE_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")


def check_usage(obj: Mapping[str, Any], at: str, counts: tuple[str, ...] = USAGE_COUNTS) -> None:
    """``obj["usage"]``, when given, is an object whose ``counts`` are counts."""
    usage = get_object(obj, "usage", at)
    if usage:
        for name in counts:
            get_count(usage, name, field(at, "usage"))


def check_tool_calls(obj: Mapping[str, Any], at: str, *, streamed: bool) -> None:
    """``obj["tool_calls"]`` (and the legacy ``function_call``), when given, are what
    clients parse: objects whose ``function`` has a string ``name`` (in a stream only
    its first piece has one) and string ``arguments``, and, streamed, a count
    ``index``."""
    calls = get_list(obj, "tool_calls", at)
    for position, call in enumerate(calls or ()):
        where = f"{field(at, 'tool_calls')}[{position}]"
        if not isinstance(call, dict):
            raise wrong(where, "an object", call)
        get_str(call, "id", where)
        get_str(call, "type", where)
        if streamed:
            get_count(call, "index", where)
        function = get_object(call, "function", where)
        if function is None:
            if not streamed:
                raise wrong(f"{where}.function", "an object", None)
            continue
        _check_function(function, f"{where}.function", streamed=streamed)
    legacy = get_object(obj, "function_call", at)
    if legacy is not None:
        _check_function(legacy, field(at, "function_call"), streamed=streamed)


def _check_function(function: Mapping[str, Any], at: str, *, streamed: bool) -> None:
    name = get_str(function, "name", at)
    get_str(function, "arguments", at)
    if name is None and not streamed:
        raise wrong(field(at, "name"), "a string", None)


def check_content(obj: Mapping[str, Any], at: str) -> None:
    """``obj["content"]`` is text, null, or an array of content parts (objects)."""
    content = obj.get("content")
    if content is None or isinstance(content, str):
        return
    if isinstance(content, list):
        for position, part in enumerate(content):
            if not isinstance(part, dict):
                raise wrong(f"{field(at, 'content')}[{position}]", "an object", part)
        return
    raise wrong(field(at, "content"), "a string", content)
