"""The one chat-request check the sidecar and the engine share (a pure core)."""

from __future__ import annotations

import enum
import json
import math
import types
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oswitch.core.chat_request import (
    MAX_DEPTH,
    MAX_PROBLEMS,
    chat_request_problems,
    describe,
    request_id_problem,
)
from oswitch.core.clip import shorten
from oswitch.runtime.http import encode_json


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}


def nested(depth: int) -> dict[str, Any]:
    """``{"model", "messages", "x": [[…]]}`` whose deepest list sits ``depth`` containers
    down (the request object itself is level 1)."""
    value: list[Any] = []
    for _ in range(depth - 2):
        value = [value]
    return chat(x=value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused_at_their_path(value: float) -> None:
    """NaN, Infinity and -Infinity are not JSON: refused, naming the field."""
    assert chat_request_problems(chat(temperature=value)) == [
        (
            "$.temperature",
            f"must be a finite number; NaN and Infinity are not JSON (got {value!r})",
        )
    ]


@pytest.mark.parametrize(
    ("request_body", "path"),
    [
        (chat(messages=[{"role": "user", "content": "a\ud800b"}]), "$.messages[0].content"),
        (chat(user="\udfff"), "$.user"),
        (
            chat(
                messages=[
                    {
                        "role": "assistant",
                        "tool_calls": [{"function": {"name": "f", "arguments": "{\ud83d}"}}],
                    }
                ]
            ),
            "$.messages[0].tool_calls[0].function.arguments",
        ),
    ],
    ids=["content", "field", "tool-arguments"],
)
def test_lone_surrogates_in_values_are_refused(request_body: dict[str, Any], path: str) -> None:
    """A lone surrogate cannot be encoded as UTF-8: refused wherever it is."""
    assert chat_request_problems(request_body) == [
        (path, "contains a lone surrogate (not valid UTF-8)")
    ]


def test_lone_surrogate_in_a_key_is_refused() -> None:
    """A key holding a lone surrogate is refused at the object that holds it."""
    problems = chat_request_problems(chat(metadata={"\ud800": 1}))
    assert problems == [("$.metadata", "key '\\ud800' contains a lone surrogate (not valid UTF-8)")]


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"bytes", "not a JSON value (got bytes)"),
        ({1, 2}, "not a JSON value (got set)"),
        (Opaque(), "not a JSON value (got Opaque)"),
        (types.MappingProxyType({"a": 1}), "not a JSON value (got mappingproxy)"),
        ({1: "one"}, "object keys must be strings (got a int key)"),
        (10**300, "integer with more than 300 digits"),
    ],
    ids=["bytes", "set", "object", "mapping-proxy", "int-key", "huge-int"],
)
def test_values_json_cannot_carry_are_refused(value: object, reason: str) -> None:
    """Embedded callers' bytes, sets, objects, non-string keys and giant integers are refused."""
    assert chat_request_problems(chat(metadata={"x": value})) == [("$.metadata.x", reason)]


class Colour(enum.IntEnum):
    RED = 1


class Name(str):
    pass


def test_tuples_and_subclasses_of_json_types_pass() -> None:
    """Tuples are sent as arrays, and subclasses of str/int/float/dict/list as their base."""
    request = chat(
        metadata={"tuple": (1, 2.5, "x"), "enum": Colour.RED, "name": Name("n")},
        response_format={"type": "json_object"},
        seed=10**299,
    )
    assert chat_request_problems(request) == []
    encode_json(request)


def test_nesting_is_bounded_at_64_levels() -> None:
    """64 levels of containers pass; the 65th is refused at its path."""
    assert chat_request_problems(nested(MAX_DEPTH)) == []
    ((path, reason),) = chat_request_problems(nested(MAX_DEPTH + 1))
    assert reason == "nested deeper than 64 levels"
    assert path == "$.x" + "[0]" * (MAX_DEPTH - 1)


def test_very_deep_nesting_never_recurses() -> None:
    """A request nested 200,000 deep is refused, not a RecursionError."""
    value: list[Any] = []
    for _ in range(200_000):
        value = [value]
    ((_, reason),) = chat_request_problems(chat(x=value))
    assert reason == "nested deeper than 64 levels"


