"""oswitch's own HTTP/1.1 connection pool, for the one kind of call it makes.

A target only ever POSTs a JSON body to its provider and reads back JSON or an
event stream. httpx's pool (httpcore over h11) does that through several layers of
async generators, context managers and a protocol state machine per body piece:
profiled on a 16-event stream, h11 and httpcore alone spent a quarter of the
client's CPU (more with the trio and context-manager work they cause), more than
all of oswitch's own routing, bookkeeping and deadlines.
This pool does the same job directly on trio streams: one buffer per connection,
the sans-IO :mod:`~oswitch.transport.wire` module to encode request heads and
decode responses (one decoder call per network read, handing over every body byte
the read brought), and keep-alive reuse.

What it covers: HTTP/1.1 over TCP or TLS (the shared TLS context), request bodies of
known length, responses framed by ``Transfer-Encoding: chunked``, ``Content-Length``
or the connection's close, interim 1xx responses, keep-alive with stale-connection
detection, and a bound on connections. What it does not: proxies, HTTP/2, compressed
bodies (it asks for ``accept-encoding: identity``). It is an ``httpx.AsyncBaseTransport``
and raises httpx's exception types, so callers and the classifier see the same
faults as with httpx's pool; pass ``transport=httpx.AsyncHTTPTransport(...)`` to
``open_switcher`` to use httpx's pool instead.

A request is sent at most once unless the provider cannot have read it: an idle
connection the server closed is noticed before reuse, and a reused connection whose
write fails (the request never left whole) is replaced once. A reused connection
dropped after the request went out fails as the provider's fault, and the engine's
budgets decide whether to send it again.

Deadlines are the caller's trio cancel scopes; a cancelled read closes its
connection (its state is unknown), it is never reused.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping

import attrs
import httpx
import trio

from oswitch.transport import request_head, wire
from oswitch.transport.connection import SMALL_BODY_BYTES, Connection
from oswitch.transport.response import PoolResponse as _Response

DEFAULT_POOL_TIMEOUT_S = 5.0
# Idle connections older than this are not reused: NATs and load balancers drop idle
# flows silently (Azure after 4 min, AWS after 350 s), and a request sent on one would
# meet only the first-token deadline.
KEEPALIVE_EXPIRY_S = 30.0
# Distinct request heads (method, URL, headers) a pool keeps validated; a target has one
# or two (its key and URL), a borrowed pool a few more. Past it the kept ones are dropped.
MAX_KEPT_HEADS = 64

Origin = tuple[str, str, int]  # scheme, host, port


@attrs.frozen(kw_only=True)
class PoolStatistics:
    """Connections open (in use and idle), idle ones, and requests sent."""

    connections: int
    idle: int
    requests: int


class HTTP1Pool(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 connections to any origin, at most ``max_connections`` in use.

    A request waits up to ``pool_timeout_s`` for a free connection, then raises
    ``httpx.PoolTimeout``. Every other wait is bounded only by the caller's cancel
    scopes.
    """

    def __init__(
        self,
        *,
        max_connections: int,
        ssl_context: ssl.SSLContext,
        pool_timeout_s: float = DEFAULT_POOL_TIMEOUT_S,
    ) -> None:
        self._slots = trio.Semaphore(max_connections)
        self._max_idle = max_connections
        self._ssl_context = ssl_context
        self._pool_timeout_s = pool_timeout_s
        self._idle: dict[Origin, list[Connection]] = {}
        self._in_use = 0
        self._requests = 0
        self._closed = False
        # Validated request heads (up to Content-Length) by (method, target, host, headers).
        self._heads: dict[tuple[bytes, bytes, bytes, tuple[tuple[bytes, bytes], ...]], bytes] = {}
        # What post() keeps of each (URL, headers): the URL, its origin and validated head.
        self._posts: dict[
            tuple[int, tuple[tuple[str, str], ...]], tuple[httpx.URL, Origin, bytes]
        ] = {}

    # ---- the transport API -------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` (its body read first); return once the response head is in.

        Raises httpx's ConnectError, WriteError, ReadError, RemoteProtocolError,
        LocalProtocolError or PoolTimeout.
        """
        body = await request.aread()
        headers = [
            (name, value)
            for name, value in request.headers.raw
            if name.lower() not in (b"host", b"content-length", b"transfer-encoding")
        ]
        response = await self.request(request.method.encode(), request.url, headers, body)
        response.request = request
        return response

    async def post(self, url: httpx.URL, headers: Mapping[str, str], body: bytes) -> httpx.Response:
        """POST ``body`` to ``url`` with ``headers`` (Host and Content-Length are added).

        Returns once the response head is in; the caller reads the body from
        ``response.stream`` (or ``aread()``) and must ``aclose()`` the response.
        Raises as :meth:`handle_async_request`.
        """
        if self._closed:
            raise httpx.LocalProtocolError("the connection pool is closed")
        # A target posts the same URL object with the same headers every time: its
        # origin and validated head are kept (the URL too, so its id is not reused).
        key = (id(url), tuple(headers.items()))
        kept = self._posts.get(key)
        if kept is None or kept[0] is not url:
            encoded: list[tuple[bytes, bytes]] = []
            for name, value in headers.items():
                try:
                    encoded.append((name.encode("latin-1"), value.encode("latin-1")))
                except UnicodeEncodeError:
                    # Never echo the value (or a character of it): it may be a key.
                    raise httpx.LocalProtocolError(
                        f"invalid request header {name!r}: not latin-1 text"
                    ) from None
            kept = (url, _origin(url), self._head_fields(b"POST", url, encoded))
            if len(self._posts) >= MAX_KEPT_HEADS:
                self._posts.clear()
            self._posts[key] = kept
        _, origin, fields = kept
        return await self._send(
            b"POST", origin, fields + request_head.content_length_field(len(body)), body
        )

    async def request(
        self,
        method: bytes,
        url: httpx.URL,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes,
    ) -> httpx.Response:
        """Send one request; see :meth:`post`."""
        if self._closed:
            raise httpx.LocalProtocolError("the connection pool is closed")
        length_field = request_head.content_length_field(len(body))
        head = self._head_fields(method, url, headers) + length_field
        return await self._send(method, _origin(url), head, body)

    async def _send(
        self, method: bytes, origin: Origin, head: bytes, body: bytes
    ) -> httpx.Response:
        await self._acquire()
        connection: Connection | None = None
        try:
            if self._closed:  # closed while this request waited for a slot
                raise httpx.LocalProtocolError("the connection pool is closed")
            connection = self._checkout(origin)
            if connection is not None:
                try:
                    answer = await self._exchange(connection, method, head, body)
                except httpx.WriteError:
                    if connection.answered:
                        raise
                    # The request never left whole (the server reset the kept-alive
                    # connection as we reused it), so the provider cannot have acted on
                    # it: it goes once more, on a new connection. Any failure once the
                    # request was out is the engine's to retry or not, by its budgets:
                    # the provider may have read it.
                    connection.close()
                    connection = None
            if connection is None:
                connection = await self._connect(origin)
                answer = await self._exchange(connection, method, head, body)
        except BaseException:
            if connection is not None:
                connection.close()
            self._release()
            raise
        stream = _Body(self, connection, origin, answer.framing)  # owns the connection and slot now
        try:
            return _Response.of_pool(
                answer.status,
                answer.headers,
                stream,
                http_version=answer.http_version,
                reason=answer.reason,
            )
        except BaseException:
            stream.abandon()
            raise

    def _head_fields(
        self, method: bytes, url: httpx.URL, headers: Iterable[tuple[bytes, bytes]]
    ) -> bytes:
        """The request head up to its Content-Length, validated once per distinct head
        (a target sends the same headers every time); raises httpx.LocalProtocolError
        for a bad one, every time (a refusal is not kept)."""
        key = (method, url.raw_path, url.netloc, tuple(headers))
        fields = self._heads.get(key)
        if fields is None:
            try:
                fields = request_head.request_head_fields(*key)
            except wire.LocalProtocolError as exc:
                raise httpx.LocalProtocolError(str(exc)) from None
            if len(self._heads) >= MAX_KEPT_HEADS:
                self._heads.clear()
            self._heads[key] = fields
        return fields

    async def _exchange(
        self, connection: Connection, method: bytes, head: bytes, body: bytes
    ) -> wire.Head:
        """Send the request and read the response head. Raises httpx.WriteError only
        when the request did not leave whole and no answer came."""
        self._requests += 1
        connection.answered = False
        if len(body) < SMALL_BODY_BYTES:
            await connection.send(head, body)
            return await connection.read_head(method)
        # A server may answer from the head alone (413, 401) and stop reading the body:
        # read while sending, so that its reply wins over the write error it causes.
        sent = False
        write_error: httpx.WriteError | None = None

        async def send() -> None:
            nonlocal sent, write_error
            try:
                await connection.send(head, body)
                sent = True
            except httpx.WriteError as exc:
                write_error = exc
                # The write may have failed at once (a reset socket): checkpoint anyway.
                await trio.lowlevel.checkpoint()

        answer = None
        read_error: httpx.HTTPError | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            try:
                answer = await connection.read_head(method)
            except httpx.HTTPError as exc:
                read_error = exc
            nursery.cancel_scope.cancel()
        if answer is None:
            error = write_error or read_error
            assert error is not None  # the read either answered or raised
            raise error
        if not sent:  # the server stopped reading mid-body: never reuse this connection
            framing = attrs.evolve(answer.framing, keep_alive=False)
            answer = attrs.evolve(answer, framing=framing)
        return answer

    async def aclose(self) -> None:
        """Close every idle connection; connections in use close when their reply ends."""
        self._closed = True
        self._heads.clear()  # they hold the targets' keys
        self._posts.clear()
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        await trio.lowlevel.checkpoint()

    def statistics(self) -> PoolStatistics:
        """Never raises."""
        idle = sum(len(c) for c in self._idle.values())
        return PoolStatistics(connections=self._in_use + idle, idle=idle, requests=self._requests)

    # ---- connections ---------------------------------------------------------------

    # The fast path takes a free slot without a checkpoint (once per request): the
    # request is sent next, which does checkpoint.
    async def _acquire(self) -> None:  # noqa: ASYNC910 (the send after it checkpoints)
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            with trio.move_on_after(self._pool_timeout_s):
                await self._slots.acquire()
                self._in_use += 1
                return
            raise httpx.PoolTimeout(
                f"no free connection within {self._pool_timeout_s:.1f}s"
            ) from None
        self._in_use += 1

    def _release(self) -> None:
        self._in_use -= 1
        self._slots.release()

    def _checkout(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        now = trio.current_time()
        while idle:
            connection = idle.pop()
            if now - connection.idle_since < KEEPALIVE_EXPIRY_S and connection.reusable():
                return connection
            connection.close()  # the server closed it while idle (or sent junk)
        return None

    def give_back(self, connection: Connection, origin: Origin, *, reusable: bool) -> None:
        """A reply ended: keep its connection for the next request, or close it."""
        self._release()
        idle = self._idle.setdefault(origin, [])
        if reusable and not self._closed and len(idle) < self._max_idle:
            connection.idle_since = trio.current_time()
            idle.append(connection)
        else:
            connection.close()

    def discard(self, connection: Connection) -> None:
        """A reply was abandoned or broke: its connection cannot be reused."""
        connection.close()
        self._release()

    async def _connect(self, origin: Origin) -> Connection:
        scheme, host, port = origin
        try:
            tcp = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise httpx.ConnectError(
                f"cannot connect to {host}:{port}: {type(exc).__name__}: {exc}"
            ) from exc
        if scheme != "https":
            return Connection(tcp, tcp.socket)
        tls = trio.SSLStream(tcp, self._ssl_context, server_hostname=host, https_compatible=True)
        try:
            await tls.do_handshake()
        except BaseException as exc:
            tcp.socket.close()
            if isinstance(exc, (trio.BrokenResourceError, OSError)):
                cause = exc.__cause__ or exc
                raise httpx.ConnectError(
                    f"TLS handshake with {host}:{port} failed: {type(cause).__name__}: {cause}"
                ) from exc
            raise
        return Connection(tls, tcp.socket)


class _Body(httpx.AsyncByteStream):
    """A response body, decoded from its framing, one network read per piece.

    Iterating yields the body's bytes as they arrive (every complete or partial
    chunk a read brings, joined), then gives the connection back to the pool.
    Any failure, a cancelled read or an early ``aclose`` closes the connection.
    """

    def __init__(
        self, pool: HTTP1Pool, connection: Connection, origin: Origin, framing: wire.Framing
    ) -> None:
        self._pool = pool
        self._connection: Connection | None = connection
        self._origin = origin
        self._keep_alive = framing.keep_alive
        self._decoder = wire.decoder_for(framing)
        if framing.kind == "none":
            self._finish()

    def __aiter__(self) -> _Body:
        return self

    # A hot per-piece path: a piece decoded from bytes already read is returned
    # without another read, so without a checkpoint. The read that brought those
    # bytes checkpointed, and one read holds at most READ_SIZE bytes: a consumer
    # cannot go on long without waiting on the next read, which checkpoints.
    async def __anext__(self) -> bytes:
        connection = self._connection
        if connection is None:
            raise StopAsyncIteration
        try:
            buffer = connection.buffer
            while True:
                if buffer:
                    data, buffer, done = self._decoder.decode(buffer)
                    if done:
                        connection.buffer = buffer
                        self._finish()
                        break
                    if data:
                        connection.buffer = buffer
                        return data  # noqa: ASYNC910 (bytes already read; see above)
                received = await connection.receive()
                if not received:
                    self._decoder.end_of_stream()
                    data, connection.buffer = b"", b""
                    self._finish()
                    break
                buffer = buffer + received if buffer else received
        except wire.RemoteProtocolError as exc:
            self.abandon()
            raise httpx.RemoteProtocolError(str(exc)) from exc
        except BaseException:
            self.abandon()
            raise
        if not data:
            raise StopAsyncIteration
        return data  # noqa: ASYNC910 (bytes already read; see above)

    @property
    def ended(self) -> bool:
        """Whether nothing is left to read: the body was read to its end (its connection
        went back to the pool) or abandoned. The read that brought a body's last bytes
        ends it, even when it also brought the last data the reader has seen."""
        return self._connection is None

    async def aclose(self) -> None:
        """Stop reading: a body not read to its end closes its connection."""
        self.abandon()
        await trio.lowlevel.checkpoint_if_cancelled()

    def _finish(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool.give_back(connection, self._origin, reusable=self._keep_alive)

    def abandon(self) -> None:
        """Close the connection now unless the body was read to its end (synchronous)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool.discard(connection)


def body_ended(response: httpx.Response) -> bool:
    """Whether ``response`` is one of this pool's and its body is read to its end (so
    there is nothing to drain and nothing to close: its connection is back in the pool,
    or closed). False for any other response."""
    stream = response.stream
    return isinstance(stream, _Body) and stream.ended


def _origin(url: httpx.URL) -> Origin:
    scheme = url.scheme
    if scheme not in ("http", "https"):
        raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
    port = url.port or (443 if scheme == "https" else 80)
    return scheme, url.host, port
