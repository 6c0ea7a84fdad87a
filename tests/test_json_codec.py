"""oswitch's JSON codec (orjson, the stdlib where they disagree) reads and writes what
the stdlib does: the same values, the same refusals."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oswitch.core import json_codec
from oswitch.core.json_codec import decode, encode

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"])), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_decode_reads_what_the_stdlib_reads(value: Any) -> None:
    """Any JSON document decodes to the stdlib's value, integers past 64 bits included
    (orjson alone would read them as floats)."""
    text = json.dumps(value)
    assert _same(decode(text), json.loads(text))
    assert _same(decode(text.encode()), json.loads(text))


@given(json_values)
def test_encode_writes_the_stdlibs_compact_value(value: Any) -> None:
    """Encoded bytes decode to the value the stdlib's compact form holds."""
    stdlib = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert _same(json.loads(encode(value)), json.loads(stdlib))


@pytest.mark.parametrize(
    "document",
    [
        '{"t": NaN}',
        '{"t": -Infinity}',
        '{"t": 1e999}',
        '{"s": "\\ud800"}',
        '{"n": 123456789012345678901234567890}',
        '{"n": -9223372036854775809}',
    ],
    ids=["nan", "infinity", "overflow", "surrogate", "big-int", "below-int64"],
)
def test_what_orjson_refuses_or_misreads_the_stdlib_reads(document: str) -> None:
    """NaN, Infinity, 1e999, an escaped lone surrogate and integers past 64 bits are
    read as the stdlib reads them (for the request check to refuse by path), not
    refused as malformed JSON nor turned into floats."""
    assert _same(decode(document), json.loads(document))


@pytest.mark.parametrize("document", ['{"a": ', "[1,]", "nul", '{"a" 1}', ""])
def test_invalid_json_raises_the_stdlibs_error(document: str) -> None:
    """What is not JSON raises the stdlib's own ValueError, message and all."""
    with pytest.raises(ValueError) as ours:
        decode(document)
    with pytest.raises(ValueError) as stdlib:
        json.loads(document)
    assert str(ours.value) == str(stdlib.value)


def test_nesting_too_deep_for_the_stdlib_is_a_recursion_error() -> None:
    """A document nested past the interpreter's limit raises RecursionError, as before."""
    with pytest.raises(RecursionError):
        decode("[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize(
    "value",
    [{"s": "\ud800"}, {1: "int key"}, {"n": 2**70}, {"b": b"bytes"}, {"s": {1, 2}}],
    ids=["surrogate", "int-key", "big-int", "bytes", "set"],
)
def test_encode_refuses_or_writes_as_the_stdlib_does(value: Any) -> None:
    """What orjson refuses to encode, the stdlib encodes or refuses with its own error."""
    try:
        expected = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        with pytest.raises(type(exc)):
            encode(value)
    else:
        assert encode(value) == expected


def test_the_fast_path_is_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    """A chat-sized document is decoded and encoded by orjson, not the stdlib."""

    def stdlib_used(*args: object, **kwargs: object) -> None:
        raise AssertionError("the stdlib was used")

    monkeypatch.setattr(json_codec.json, "loads", stdlib_used)
    monkeypatch.setattr(json_codec.json, "dumps", stdlib_used)
    chunk = {
        "id": "c",
        "choices": [{"index": 0, "delta": {"content": "hé"}, "finish_reason": None}],
    }
    assert decode(encode(chunk)) == chunk


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 is not 1.0 here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)
