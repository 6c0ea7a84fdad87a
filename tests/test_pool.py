"""oswitch's HTTP/1.1 pool: framing, keep-alive, faults and limits.

The wire tests talk to scripted servers on 127.0.0.1 over real sockets (plain and
TLS), on the real clock, each guarded by ``trio.fail_after``. The chunked decoder is
also checked without sockets, against every way a body can be cut into chunks and
reads.
"""

from __future__ import annotations

import functools
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import httpx
import pytest
import trio
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from oswitch import ErrorClass, classify
from oswitch.transport import request_head as request_head_module
from oswitch.transport.connection import Connection
from oswitch.transport.pool import HTTP1Pool, _Body
from oswitch.transport.wire import Framing as _Framing

Handler = Callable[[trio.abc.Stream, "Server"], Awaitable[None]]


@attrs.define
class Server:
    """A loopback server running ``handler`` on every connection, counting them."""

    handler: Handler
    accepted: int = 0
    closed_by_client: int = 0
    requests: list[bytes] = attrs.Factory(list)  # every request head and body, in order


async def read_request(stream: trio.abc.Stream, server: Server, buffer: bytearray) -> bool:
    """Read one request (head and Content-Length body) into ``server.requests``;
    False if the client closed the connection first."""
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(65536)
        if not data:
            server.closed_by_client += 1
            return False
        buffer += data
    end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:end])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(buffer) < end + length:
        data = await stream.receive_some(65536)
        if not data:
            server.closed_by_client += 1
            return False
        buffer += data
    server.requests.append(bytes(buffer[: end + length]))
    del buffer[: end + length]
    return True


async def wait_for_close(stream: trio.abc.Stream, server: Server) -> None:
    """Read until the client closes the connection (counted)."""
    try:
        while await stream.receive_some(65536):
            pass
    except trio.BrokenResourceError:
        pass
    server.closed_by_client += 1


async def serve(handler: Handler, *, tls: ssl.SSLContext | None = None, task_status: Any) -> None:
    server = Server(handler)

    async def connection(stream: trio.SocketStream) -> None:
        server.accepted += 1
        wrapped: trio.abc.Stream = stream
        if tls is not None:
            wrapped = trio.SSLStream(stream, tls, server_side=True, https_compatible=True)
        try:
            await handler(wrapped, server)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(wrapped)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started((listeners[0].socket.getsockname()[1], server))
    await trio.serve_listeners(connection, listeners)


def ok(body: bytes = b'{"ok":true}', *extra: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        + b"".join(extra)
        + b"content-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def chunked(*pieces: bytes) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n"
    )


def answering(*replies: bytes) -> Handler:
    """Answer each request on a connection with the next reply, then wait for close."""

    async def handler(stream: trio.abc.Stream, server: Server) -> None:
        buffer = bytearray()
        for raw in replies:
            if not await read_request(stream, server, buffer):
                return
            await stream.send_all(raw)
        await wait_for_close(stream, server)

    return handler


def pool(max_connections: int = 4, **fields: Any) -> HTTP1Pool:
    return HTTP1Pool(
        max_connections=max_connections,
        ssl_context=fields.pop("ssl_context", ssl.create_default_context()),
        **fields,
    )


async def read_all(response: httpx.Response) -> bytes:
    pieces = [piece async for piece in response.stream]
    await response.aclose()
    return b"".join(pieces)


def url(port: int, scheme: str = "http") -> httpx.URL:
    return httpx.URL(f"{scheme}://127.0.0.1:{port}/v1/chat/completions?x=1")


HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-test"}


# ---- keep-alive and framing over the wire -------------------------------------------------


