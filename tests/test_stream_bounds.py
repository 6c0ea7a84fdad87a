"""An upstream cannot make a stream hold unbounded memory: past the SSE parser's bounds
the attempt fails as a malformed stream, failed over before content, resumed after."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from oswitch import ErrorClass
from oswitch.providers.sse import MAX_EVENT_BYTES, MAX_LINE_BYTES
from oswitch.runtime.switcher import open_switcher
from oswitch.testing import Behaviour, FakeProvider, stream
from support import chat, config, target

ANSWER = "Alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike."
PIECE = 64 * 1024
# The fake gives up after this much (4x the bounds), so old code fails instead of hanging.
GIVE_UP_AFTER = 16 * 1024 * 1024


class Endless:
    """A 200 event stream that, after ``content`` OpenAI chunks, sends ``filler``
    again and again: ``data:`` lines that never end their event, or one line that
    never ends. Counts the bytes it sent."""

    def __init__(self, filler: bytes, *, content: int) -> None:
        self.filler = filler
        self.content = content
        self.sent = 0

    def behaviour(self) -> Behaviour:
        async def body() -> AsyncIterator[bytes]:
            for word in ANSWER.split(" ")[: self.content]:
                delta = {"role": "assistant", "content": word + " "}
                payload = {"id": "c", "model": "m", "choices": [{"index": 0, "delta": delta}]}
                yield f"data: {json.dumps(payload)}\n\n".encode()
            yield self.filler[:6]  # "data: " for the endless line
            while self.sent < GIVE_UP_AFTER:
                await trio.lowlevel.checkpoint()
                self.sent += len(self.filler)
                yield self.filler

        async def respond(request: httpx.Request, _: Any) -> httpx.Response:
            return httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content=body()
            )

        return Behaviour(name="endless", respond=respond)


FILLERS = {
    # One event whose data lines never meet the blank line that would end it.
    "endless-event": (b"data: " + b"x" * (PIECE - 7) + b"\n", MAX_EVENT_BYTES, "event data"),
    # One line with no newline at all.
    "endless-line": (b"data: " + b"y" * (PIECE - 6), MAX_LINE_BYTES, "line"),
}


async def collect(switcher: Any) -> tuple[str, str]:
    async with switcher.stream(chat()) as chunks:
        received = [chunk async for chunk in chunks]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in received)
    return text, chunks.request_id


@pytest.mark.parametrize("kind", list(FILLERS))
async def test_endless_data_before_content_fails_over(autojump_clock: object, kind: str) -> None:
    """An upstream streaming an event or line that never ends, before any content, is
    refused at the bound as a malformed stream (TransientServerFailure) and the request
    fails over; it is read no further than the bound."""
    filler, bound, _ = FILLERS[kind]
    endless = Endless(filler, content=0)
    fake = FakeProvider().on("key-a", endless.behaviour()).on("key-b", stream(ANSWER))
    cfg = config(target("a", operator_priority=1), target("b"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        with trio.fail_after(60):
            text, request_id = await collect(switcher)
        trace = switcher.inspect_request(request_id)
    assert text == ANSWER
    first, second = trace.attempts
    assert (first.target_id, first.error_class) == ("a", ErrorClass.TRANSIENT_SERVER_FAILURE)
    assert (second.target_id, second.error_class) == ("b", None)
    assert bound - PIECE < endless.sent <= bound + 2 * PIECE


@pytest.mark.parametrize("kind", list(FILLERS))
async def test_endless_data_after_content_is_resumed(autojump_clock: object, kind: str) -> None:
    """The same after content began is an InterruptedExecution, resumed on the next
    target from the text the caller already has."""
    filler, bound, what = FILLERS[kind]
    endless = Endless(filler, content=3)
    fake = FakeProvider().on("key-a", endless.behaviour()).on("key-b", stream(ANSWER))
    cfg = config(target("a", operator_priority=1), target("b"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        with trio.fail_after(60):
            text, request_id = await collect(switcher)
        trace = switcher.inspect_request(request_id)
    assert text == ANSWER
    first, second = trace.attempts
    assert (first.target_id, first.error_class, first.decision) == (
        "a",
        ErrorClass.INTERRUPTED_EXECUTION,
        "resume",
    )
    assert first.note == f"TransientServerFailure: malformed stream: {what} over {bound} bytes"
    assert (second.target_id, second.offset) == ("b", len("Alpha bravo charlie "))
    assert bound - PIECE < endless.sent <= bound + 2 * PIECE
