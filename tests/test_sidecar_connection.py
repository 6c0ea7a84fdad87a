"""One HttpConnection over an in-memory stream pair (virtual clock, no sockets): the
reader's bound on unread bytes, the disconnect callback, and the lingering close after
a reply sent before its request body was read, and whether a body is in hand."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from oswitch.sidecar.closing import ConnectionClosing
from oswitch.sidecar.connection import MAX_BUFFERED_BYTES, RECEIVE_BYTES, HttpConnection
from oswitch.sidecar.responses import BODY_IN_HAND_EXTENSION, REQUEST_SCOPE_EXTENSION

App = Callable[[Any, Any, Any], Awaitable[None]]


def post_head(length: int) -> bytes:
    return b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % length


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def reply(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def serve_one(app: App, client_side: Callable[[trio.abc.Stream], Awaitable[None]]) -> None:
    client, server = trio.testing.memory_stream_pair()
    connection = HttpConnection(
        server,
        app,
        header_timeout_s=5.0,
        closing=ConnectionClosing(),
        client=("127.0.0.1", 1),
        server=("127.0.0.1", 2),
    )

    async def serve() -> None:
        async with server:  # as trio.serve_listeners does: closed once served
            await connection.serve()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await client_side(client)


async def test_a_large_body_is_read_in_bounded_pieces(autojump_clock: object) -> None:
    """A 1 MiB body sent in one go to an app slow to read reaches it whole, and no piece
    is larger than the reader's bound of unread bytes (it stopped reading meanwhile)."""
    body = bytes(range(256)) * 4096
    seen: list[int] = []
    got = bytearray()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await trio.sleep(1)  # slow to read: the reader must stop at its bound meanwhile
        while True:
            message = await receive()
            got.extend(message["body"])
            seen.append(len(message["body"]))
            if not message["more_body"]:
                break
        await reply(send, 200, b"ok")

    async def client(stream: trio.abc.Stream) -> None:
        await stream.send_all(post_head(len(body)) + body)
        await stream.send_eof()  # type: ignore[attr-defined]
        assert (await read_all(stream)).endswith(b"ok")

    await serve_one(app, client)
    assert bytes(got) == body
    assert max(seen) <= MAX_BUFFERED_BYTES + RECEIVE_BYTES


async def test_the_disconnect_callback_fires_once_while_the_answer_is_pending(
    autojump_clock: object,
) -> None:
    """A client that closes while the app waits is reported once through the
    oswitch.disconnect callback, which the app uses to stop waiting."""
    calls: list[float] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        assert message == {"type": "http.request", "body": b"{}", "more_body": False}
        with trio.CancelScope() as cancel:

            def left() -> None:
                calls.append(trio.current_time())
                cancel.cancel()

            scope["extensions"]["oswitch.disconnect"](left)
            await trio.sleep(100)
        scope["extensions"]["oswitch.disconnect"](None)

    async def client(stream: trio.abc.Stream) -> None:
        await stream.send_all(post_head(2) + b"{}")
        await trio.sleep(3)
        await stream.aclose()

    started = trio.current_time()
    await serve_one(app, client)
    assert [round(at - started) for at in calls] == [3]


async def test_a_reply_before_the_body_is_read_arrives_and_then_the_connection_closes(
    autojump_clock: object,
) -> None:
    """An app that refuses after 10 bytes of a 1 MiB body: the client, still sending,
    reads the whole refusal (with connection: close) and then the end of the stream."""
    body = b"x" * (1024 * 1024)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await reply(send, 413, b"too big")

    async def client(stream: trio.abc.Stream) -> None:
        await stream.send_all(post_head(len(body)) + body[:10])
        answer = b""
        while b"too big" not in answer:
            answer += await stream.receive_some(65536)
        await stream.send_all(body[10:])
        answer += await read_all(stream)
        assert answer.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n")
        assert b"\r\nconnection: close\r\n" in answer
        assert answer.endswith(b"\r\n\r\ntoo big")

    await serve_one(app, client)