async def test_replies_come_back_whole_and_the_connection_is_reused() -> None:
    """Two requests in a row share one connection; the request carries what was asked."""
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port, server = await nursery.start(serve, answering(ok(b"one"), chunked(b"tw", b"o")))
            client = pool()
            first = await client.post(url(port), HEADERS, b'{"a":1}')
            assert (first.status_code, await read_all(first)) == (200, b"one")
            second = await client.post(url(port), HEADERS, b'{"a":2}')
            assert (second.headers["content-type"], await read_all(second)) == (
                "text/event-stream",
                b"two",
            )
            assert server.accepted == 1
            head = server.requests[0]
            assert head.startswith(b"POST /v1/chat/completions?x=1 HTTP/1.1\r\n")
            for line in (
                b"host: 127.0.0.1:%d" % port,
                b"authorization: Bearer sk-test",
                b"content-length: 7",
                b"user-agent: oswitch",
            ):
                assert line in head.split(b"\r\n")
            assert head.endswith(b'\r\n\r\n{"a":1}')
            assert client.statistics().idle == 1
            await client.aclose()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "reply",
    [
        ok(b"bye", b"connection: close\r\n"),
        b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\nbye",
    ],
    ids=["connection-close", "http-1.0-until-close"],
)
async def test_a_connection_the_server_closes_is_not_reused(reply: bytes) -> None:
    """A reply ending the connection (Connection: close, or an HTTP/1.0 body read to the
    close) is read whole, and the next request opens a new connection."""

    async def once_then_close(stream: trio.abc.Stream, server: Server) -> None:
        if await read_request(stream, server, bytearray()):
            await stream.send_all(reply)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port, server = await nursery.start(serve, once_then_close)
            client = pool()
            for _ in range(2):
                assert await read_all(await client.post(url(port), HEADERS, b"{}")) == b"bye"
            assert server.accepted == 2
            nursery.cancel_scope.cancel()


async def test_an_idle_connection_closed_by_the_server_is_replaced() -> None:
    """A kept-alive connection the server dropped while idle is not used again."""

    async def answer_then_hang_up(stream: trio.abc.Stream, server: Server) -> None:
        if await read_request(stream, server, bytearray()):
            await stream.send_all(ok(b"fine"))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port, server = await nursery.start(serve, answer_then_hang_up)
            client = pool()
            assert await read_all(await client.post(url(port), HEADERS, b"{}")) == b"fine"
            await trio.sleep(0.05)  # the server's close reaches us
            assert await read_all(await client.post(url(port), HEADERS, b"{}")) == b"fine"
            assert server.accepted == 2
            nursery.cancel_scope.cancel()


async def test_a_reused_connection_closed_after_the_request_was_read_is_not_resent() -> None:
    """A server that reads a request on a reused connection, then hangs up without a byte
    of answer, may have acted on it: the request fails instead of going out a second time
    behind the engine's budgets (issue 11, item 10c)."""

    async def answer_once_then_drop(stream: trio.abc.Stream, server: Server) -> None:
        buffer = bytearray()
        if await read_request(stream, server, buffer):
            await stream.send_all(ok(b"fine"))
            await read_request(stream, server, buffer)  # then hang up unanswered

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port, server = await nursery.start(serve, answer_once_then_drop)
            client = pool()
            assert await read_all(await client.post(url(port), HEADERS, b"{}")) == b"fine"
            with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
                await client.post(url(port), HEADERS, b"{}")
            assert server.accepted == 1
            assert len(server.requests) == 2  # the second request reached the server once
            assert client.statistics().connections == 0
            nursery.cancel_scope.cancel()


async def test_a_reused_connection_reset_before_the_request_left_is_sent_again_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The keep-alive race: the server resets a kept-alive connection just after the
    pool checked it, so the write fails before the request left whole. The provider
    cannot have read it, so it goes once more, on a new connection."""
    reset = trio.Event()

    async def answer_then_reset(stream: trio.abc.Stream, server: Server) -> None:
        buffer = bytearray()
        if await read_request(stream, server, buffer):
            await stream.send_all(ok(b"fine"))
            if server.accepted == 1:
                assert isinstance(stream, trio.SocketStream)
                stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                stream.socket.close()  # an RST, not a FIN
                reset.set()
                return
            await wait_for_close(stream, server)

    # The readability check at checkout ran just before the reset arrived; the write
    # then meets it.
    monkeypatch.setattr(Connection, "reusable", lambda self: True)
    writes: list[str] = []
    original_send = Connection.send

    async def send(self: Connection, head: bytes, body: bytes) -> None:
        if writes == ["ok"]:  # the second request, on the reused connection
            await trio.lowlevel.wait_readable(self.socket)  # the reset is in
        try:
            await original_send(self, head, body)
        except httpx.WriteError:
            writes.append("failed")
            raise
        writes.append("ok")

    monkeypatch.setattr(Connection, "send", send)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port, server = await nursery.start(serve, answer_then_reset)
            client = pool()
            assert await read_all(await client.post(url(port), HEADERS, b"{}")) == b"fine"
            await reset.wait()
            assert await read_all(await client.post(url(port), HEADERS, b"{}")) == b"fine"
            assert writes == ["ok", "failed", "ok"]
            assert server.accepted == 2
            assert len(server.requests) == 2  # each request reached the server once
            nursery.cancel_scope.cancel()


async def test_interim_responses_are_skipped() -> None:
    """A 100 Continue or 103 Early Hints head before the real one is passed over."""
    reply = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + ok()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port, _ = await nursery.start(serve, answering(reply))
            response = await pool().post(url(port), HEADERS, b"{}")
            assert (response.status_code, await read_all(response)) == (200, b'{"ok":true}')
            nursery.cancel_scope.cancel()


async def test_a_large_request_body_arrives_whole() -> None:
    """A body beyond one write's worth is sent after its head, entire."""
    body = b'{"pad":"' + b"x" * 300_000 + b'"}'
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port, server = await nursery.start(serve, answering(ok()))
            response = await pool().post(url(port), HEADERS, body)
            await read_all(response)
            assert server.requests[0].endswith(b"\r\n\r\n" + body)
            nursery.cancel_scope.cancel()


