"""The fake upstream as a real HTTP server on 127.0.0.1, in-process or as its own process.

``python -m bench.upstream --port-file FILE`` serves the overhead benchmark's
upstream (an instant JSON reply, or the same answer streamed in 16 SSE events, by
the request's ``stream`` flag) and writes its port to FILE once listening. Running
it in a separate process keeps its CPU out of the client's ``time.process_time``.

Two servers can play it. ``--server fake`` is ``oswitch.testing``'s scripted
FakeProvider behind hypercorn: faithful, but its ~1 ms of CPU per request makes it
the bottleneck beyond a few hundred requests per second on a small machine, and
then every variant measures the upstream's queue. ``--server raw`` (the default
for the overhead benchmark) answers the same bytes from a minimal HTTP/1.1 loop on
bare trio sockets, cheap enough that the client under test is the bottleneck.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import trio

from bench.faults import by_stream_flag, sse_reply
from oswitch.testing import Call, FakeProvider, completion, reply, serve_fake_provider

MODEL = "gpt-4o-mini"
OVERHEAD_KEY = "sk-bench-overhead"


def overhead_request(streamed: bool) -> dict[str, Any]:
    """The one chat request every overhead variant sends (oswitch, httpx, aiohttp)."""
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say something of moderate length."}],
    }
    if streamed:
        body["stream"] = True
    return body


OVERHEAD_TEXT = (
    "A bench answer of about the size of a short chat reply: a few sentences, a few "
    "hundred bytes, streamed in sixteen pieces when a stream is asked for. "
) * 2


class LoopbackFake(FakeProvider):
    """A FakeProvider whose plain (non-streamed) replies can be served over a socket.

    ``oswitch.testing``'s HTTP bridge streams every response body with
    ``aiter_raw()``, which raises ``StreamConsumed`` for a response built with
    ``json=`` or ``text=`` (httpx reads those on construction). Re-wrapping such a
    body as a one-piece stream lets every scripted behaviour work over loopback.
    """

    async def handle(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle(request)
        if not response.is_stream_consumed:
            return response
        content = response.content

        async def once() -> AsyncIterator[bytes]:
            yield content

        headers = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k.lower() not in ("content-length", "transfer-encoding")
        ]
        return httpx.Response(response.status_code, headers=headers, content=once())


def overhead_fake() -> LoopbackFake:
    """The overhead benchmark's upstream: answers at once, JSON or SSE by the request."""
    fake = LoopbackFake()
    answer = by_stream_flag(reply(OVERHEAD_TEXT), sse_reply(OVERHEAD_TEXT, chunks=16))
    fake.on(OVERHEAD_KEY, answer)
    fake.on("127.0.0.1", answer)
    # The benchmark sends tens of thousands of calls: keep no per-call log.
    fake.calls = DiscardCalls()
    return fake


class DiscardCalls(list[Call]):
    """A list that forgets what is appended (FakeProvider logs every call)."""

    def append(self, _: object) -> None:
        pass


# ---- the raw server -------------------------------------------------------------------


def _raw_replies() -> tuple[bytes, list[bytes]]:
    """The exact bytes the raw server sends: a JSON reply, and an SSE reply's pieces."""
    body = json.dumps(completion(OVERHEAD_TEXT, model=MODEL)).encode()
    plain = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    size = -(-len(OVERHEAD_TEXT) // 16)
    pieces = [OVERHEAD_TEXT[i : i + size] for i in range(0, len(OVERHEAD_TEXT), size)]

    def event(delta: dict[str, str], finish: str | None) -> bytes:
        payload = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

    events = [event({"role": "assistant", "content": ""}, None)]
    events += [event({"content": piece}, None) for piece in pieces]
    events.append(event({}, "stop") + b"data: [DONE]\n\n")
    chunks = [b"%x\r\n%s\r\n" % (len(e), e) for e in events]
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    return plain, [head + chunks[0], *chunks[1:], b"0\r\n\r\n"]


async def _raw_connection(stream: trio.SocketStream, *, latency_s: float = 0.0) -> None:
    plain, streamed = _RAW
    buffer = b""
    try:
        while True:
            while b"\r\n\r\n" not in buffer:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buffer) < length:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
            body, buffer = buffer[:length], buffer[length:]
            if latency_s:
                await trio.sleep(latency_s)  # a provider's time to its first byte
            if b'"stream": true' in body or b'"stream":true' in body:
                # One write per event, as a server flushing each SSE event does.
                for piece in streamed:
                    await stream.send_all(piece)
            else:
                await stream.send_all(plain)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return


_RAW = _raw_replies()


async def serve_raw_upstream(
    *,
    port: int = 0,
    latency_s: float = 0.0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the overhead upstream's bytes from a minimal HTTP/1.1 loop until cancelled.

    Answers every POST with the JSON reply, or the SSE reply when the body asks to
    stream, ``latency_s`` after the request is in; keeps connections alive. Reports its
    port through ``task_status``.
    """
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    bound = listeners[0].socket.getsockname()[1]
    handler = functools.partial(_raw_connection, latency_s=latency_s)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handler, listeners)
        task_status.started(int(bound))


async def _serve(port_file: str, port: int, server: str, latency_s: float = 0.0) -> None:
    async with trio.open_nursery() as nursery:
        if server == "raw":
            bound = await nursery.start(
                functools.partial(serve_raw_upstream, port=port, latency_s=latency_s)
            )
        else:
            fake = overhead_fake()
            bound = await nursery.start(functools.partial(serve_fake_provider, fake, port=port))
        # Write then rename, so the parent never reads a half-written file.
        partial_name = trio.Path(port_file + ".part")
        await partial_name.write_text(str(bound))
        await partial_name.replace(port_file)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the overhead upstream until killed; its port goes to ``--port-file``."""
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__)
    parser.add_argument("--port-file", required=True, help="write the bound port here")
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: any free one)")
    parser.add_argument(
        "--server", choices=("raw", "fake"), default="raw", help="which server plays it"
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="wait this long before each reply (raw server only; default 0)",
    )
    args = parser.parse_args(argv)
    try:
        trio.run(_serve, args.port_file, args.port, args.server, args.latency_ms / 1000.0)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