async def test_the_body_in_hand_extension_says_whether_reading_could_wait(
    autojump_clock: object,
) -> None:
    """``oswitch.body_in_hand`` is true when the request's whole body came with its head,
    false while some of it is still due (and true once it has all arrived)."""
    seen: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        in_hand = scope["extensions"][BODY_IN_HAND_EXTENSION]
        seen.append(in_hand())
        body = b""
        while True:
            message = await receive()
            body += message["body"]
            if not message["more_body"]:
                break
        seen.append(in_hand())
        await reply(send, 200, body)

    async def client(stream: trio.abc.Stream) -> None:
        await stream.send_all(post_head(4) + b"whol")
        await stream.send_all(post_head(4) + b"pa")
        await trio.sleep(1)
        await stream.send_all(b"rt")
        await stream.send_eof()  # type: ignore[attr-defined]
        answers = await read_all(stream)
        assert answers.count(b"HTTP/1.1 200") == 2
        assert answers.endswith(b"part")

    await serve_one(app, client)
    assert seen == [True, True, False, True]


async def test_an_answer_may_take_longer_than_the_header_timeout_and_idle_then_closes(
    autojump_clock: object,
) -> None:
    """The header timeout (5 s here) bounds the wait for each head, not the answer: an
    app taking 60 s is answered, and the kept connection is closed once it has then
    been idle for the header timeout."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await trio.sleep(60)
        await reply(send, 200, b"slow")

    async def client(stream: trio.abc.Stream) -> None:
        started = trio.current_time()
        await stream.send_all(post_head(2) + b"{}")
        answer = await read_all(stream)  # read until the server closes the connection
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"slow")
        assert trio.current_time() - started == 65.0

    await serve_one(app, client)


async def test_cancelling_the_request_scope_ends_the_request_and_its_connection(
    autojump_clock: object,
) -> None:
    """``oswitch.request_scope`` is the scope the app runs in: cancelling it stops the
    app at its next checkpoint, and the connection closes with nothing written."""
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["extensions"][REQUEST_SCOPE_EXTENSION].cancel()
        reached.append("cancelled")
        await trio.sleep(1)
        reached.append("after the checkpoint")  # never: Cancelled left the app

    async def client(stream: trio.abc.Stream) -> None:
        await stream.send_all(post_head(0) + post_head(0))
        assert await read_all(stream) == b""

    await serve_one(app, client)
    assert reached == ["cancelled"]


async def test_a_request_without_a_body_gets_one_empty_body_message(
    autojump_clock: object,
) -> None:
    """ASGI's rule: a request without a body still gets one ``http.request`` (empty, no
    more body) at once; the next ``receive`` waits for the client's going."""
    messages: list[tuple[float, dict[str, Any]]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for _ in range(2):
            message = await receive()
            messages.append((trio.current_time(), message))
        await reply(send, 200, b"ok")

    async def client(stream: trio.abc.Stream) -> None:
        await stream.send_all(post_head(0))
        await trio.sleep(3)
        await stream.send_eof()  # type: ignore[attr-defined]
        await read_all(stream)

    started = trio.current_time()
    await serve_one(app, client)
    assert [(at - started, message) for at, message in messages] == [
        (0.0, {"type": "http.request", "body": b"", "more_body": False}),
        (3.0, {"type": "http.disconnect"}),
    ]


class _HookedStream(trio.abc.HalfCloseableStream):
    """A server-side stream that calls ``hook`` when the connection's reader asks for
    bytes the second time: right after it handed the first request to the serving task,
    before that task has run."""

    def __init__(self, inner: trio.abc.HalfCloseableStream, hook: Callable[[], None]) -> None:
        self._inner, self._hook, self._reads = inner, hook, 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        self._reads += 1
        if self._reads == 2:
            self._hook()
        return await self._inner.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._inner.send_eof()

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.mark.parametrize("cancel", ["shutdown", "header timeout"])
async def test_a_head_in_hand_is_answered_though_its_wait_was_cancelled_as_it_came(
    autojump_clock: trio.testing.MockClock, cancel: str
) -> None:
    """A head that had arrived when a shutdown closed the idle connections, or when the
    header timeout passed, before the serving task ran, is still answered."""
    client, server = trio.testing.memory_stream_pair()
    closing = ConnectionClosing()

    def hook() -> None:
        if cancel == "shutdown":
            closing.close_idle()
        else:
            autojump_clock.jump(6.0)  # past the 5 s header timeout

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await reply(send, 200, b"answered")

    connection = HttpConnection(
        _HookedStream(server, hook),
        app,
        header_timeout_s=5.0,
        closing=closing,
        client=("127.0.0.1", 1),
        server=("127.0.0.1", 2),
    )

    async def serve() -> None:
        async with server:
            await connection.serve()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await trio.sleep(1)  # idle, waiting for the head
        await client.send_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        answer = await read_all(client)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"answered")
