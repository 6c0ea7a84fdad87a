"""Only content is progress: chunks that carry nothing never keep a stalled stream alive,
before the first token, after it, and over a real HTTP connection."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio

from oswitch import RequestFailed
from oswitch.runtime.switcher import Switcher, open_switcher
from oswitch.testing import Behaviour, FakeProvider, stream
from support import chat, config, target

ANSWER = "Alpha bravo charlie delta echo foxtrot golf hotel india juliet."


def _chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    payload = {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": choices}
    return f"data: {json.dumps({**payload, **extra})}\n\n".encode()


# What a hostile or broken upstream repeats forever, every second, instead of tokens.
NOTHING = {
    "empty-delta": _chunk({}),
    "role-only": _chunk({"role": "assistant"}),
    "empty-content": _chunk({"content": ""}),
    "null-finish-as-empty-string": _chunk({"content": ""}, ""),
    "usage-only": _chunk(None, usage={"prompt_tokens": 1, "completion_tokens": 1}),
    "ping-comment": b": ping\n\n",
    "empty-tool-call": _chunk({"tool_calls": [{"index": 0}]}),
    "repeated-finish": _chunk({}, "stop"),
}


def _flood(nothing: bytes, *, content_first: bool, interval: float = 1.0) -> Behaviour:
    """Headers at once, optionally one content chunk, then ``nothing`` every
    ``interval`` seconds, forever."""

    async def body() -> AsyncIterator[bytes]:
        yield _chunk({"role": "assistant", "content": ""})
        if content_first:
            yield _chunk({"content": "Alpha "})
        while True:
            await trio.sleep(interval)
            yield nothing

    async def respond(request: httpx.Request, _: Any) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    return Behaviour(name="nothing but keep-alives", respond=respond)


async def _collect(switcher: Switcher) -> tuple[str, str]:
    async with switcher.stream(chat()) as chunks:
        pieces = [
            c["choices"][0]["delta"].get("content") or "" async for c in chunks if c["choices"]
        ]
    return "".join(pieces), chunks.request_id


@pytest.mark.parametrize("nothing", sorted(set(NOTHING) - {"repeated-finish"}))
async def test_nothing_before_the_first_token_is_a_silent_first_token(
    autojump_clock: object, nothing: str
) -> None:
    """Chunks without content before the first token do not extend the first-token limit:
    the attempt is abandoned at exactly that limit and failed over."""
    fake = FakeProvider().on("key-a", _flood(NOTHING[nothing], content_first=False))
    fake.on("key-b", stream(ANSWER))
    cfg = config(target("a", operator_priority=1), target("b"), first_token_timeout_ms=4000)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        async with switcher.stream(chat()) as chunks:
            assert trio.current_time() == 4.0
            text = "".join(
                [
                    c["choices"][0]["delta"].get("content") or ""
                    async for c in chunks
                    if c["choices"]
                ]
            )
        trace = switcher.inspect_request(chunks.request_id)
    assert text == ANSWER
    first, second = trace.attempts
    assert (first.target_id, str(first.error_class), first.note) == (
        "a",
        "TransportFailure",
        "before first content",
    )
    assert second.target_id == "b"


@pytest.mark.parametrize("nothing", sorted(NOTHING))
async def test_nothing_after_content_is_a_stall(autojump_clock: object, nothing: str) -> None:
    """After content, chunks without new content (a finish counts once) do not restart
    the idle clock: 3 s of them is a stall, and the answer is finished elsewhere."""
    fake = FakeProvider().on("key-a", _flood(NOTHING[nothing], content_first=True))
    fake.on("key-b", stream(ANSWER))
    cfg = config(target("a", operator_priority=1), target("b"), stream_idle_timeout_ms=3000)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        with trio.fail_after(60):
            if nothing == "empty-tool-call":
                # A tool-call delta reached the caller: never resumed, but it ends at 3 s.
                with pytest.raises(RequestFailed, match="tool call"):
                    await _collect(switcher)
                assert trio.current_time() == 3.0
                return
            text, request_id = await _collect(switcher)
        trace = switcher.inspect_request(request_id)
    if nothing == "repeated-finish":
        # The first finish (at 1 s) is progress, the next ones are not; it reached the
        # caller, so the answer is whole and nothing is resumed.
        assert trio.current_time() == 4.0
        assert (text, [a.decision for a in trace.attempts]) == ("Alpha ", ["return"])
    else:
        assert trio.current_time() == 3.0
        assert text == ANSWER
        assert "stalled: no next chunk within 3.000s" in trace.attempts[0].note
        assert [a.target_id for a in trace.attempts] == ["a", "b"]


async def test_an_empty_finish_reason_is_not_the_end_of_the_answer(
    autojump_clock: object,
) -> None:
    """A stream whose chunks all say ``finish_reason: ""`` and that is then cut is resumed:
    an empty finish reason does not make a partial answer look whole."""

    async def body() -> AsyncIterator[bytes]:
        yield _chunk({"role": "assistant", "content": ""}, "")
        for word in ANSWER.split(" ")[:4]:
            yield _chunk({"content": word + " "}, "")

    async def respond(request: httpx.Request, _: Any) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    fake = FakeProvider().on("key-a", Behaviour(name="cut", respond=respond))
    fake.on("key-b", stream(ANSWER))
    cfg = config(target("a", operator_priority=1), target("b"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        text, request_id = await _collect(switcher)
        trace = switcher.inspect_request(request_id)
    assert text == ANSWER
    assert [a.decision for a in trace.attempts] == ["resume", "return"]


# ---- over a real HTTP connection ---------------------------------------------------


async def _serve_sse(
    respond: Callable[[bytes], AsyncIterator[bytes]],
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A bare HTTP/1.1 server on 127.0.0.1: reads one request per connection and streams
    ``respond(request_head)`` back as a chunked text/event-stream body."""

    async def handle(connection: trio.SocketStream) -> None:
        async with connection:
            data = b""
            while b"\r\n\r\n" not in data:
                piece = await connection.receive_some(65536)
                if not piece:
                    return
                data += piece
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(body) < length:
                body += await connection.receive_some(65536)
            await connection.send_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            try:
                async for event in respond(head):
                    await connection.send_all(b"%x\r\n%s\r\n" % (len(event), event))
                await connection.send_all(b"0\r\n\r\n")
            except trio.BrokenResourceError:
                return  # the client closed it: what oswitch does to a stalled stream

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def test_keep_alives_over_a_real_connection_are_a_stall() -> None:
    """Over loopback through a real HTTP upstream, a stream that sends only empty chunks
    and comments after its first content is stalled at the idle limit and resumed."""
    words = ANSWER.split(" ")

    async def respond(head: bytes) -> AsyncIterator[bytes]:
        if b"key-a" in head:
            yield _chunk({"role": "assistant", "content": ""})
            yield _chunk({"content": "Alpha "})
            while True:
                await trio.sleep(0.02)
                yield _chunk({})
                yield b": ping\n\n"
        else:
            yield _chunk({"role": "assistant", "content": ""})
            for word in words[1:-1]:
                yield _chunk({"content": word + " "})
            yield _chunk({"content": words[-1]})
            yield _chunk({}, "stop") + b"data: [DONE]\n\n"

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(_serve_sse, respond)
            base_url = f"http://127.0.0.1:{port}/v1"
            cfg = config(
                target("a", operator_priority=1, base_url=base_url),
                target("b", base_url=base_url),
                stream_idle_timeout_ms=300,
            )
            async with open_switcher(cfg) as switcher:
                text, request_id = await _collect(switcher)
                trace = switcher.inspect_request(request_id)
            nursery.cancel_scope.cancel()
    assert text == ANSWER
    assert [(a.target_id, a.decision) for a in trace.attempts] == [("a", "resume"), ("b", "return")]
    assert "stalled: no next chunk within 0.300s" in trace.attempts[0].note