@pytest.mark.parametrize(
    ("fields", "path", "reason"),
    [
        ({"stream_options": "yes"}, "$.stream_options", "must be an object or null"),
        (
            {"stream_options": {"include_usage": 1}},
            "$.stream_options.include_usage",
            "must be true or false",
        ),
        ({"tools": {"type": "function"}}, "$.tools", "must be an array of objects"),
        ({"tools": ["f"]}, "$.tools[0]", "must be an object"),
        ({"n": True}, "$.n", "must be an integer from 1 to 128"),
        ({"n": 0}, "$.n", "must be an integer from 1 to 128"),
        ({"n": 2, "stream": True}, "$.n", "streaming supports n = 1 only"),
        ({"max_tokens": 2**31}, "$.max_tokens", "must be an integer from 1 to 2147483647"),
        ({"max_tokens": 5.0}, "$.max_tokens", "must be an integer from 1 to 2147483647"),
        (
            {"max_completion_tokens": 0},
            "$.max_completion_tokens",
            "must be an integer from 1 to 2147483647",
        ),
        ({"stop": 5}, "$.stop", "must be a string, an array of strings or null"),
        ({"stop": ["a", 1]}, "$.stop", "must be a string, an array of strings or null"),
        ({"temperature": "hot"}, "$.temperature", "must be a number or null"),
        ({"seed": 1.5}, "$.seed", "must be an integer or null"),
        ({"tool_choice": 3}, "$.tool_choice", "must be a string or an object"),
        ({"response_format": "json"}, "$.response_format", "must be an object or null"),
        ({"user": 7}, "$.user", "must be a string"),
        ({"messages": ["hi"]}, "$.messages[0]", "must be an object"),
        (
            {"messages": [{"role": ["user"]}]},
            "$.messages[0].role",
            "must be one of ['assistant', 'developer', 'function', 'system', 'tool', 'user']"
            " (got list)",
        ),
        (
            {"messages": [{"role": "user", "content": ["text"]}]},
            "$.messages[0].content[0]",
            "must be an object",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": {"id": "x"}}]},
            "$.messages[0].tool_calls",
            "must be an array of objects",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"function": "f"}]}]},
            "$.messages[0].tool_calls[0].function",
            "must be an object",
        ),
        ({"oswitch": []}, "$.oswitch", "must be an object"),
        (
            {"oswitch": {"avoid_tags": [1]}},
            "$.oswitch.avoid_tags",
            "must be a string or an array of strings",
        ),
        (
            {"oswitch": {"require_tags": ["t"] * 65}},
            "$.oswitch.require_tags",
            "at most 64 tags",
        ),
        (
            {"oswitch": {"require_tags": "t" * 257}},
            "$.oswitch.require_tags",
            "a tag longer than 256 characters",
        ),
    ],
)
def test_shapes_the_handlers_read_are_checked(
    fields: dict[str, Any], path: str, reason: str
) -> None:
    """Each field oswitch or an adapter reads must have the shape it reads it as."""
    assert chat_request_problems(chat(**fields)) == [(path, reason)]


def test_provider_ranges_are_left_to_the_provider() -> None:
    """Values of the right type but out of a provider's range (temperature 7) pass."""
    assert chat_request_problems(chat(temperature=7, top_p=-1, n=128, stop=["a"] * 9)) == []


def test_a_huge_model_name_is_refused_with_a_clipped_echo() -> None:
    """A 4 MB model name is refused in a message of under 200 characters."""
    ((path, reason),) = chat_request_problems(chat(model="m" * 4_000_000))
    assert path == "$.model"
    assert reason.startswith("model name longer than 256 characters ('mmm")
    assert reason.endswith("… (4000000 characters)')")
    assert len(describe([(path, reason)])) < 200
    assert chat_request_problems(chat(model="m" * 256)) == []


def test_one_error_lists_at_most_eight_problems() -> None:
    """10,000 bad messages give one short message: eight problems and a count of the rest."""
    problems = chat_request_problems(chat(messages=[{"role": "x" * 10_000}] * 10_000))
    message = describe(problems)
    assert message.count(" @ $.messages[") == MAX_PROBLEMS
    assert message.endswith(f"; and {len(problems) - MAX_PROBLEMS} more")
    assert len(message) < 2_000


def test_not_an_object() -> None:
    """A request that is not an object says so, and nothing else."""
    assert chat_request_problems(["a"]) == [("$", "must be a JSON object (got list)")]


def test_keys_are_clipped_in_paths() -> None:
    """A path never carries more than a clipped form of a caller's key."""
    ((path, _),) = chat_request_problems(chat(metadata={"k" * 100_000: math.nan}))
    assert path == f"$.metadata[{'k' * 64 + '… (100000 characters)'!r}]"


def test_shorten() -> None:
    """shorten keeps short text and cuts long text to its limit, saying how long it was."""
    assert shorten("short") == "short"
    assert shorten("x" * 65) == "x" * 64 + "… (65 characters)"
    assert shorten("abcdef", 3) == "abc… (6 characters)"


@pytest.mark.parametrize("request_id", ["req_1", "a" * 128, "trace-id/42:x"])
def test_plain_request_ids_pass(request_id: str) -> None:
    """Request ids of 1-128 printable ASCII characters are accepted."""
    assert request_id_problem(request_id) is None


@pytest.mark.parametrize(
    "request_id", ["", "a" * 129, "has space", "new\nline", "é", 42, "x" * 4_000_000]
)
def test_other_request_ids_are_refused_with_a_clipped_echo(request_id: object) -> None:
    """Empty, long, spaced, control-character, non-ASCII or non-string ids are refused,
    echoing at most a clipped form."""
    problem = request_id_problem(request_id)
    assert problem is not None
    assert problem.startswith("request_id must be 1 to 128 printable ASCII characters")
    assert len(problem) < 200


# Any value an embedded caller might put in a request, JSON-able or not.
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(blacklist_categories=()), max_size=8)
    | st.binary(max_size=4)
    | st.frozensets(st.integers(), max_size=2)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(st.characters(blacklist_categories=()), max_size=4), inner)
    ),
    max_leaves=20,
)


@given(_VALUES)
def test_the_check_passes_exactly_what_oswitch_can_encode(value: object) -> None:
    """For any value, the request passes the check exactly when it can be sent as
    strict JSON (the stdlib with ``allow_nan=False``, as UTF-8): nothing unsendable gets
    through, nothing sendable is refused; and what passes, oswitch's own (orjson)
    encoder sends as exactly that JSON value."""
    request = chat(metadata={"value": value})
    try:
        strict = json.dumps(request, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, TypeError):
        strict = None
    assert (chat_request_problems(request) == []) == (strict is not None)
    if strict is not None:
        assert json.loads(encode_json(request)) == json.loads(strict)