async def test_it_serves_as_an_httpx_transport() -> None:
    """As an httpx transport, it carries an AsyncClient's requests (Host and length its own)."""
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port, server = await nursery.start(serve, answering(ok(b'{"v":1}')))
            async with httpx.AsyncClient(transport=pool()) as client:
                response = await client.post(str(url(port)), json={"a": 1})
            assert response.json() == {"v": 1}
            assert server.requests[0].count(b"content-length:") == 1
            nursery.cancel_scope.cancel()


async def test_tls_round_trip_and_reuse() -> None:
    """Over TLS (a local CA), replies come back and the connection is kept alive."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port, server = await nursery.start(
                functools.partial(serve, answering(ok(b"one"), chunked(b"two")), tls=server_context)
            )
            client = pool(ssl_context=client_context)
            assert await read_all(await client.post(url(port, "https"), HEADERS, b"{}")) == b"one"
            assert await read_all(await client.post(url(port, "https"), HEADERS, b"{}")) == b"two"
            assert server.accepted == 1
            nursery.cancel_scope.cancel()


async def test_an_untrusted_certificate_is_a_connect_error() -> None:
    """A server whose certificate the context does not trust fails as ConnectError."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port, _ = await nursery.start(
                functools.partial(serve, answering(ok()), tls=server_context)
            )
            client = pool(max_connections=1)
            with pytest.raises(httpx.ConnectError, match="TLS handshake"):
                await client.post(url(port, "https"), HEADERS, b"{}")
            assert client.statistics().connections == 0
            nursery.cancel_scope.cancel()


# ---- faults --------------------------------------------------------------------------------


async def test_a_refused_connection_is_a_connect_error() -> None:
    """Nobody listening: ConnectError, classified as a TransportFailure."""
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with trio.fail_after(5), pytest.raises(httpx.ConnectError) as caught:
        await pool().post(url(port), HEADERS, b"{}")
    assert classify(None, None, None, caught.value).error_class is ErrorClass.TRANSPORT_FAILURE


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"", "without sending a response"),
        (b"HTTP/1.1 200 OK\r\ncontent-le", "in the middle of the response head"),
        (b"HTTP/2 200 OK\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed response header"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\nab", "invalid Content-Length"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "unexpected 101"),
    ],
    ids=["nothing", "cut-head", "status-line", "header-line", "two-lengths", "upgrade"],
)
async def test_a_broken_response_head_is_a_protocol_error(reply: bytes, message: str) -> None:
    """A response head that is missing, cut or malformed raises RemoteProtocolError, and
    its connection is dropped."""

    async def handler(stream: trio.abc.Stream, server: Server) -> None:
        if await read_request(stream, server, bytearray()) and reply:
            await stream.send_all(reply)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port, _ = await nursery.start(serve, handler)
            client = pool(max_connections=1)
            with pytest.raises(httpx.RemoteProtocolError, match=message):
                await client.post(url(port), HEADERS, b"{}")
            assert client.statistics().connections == 0
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"5\r\nhello\r\n3\r\nwor", "before the end of the chunked body"),
        (b"5\r\nhelloXX", "not followed by CRLF"),
        (b"zz\r\n", "malformed chunk size"),
        (b"0x5\r\nhello\r\n", "malformed chunk size"),
    ],
    ids=["cut", "no-crlf", "not-hex", "hex-prefix"],
)
async def test_a_broken_chunked_body_is_a_protocol_error(raw: bytes, error: str) -> None:
    """A chunked body cut short or malformed raises RemoteProtocolError while reading;
    the connection is dropped and its slot freed."""

    async def handler(stream: trio.abc.Stream, server: Server) -> None:
        if await read_request(stream, server, bytearray()):
            await stream.send_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + raw)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port, _ = await nursery.start(serve, handler)
            client = pool(max_connections=1)
            response = await client.post(url(port), HEADERS, b"{}")
            with pytest.raises(httpx.RemoteProtocolError, match=error):
                await read_all(response)
            assert client.statistics().connections == 0
            nursery.cancel_scope.cancel()


