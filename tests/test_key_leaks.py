"""No part of a configured key leaves oswitch: provider messages are scrubbed before
they are cut, and a key's beginning left at a cut edge is redacted too."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest
import trio

from oswitch import ErrorClass, RequestFailed
from oswitch.core.secret import MIN_SECRET_CHARS, Secret, scrub, scrub_and_cut
from oswitch.runtime.switcher import open_switcher
from oswitch.testing import Behaviour, FakeProvider, stream
from support import chat, config, target

# No character of the key is in the filler ("m", " "), in "***" or "…".
KEY = "SK-LIV-0123456789ABCDFGHIJKLMNOPQSTUVWXYZ"
SECRETS = [Secret(KEY)]


def key_left_in(text: str) -> str:
    """Whatever characters of KEY are in ``text`` (a provider message)."""
    return "".join(sorted(set(text) & set(KEY)))


def key_pieces_in(text: str) -> list[str]:
    """The 6-character pieces of KEY found in ``text`` (a whole trace, whose ids and
    names share characters with the key)."""
    return [KEY[i : i + 6] for i in range(len(KEY) - 5) if KEY[i : i + 6] in text]


@pytest.mark.parametrize("offset", range(len(KEY) + 1))
def test_scrub_and_cut_leaves_nothing_of_a_straddling_key(offset: int) -> None:
    """Cutting to 100 characters with the key straddling the cut at any offset leaves
    no character of it: the whole key is scrubbed before the cut."""
    text = "m" * (99 - offset) + KEY + " m" * 80
    cut = scrub_and_cut(text, SECRETS, limit=100)
    assert len(cut) <= 100
    assert cut.endswith("…")
    assert key_left_in(cut) == ""


def test_text_made_short_by_scrubbing_is_not_marked_cut() -> None:
    """Text over the limit only because of the keys in it comes back whole once they
    are replaced; text longer still is cut, with the mark, within the limit."""
    assert scrub_and_cut("m" * 90 + KEY, SECRETS, limit=100) == "m" * 90 + "***"
    assert scrub_and_cut("m" * 1000 + KEY, SECRETS, limit=100) == "m" * 99 + "…"
    # Only limit + (longest key) characters are scrubbed: a key cut there is redacted.
    assert scrub_and_cut(KEY * 50, SECRETS, limit=100) == "***" * 4 + "…"


@pytest.mark.parametrize("shown", range(MIN_SECRET_CHARS, len(KEY)))
@pytest.mark.parametrize("mark", ["", "…"])
def test_a_key_beginning_at_a_cut_edge_is_redacted(shown: int, mark: str) -> None:
    """Text cut elsewhere (before oswitch saw it) that ends inside a key, at least
    MIN_SECRET_CHARS of it showing, has that beginning redacted, before a final
    "…" too."""
    assert scrub("m m " + KEY[:shown] + mark, SECRETS) == "m m ***" + mark


def test_a_short_fragment_or_the_key_elsewhere_is_left_alone() -> None:
    """Fewer than MIN_SECRET_CHARS at the edge, or a key's beginning in mid-text, is
    not taken for a cut key; short configured values are never scrubbed."""
    assert scrub("m " + KEY[: MIN_SECRET_CHARS - 1], SECRETS) == "m " + KEY[: MIN_SECRET_CHARS - 1]
    assert scrub(KEY[:8] + " m", SECRETS) == KEY[:8] + " m"
    assert scrub("abc and ab", [Secret("abc")]) == "abc and ab"


def test_every_key_and_every_cut_beginning_is_scrubbed() -> None:
    """With several keys, each whole occurrence is scrubbed and the edge is checked
    against each."""
    other = "QK-9876543210ZYXWVUTSQPONMLKJIHGFDCBA"
    secrets = [Secret(KEY), Secret(other)]
    text = f"{KEY} m {other} m {other[:10]}"
    assert scrub(text, secrets) == "*** m *** m ***"


def error_echoing_the_key() -> Behaviour:
    """A 400 whose message echoes the key so that it straddles the 1000-character cut
    at the offset given by the request's text."""

    async def respond(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        offset = int(body["messages"][0]["content"])
        message = "m" * (999 - offset) + KEY + " m" * 600
        error = {"message": message, "type": "invalid_request_error", "code": None}
        return httpx.Response(400, json={"error": error})

    return Behaviour(name="echo", respond=respond)


async def test_a_provider_echoing_the_key_across_the_cut_reaches_no_caller(
    autojump_clock: object,
) -> None:
    """Whatever the offset of the key at the 1000-character cut, the caller's
    RequestFailed and the request's trace carry no character of it."""
    fake = FakeProvider().on(KEY, error_echoing_the_key())
    async with open_switcher(config(target("a", key=KEY)), transport=fake.transport()) as s:
        for offset in range(len(KEY) + 1):
            with pytest.raises(RequestFailed) as caught:
                await s.complete(chat(text=str(offset)))
            assert caught.value.error_class is ErrorClass.INVALID_REQUEST
            assert len(caught.value.message) == 1000
            assert key_left_in(caught.value.message) == ""
            assert key_pieces_in(str(caught.value)) == []
            trace = s.inspect_request(caught.value.request_id or "")
            assert key_pieces_in(repr(trace)) == []


def error_event_after_content() -> Behaviour:
    """An Anthropic-style stream that sends some text, then an error event whose
    message echoes the key."""

    async def body() -> AsyncIterator[bytes]:
        delta = {"role": "assistant", "content": "Alpha "}
        chunk = {"id": "c", "model": "m", "choices": [{"index": 0, "delta": delta}]}
        yield f"data: {json.dumps(chunk)}\n\n".encode()
        await trio.sleep(0.1)
        error = {"type": "error", "error": {"type": "overloaded_error", "message": f"m {KEY}"}}
        yield f"event: error\ndata: {json.dumps(error)}\n\n".encode()

    async def respond(request: httpx.Request, _: Any) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    return Behaviour(name="error after content", respond=respond)


async def test_an_error_event_mid_stream_is_scrubbed_in_the_trace(autojump_clock: object) -> None:
    """A stream's error event echoing the key after content began is resumed, and the
    trace's note of the interruption carries no character of the key."""
    fake = FakeProvider().on(KEY, error_event_after_content()).on("key-b", stream("Alpha bravo."))
    cfg = config(target("a", key=KEY, operator_priority=1), target("b"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        async with switcher.stream(chat()) as chunks:
            text = "".join([c["choices"][0]["delta"].get("content") or "" async for c in chunks])
        trace = switcher.inspect_request(chunks.request_id)
    assert text == "Alpha bravo."
    assert trace.attempts[0].error_class is ErrorClass.INTERRUPTED_EXECUTION
    assert trace.attempts[0].note == "ModelUnavailable: m ***"
    assert key_pieces_in(repr(trace)) == []
