"""Streams against the clock while the caller is away: the request deadline bounds
delivery too, and the end of a stream reaches the caller without waiting on the body."""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

from oswitch import AllTargetsFailed, ErrorClass
from oswitch.runtime.messages import AttemptOrder
from oswitch.runtime.switcher import open_switcher
from oswitch.testing import Behaviour, FakeProvider, stream
from support import chat, config, target

ANSWER = "one two three four five six seven eight nine ten"


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    payload = {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(payload)}\n\n".encode()


class _HeldBody(httpx.AsyncByteStream):
    """A whole answer and ``[DONE]``, after which the body stays open ``hold_s`` seconds
    before it ends; records when it was closed, and whether it was read to its end."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.closed_at: float | None = None
        self.read_to_end = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield _chunk({"role": "assistant", "content": ""})
        for word in ANSWER.split(" "):
            yield _chunk({"content": word + " "})
        yield _chunk({}, "stop") + b"data: [DONE]\n\n"
        await trio.sleep(self.hold_s)
        self.read_to_end = True

    async def aclose(self) -> None:
        self.closed_at = trio.current_time()


def _held_after_done(bodies: list[_HeldBody], hold_s: float) -> Behaviour:
    async def respond(request: httpx.Request, _: Any) -> httpx.Response:
        body = _HeldBody(hold_s)
        bodies.append(body)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=body)

    return Behaviour(name="held after [DONE]", respond=respond)


async def test_a_caller_that_stops_pulling_frees_the_target_at_the_deadline(
    autojump_clock: object,
) -> None:
    """A caller that takes one chunk and then stops pulling holds the target's slot and
    upstream connection no longer than the request deadline; its next pull raises."""
    fake = FakeProvider().on("key-a", stream(ANSWER, chunk_latency=0.5))
    cfg = config(target("a"), request_timeout_ms=10_000)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        async with switcher.stream(chat()) as chunks:
            await chunks.__anext__()
            assert switcher.list_targets()[0].in_flight == 1
            await trio.sleep_until(10.0)
            await trio.testing.wait_all_tasks_blocked()
            assert trio.current_time() == 10.0
            view = switcher.list_targets()[0]
            assert (view.in_flight, view.failures_by_class) == (0, {})
            assert (fake.open_streams, fake.closed_early) == (0, 1)
            await trio.sleep(20.0)  # the caller comes back long after
            with pytest.raises(AllTargetsFailed) as caught:
                await chunks.__anext__()
        trace = switcher.inspect_request(chunks.request_id)
    assert caught.value.deadline_exceeded
    assert caught.value.error_class is ErrorClass.INTERRUPTED_EXECUTION
    assert str(caught.value) == "deadline exceeded while streaming"
    assert trace.outcome == "AllTargetsFailed"
    (segment,) = trace.attempts
    assert (segment.decision, segment.note, segment.duration_s) == (
        "give_up",
        "request deadline",
        10.0,
    )


async def test_a_caller_that_never_comes_back_frees_the_slot_for_others(
    autojump_clock: object,
) -> None:
    """Two callers that stop pulling hold both slots of a target only until their
    deadline; a request waiting for a slot gets one then, and the leavers' requests fail."""
    fake = FakeProvider().on("key-a", stream(ANSWER, chunk_latency=0.1))
    cfg = config(
        attrs.evolve(target("a"), concurrency_limit=2),
        request_timeout_ms=10_000,
        max_wait_ms=60_000,
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        left = trio.Event()
        ids: list[str] = []

        async def stop_pulling() -> None:
            async with switcher.stream(chat()) as chunks:
                ids.append(chunks.request_id)
                await chunks.__anext__()
                await left.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_pulling)
            nursery.start_soon(stop_pulling)
            await trio.sleep(5.0)
            assert switcher.list_targets()[0].in_flight == 2
            async with switcher.stream(chat()) as chunks:
                # Its attempt began at 10.0, when the first two expired.
                assert switcher.inspect_request(chunks.request_id).attempts == ()
                text = "".join(
                    [c["choices"][0]["delta"].get("content") or "" async for c in chunks]
                )
            third = switcher.inspect_request(chunks.request_id)
            left.set()
        outcomes = [switcher.inspect_request(rid).outcome for rid in ids]
    assert text == ANSWER
    assert [(a.started_at, a.decision) for a in third.attempts] == [(10.0, "return")]
    assert outcomes == ["AllTargetsFailed", "AllTargetsFailed"]


async def test_a_caller_back_before_the_deadline_gets_the_whole_answer(
    autojump_clock: object,
) -> None:
    """Pausing between pulls within the deadline costs nothing: the answer is whole."""
    fake = FakeProvider().on("key-a", stream(ANSWER))
    cfg = config(target("a"), request_timeout_ms=10_000)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        async with switcher.stream(chat()) as chunks:
            pieces = []
            async for chunk in chunks:
                pieces.append(chunk["choices"][0]["delta"].get("content") or "")
                await trio.sleep(0.5)
        trace = switcher.inspect_request(chunks.request_id)
    assert "".join(pieces) == ANSWER
    assert (trace.outcome, [a.decision for a in trace.attempts]) == ("ok", ["return"])


async def test_done_reaches_the_caller_at_once_when_the_body_stays_open(
    autojump_clock: object,
) -> None:
    """After [DONE] the caller's iteration ends at once even if the upstream holds its body
    open; the rest of the body is drained afterwards, bounded, then the connection closed."""
    bodies: list[_HeldBody] = []
    fake = FakeProvider().on("key-a", _held_after_done(bodies, hold_s=5.0))
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        async with switcher.stream(chat()) as chunks:
            received = [chunk async for chunk in chunks]
            assert trio.current_time() == 0.0
        assert trio.current_time() == 0.0
        trace = switcher.inspect_request(chunks.request_id)
        view = switcher.list_targets()[0]
        assert (trace.outcome, view.in_flight, view.successes) == ("ok", 0, 1)
        await trio.sleep(10.0)
    (body,) = bodies
    assert received[-1]["choices"][0]["finish_reason"] == "stop"
    assert (body.closed_at, body.read_to_end) == (1.0, False)  # drained for 1 s, then closed


async def test_a_body_that_ends_soon_after_done_is_read_to_its_end(
    autojump_clock: object,
) -> None:
    """A body that ends shortly after [DONE] is read to its end in the background, so
    its connection can be reused, while the caller already has its end."""
    bodies: list[_HeldBody] = []
    fake = FakeProvider().on("key-a", _held_after_done(bodies, hold_s=0.25))
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        async with switcher.stream(chat()) as chunks:
            [chunk async for chunk in chunks]
        assert trio.current_time() == 0.0
        await trio.sleep(1.0)
    (body,) = bodies
    assert (body.closed_at, body.read_to_end) == (0.25, True)


async def test_streams_that_ended_leave_the_deadline_watch_bounded(
    autojump_clock: object,
) -> None:
    """Watching stream deadlines costs a bounded heap per target, whatever the number of
    streams that ended before their deadline, and keeps none of their orders alive."""
    fake = FakeProvider().on("key-a", stream("short answer"))
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        actor = switcher._router.actors["a"]
        for _ in range(200):
            async with switcher.stream(chat()) as chunks:
                [c async for c in chunks]
        watched = len(actor._stream_deadlines)
        del chunks
        await trio.sleep(2.0)  # the last body's drain is over
        gc.collect()
        alive = [o for o in gc.get_objects() if isinstance(o, AttemptOrder)]
    assert watched <= 2 * 10 + 64 + 1
    assert alive == []