async def test_a_header_value_with_a_line_break_is_refused_without_echo() -> None:
    """A header value that would inject lines is refused before anything is sent, and
    the error does not repeat the value (it may be a key)."""
    client = pool()
    with pytest.raises(httpx.LocalProtocolError) as caught:
        await client.post(
            httpx.URL("http://127.0.0.1:9/x"),
            {"authorization": "Bearer sk-secret\r\nx-evil: 1"},
            b"{}",
        )
    assert "sk-secret" not in str(caught.value)
    assert "authorization" in str(caught.value)
    assert client.statistics().connections == 0


# ---- limits, abandonment and cancellation --------------------------------------------------


async def server_saw_closes(server: Server, count: int) -> None:
    """Wait (at most a second) until the server has seen ``count`` connections closed."""
    with trio.fail_after(1):
        while server.closed_by_client < count:  # noqa: ASYNC110 (counted by another task)
            await trio.sleep(0.01)


def streaming_forever() -> Handler:
    """Send a chunked head and one chunk, then nothing, until the client goes away."""

    async def handler(stream: trio.abc.Stream, server: Server) -> None:
        if await read_request(stream, server, bytearray()):
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"
            )
            await wait_for_close(stream, server)

    return handler


async def test_an_abandoned_body_closes_its_connection_and_frees_the_slot() -> None:
    """Closing a response before its end closes the connection (the server sees it) and
    lets the next request have the pool's only slot."""
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port, server = await nursery.start(serve, streaming_forever())
            client = pool(max_connections=1)
            response = await client.post(url(port), HEADERS, b"{}")
            assert await response.stream.__aiter__().__anext__() == b"hello"
            await response.aclose()
            await response.aclose()  # idempotent
            second = await client.post(url(port), HEADERS, b"{}")
            await second.aclose()
            await server_saw_closes(server, 2)
            assert server.accepted == 2
            nursery.cancel_scope.cancel()


async def test_a_cancelled_read_closes_its_connection_and_frees_the_slot() -> None:
    """A read cancelled by the caller's scope drops the connection, never reuses it."""
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port, server = await nursery.start(serve, streaming_forever())
            client = pool(max_connections=1)
            response = await client.post(url(port), HEADERS, b"{}")
            pieces = []
            with trio.move_on_after(0.1) as scope:
                async for piece in response.stream:
                    pieces.append(piece)
            assert scope.cancelled_caught and pieces == [b"hello"]
            assert client.statistics().connections == 0
            await server_saw_closes(server, 1)
            nursery.cancel_scope.cancel()


async def test_requests_beyond_the_limit_wait_then_time_out() -> None:
    """With every connection in use, a request waits for one, up to the pool timeout."""
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port, _ = await nursery.start(serve, streaming_forever())
            client = pool(max_connections=1, pool_timeout_s=0.2)
            held = await client.post(url(port), HEADERS, b"{}")
            before = trio.current_time()
            with pytest.raises(httpx.PoolTimeout):
                await client.post(url(port), HEADERS, b"{}")
            assert trio.current_time() - before >= 0.2
            await held.aclose()
            third = await client.post(url(port), HEADERS, b"{}")
            await third.aclose()
            nursery.cancel_scope.cancel()


# ---- the chunked decoder, without sockets --------------------------------------------------


class FakePool:
    """Records how a body ended."""

    def __init__(self) -> None:
        self.ended: list[str] = []

    def give_back(self, connection: object, origin: object, *, reusable: bool) -> None:
        self.ended.append("reused" if reusable else "closed")

    def discard(self, connection: object) -> None:
        self.ended.append("discarded")


class FakeConnection:
    """Hands out pre-cut reads."""

    def __init__(self, reads: list[bytes]) -> None:
        self.buffer = b""
        self._reads = reads

    async def receive(self) -> bytes:
        await trio.lowlevel.checkpoint()
        return self._reads.pop(0) if self._reads else b""


chunk_sizes = st.lists(st.integers(1, 40), max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=300),
    sizes=chunk_sizes,
    cuts=st.lists(st.integers(0, 600), max_size=15),
    extension=st.booleans(),
    trailer=st.booleans(),
)
def test_any_chunking_and_any_reads_give_back_the_body(
    body: bytes, sizes: list[int], cuts: list[int], extension: bool, trailer: bool
) -> None:
    """However the body is cut into chunks (with extensions and trailers) and the bytes
    into reads, the same body comes out, and bytes after it stay for the next reply."""
    pieces, rest = [], body
    for size in sizes:
        if not rest:
            break
        pieces.append(rest[:size])
        rest = rest[size:]
    if rest:
        pieces.append(rest)
    ext = b";name=value" if extension else b""
    wire = b"".join(b"%x%s\r\n%s\r\n" % (len(p), ext, p) for p in pieces)
    wire += b"0\r\n" + (b"x-trailer: 1\r\n" if trailer else b"") + b"\r\nNEXT"
    points = sorted({min(c, len(wire)) for c in cuts})
    reads = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    reads = [r for r in reads if r]

    async def decode() -> tuple[bytes, FakePool, FakeConnection]:
        fake_pool, connection = FakePool(), FakeConnection(reads)
        stream = _Body(fake_pool, connection, ("http", "h", 80), _Framing("chunked"))  # type: ignore[arg-type]
        data = b"".join([piece async for piece in stream])
        return data, fake_pool, connection

    data, fake_pool, connection = trio.run(decode)
    assert data == body
    assert fake_pool.ended == ["reused"]
    assert connection.buffer + b"".join(connection._reads) == b"NEXT"


# ---- request heads ------------------------------------------------------------------------


async def test_a_targets_repeated_head_is_validated_once_and_sent_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three requests with the same method, URL and headers validate the head once; each
    still carries its own Content-Length and body, and a new header set is validated
    anew."""
    validated: list[bytes] = []
    original = request_head_module.request_head_fields

    def counting(*args: object) -> bytes:
        head = original(*args)  # type: ignore[arg-type]
        validated.append(head)
        return head

    monkeypatch.setattr(request_head_module, "request_head_fields", counting)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port, server = await nursery.start(serve, answering(*[ok(b"x")] * 4))
            client = pool()
            for body in (b'{"a":1}', b'{"a":22}', b'{"a":333}'):
                assert await read_all(await client.post(url(port), HEADERS, body)) == b"x"
            assert len(validated) == 1
            other = {**HEADERS, "authorization": "Bearer sk-other"}
            await read_all(await client.post(url(port), other, b"{}"))
            assert len(validated) == 2
            await client.aclose()
            nursery.cancel_scope.cancel()
    for request, length, body in zip(
        server.requests, (7, 8, 9, 2), (b'{"a":1}', b'{"a":22}', b'{"a":333}', b"{}"), strict=True
    ):
        assert request.startswith(validated[0 if length != 2 else 1])
        assert request.endswith(b"content-length: %d\r\n\r\n%s" % (length, body))


async def test_a_bad_header_is_refused_every_time() -> None:
    """A head that fails validation (a line break, a value that is not latin-1 text) is
    not kept: every request with it is refused, the same URL object included."""
    client = pool()
    target = httpx.URL("http://127.0.0.1:9/x")
    for _ in range(2):
        with pytest.raises(httpx.LocalProtocolError, match="authorization"):
            await client.post(target, {"authorization": "Bearer a\r\nb: 1"}, b"{}")
        with pytest.raises(httpx.LocalProtocolError, match="not latin-1 text"):
            await client.post(target, {"authorization": "Bearer \u2603"}, b"{}")
    assert client._heads == {}
    assert client._posts == {}


async def test_a_closed_pool_refuses_first_and_keeps_no_key() -> None:
    """Once closed, the pool forgets every head it kept (they hold the targets' keys) and
    refuses any request as closed, before looking at its URL or headers."""
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port, _ = await nursery.start(serve, answering(ok(b"x")))
            client = pool()
            await read_all(await client.post(url(port), HEADERS, b"{}"))
            assert client._heads and client._posts
            await client.aclose()
            nursery.cancel_scope.cancel()
    assert client._heads == {} and client._posts == {}
    for target, headers in (
        (url(port), HEADERS),
        (httpx.URL("ftp://127.0.0.1/x"), HEADERS),
        (url(port), {"authorization": "Bearer a\r\nb: 1"}),
    ):
        with pytest.raises(httpx.LocalProtocolError, match="the connection pool is closed"):
            await client.post(target, headers, b"{}")
    assert client._posts == {}
