"""The sidecar's accept loop: oswitch's own HTTP/1.1 server on connections it bounds.

Each accepted connection is served by :class:`~oswitch.sidecar.connection.HttpConnection`
(the app runs in the connection's task; no task or channel per request) through
:class:`BoundedWriteStream`, whose writes give up after ``write_timeout_s``: the socket
is closed, the connection's reader sees the client gone, and the request is cancelled
(the ``oswitch.disconnect`` extension). Connections past ``max_connections`` get a
canned 503 and are closed at once.

A response's head goes out with its first body bytes, and the app may *cork* its
connection (:class:`~oswitch.sidecar.responses.OneWrite`) so that what it sends in a
block goes out in one write: the events decoded from one upstream read, or a stream's
last events, ``[DONE]`` and the chunked terminator together. Each write costs a
syscall and a write deadline (docs/bench.md, "Speed at the floor").
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import secrets
import socket
from collections.abc import Callable
from functools import partial

import attrs
import trio

from oswitch.sidecar.closing import ConnectionClosing
from oswitch.sidecar.connection import HttpConnection
from oswitch.sidecar.responses import CONNECTION, ASGIApp, error_type
from oswitch.transport import socket_io

log = logging.getLogger("oswitch.sidecar")
http_log = logging.getLogger("oswitch.sidecar.http")

# Longest the canned 503 for a connection past the cap may take to write: the socket is
# new, so the write fits the kernel buffer at once unless something is badly wrong.
REFUSAL_WRITE_S = 1.0
# Bytes asked of the socket per read.
RECEIVE_BYTES = 65536


@attrs.frozen(kw_only=True)
class HttpSettings:
    """Where the server listens and how long it waits: ``header_timeout_s`` for each
    request head (and between requests on a kept connection), ``graceful_timeout_s``
    for requests in flight at shutdown."""

    host: str = "127.0.0.1"
    port: int = 0
    backlog: int = 1024
    header_timeout_s: float | None = 10.0
    graceful_timeout_s: float = 30.0


@attrs.frozen(kw_only=True)
class ConnectionLimits:
    """What one client connection may take: writes, and how many connections at once."""

    write_timeout_s: float
    max_connections: int


@attrs.frozen(kw_only=True)
class ConnectionStatistics:
    """Connections being served, and counts of those refused at the cap and of those
    closed because the client stopped reading."""

    open: int
    refused: int
    write_timeouts: int


class BoundedWriteStream(trio.abc.HalfCloseableStream):
    """A client's socket stream whose every write must finish within ``write_timeout_s``.

    Past it the socket is closed (a reader blocked on it wakes with
    ``ClosedResourceError``) and the write raises ``BrokenResourceError``: the client
    is taken as gone. ``on_timeout`` is called once.

    Reads and writes go to the socket directly (:mod:`oswitch.transport.socket_io`:
    one schedule point per read, none for a write that fits), with the errors trio's
    ``SocketStream`` would raise (``BrokenResourceError``, or ``ClosedResourceError`` on
    a socket already closed), without its per-call conflict detector and error
    translation: one connection has one reader task and one writing task at a time.
    """

    def __init__(
        self,
        stream: trio.SocketStream,
        *,
        write_timeout_s: float,
        on_timeout: Callable[[], None],
    ) -> None:
        self._stream = stream
        self._socket = stream.socket
        self._write_timeout_s = write_timeout_s
        self._on_timeout = on_timeout
        self._socket_emptied = False  # the last read took all the socket held

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        # Nearly every write fits the socket's buffer at once and needs no deadline: it is
        # tried first, without the cancel scope a waiting write needs. A cancelled task
        # sends nothing. A whole write is no schedule point: after it the connection
        # reads (and waits), or the stream waits on its upstream; a pipelined request
        # checkpoints as its head is taken from the buffer.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            sent = socket_io.write_now(self._socket, data)
        except OSError as exc:
            await trio.lowlevel.cancel_shielded_checkpoint()  # as a failed trio send does
            raise _stream_error(exc) from None
        if sent == len(data):
            return
        with trio.move_on_after(self._write_timeout_s) as scope:
            try:
                await socket_io.write_rest(self._socket, data, sent)
            except OSError as exc:
                raise _stream_error(exc) from None
        if scope.cancelled_caught:
            self._on_timeout()
            await trio.aclose_forcefully(self._stream)
            raise trio.BrokenResourceError(
                f"the client took no bytes for {self._write_timeout_s:g} s"
            )

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        # A read that got fewer bytes than it asked for emptied the socket: the next one
        # waits for bytes before it reads (a client sends its next request only once it
        # has this one's answer), instead of failing with EAGAIN first.
        max_bytes = max_bytes or RECEIVE_BYTES
        try:
            if self._socket_emptied:
                data = await socket_io.receive_when_readable(self._socket, max_bytes)
            else:
                data = await socket_io.receive(self._socket, max_bytes)
        except OSError as exc:
            raise _stream_error(exc) from None
        self._socket_emptied = 0 < len(data) < max_bytes
        return data

    async def aclose(self) -> None:
        await self._stream.aclose()


def _stream_error(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    """The stream error trio's SocketStream raises for ``exc`` (never its message: the
    peer's address may be in it)."""
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("this socket was already closed")
    return trio.BrokenResourceError(
        f"socket connection broken: {errno.errorcode.get(exc.errno or 0, 'error')}"
    )


def _refusal() -> bytes:
    body = json.dumps(
        {
            "error": {
                "message": "too many connections; retry later",
                "type": "overloaded",
                "param": None,
                "code": "too_many_connections",
            }
        }
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "retry-after: 1\r\n"
        f"x-oswitch-request-id: req_{secrets.token_hex(10)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class ConnectionGate:
    """Counts the connections being served and serves each with oswitch's HTTP/1.1."""

    def __init__(self, app: ASGIApp, settings: HttpSettings, limits: ConnectionLimits) -> None:
        self._app = app
        self._settings = settings
        self._limits = limits
        self.closing = ConnectionClosing()
        self._open = 0
        self._refused = 0
        self._write_timeouts = 0
        self._saturated = False  # refusing since the gate last had room: logged once

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(
            open=self._open, refused=self._refused, write_timeouts=self._write_timeouts
        )

    def _write_timed_out(self) -> None:
        self._write_timeouts += 1
        log.info(
            "client_write_timeout",
            extra={"note": f"no bytes taken for {self._limits.write_timeout_s:g} s"},
        )

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one accepted connection, or refuse it at once when the gate is full.

        Blocks for the connection's life; trio.serve_listeners closes ``stream``.
        """
        if self._open >= self._limits.max_connections:
            self._refused += 1
            if not self._saturated:
                self._saturated = True
                log.warning(
                    "max_connections_reached",
                    extra={"note": f"refusing new connections past {self._open} with 503"},
                )
            refused = (trio.BrokenResourceError, trio.ClosedResourceError)
            with trio.move_on_after(REFUSAL_WRITE_S), contextlib.suppress(*refused):
                await stream.send_all(_refusal())
            # send_all may have failed at once on a socket the peer already reset.
            await trio.lowlevel.checkpoint()
            return
        self._open += 1
        try:
            bounded = BoundedWriteStream(
                stream,
                write_timeout_s=self._limits.write_timeout_s,
                on_timeout=self._write_timed_out,
            )
            connection = HttpConnection(
                bounded,
                self._app,
                header_timeout_s=self._settings.header_timeout_s,
                closing=self.closing,
                client=_address(stream.socket, peer=True),
                server=_address(stream.socket, peer=False),
            )
            # The app's tasks are spawned from this one, so they see their connection.
            CONNECTION.set(connection)
            try:
                await connection.serve()
            except Exception as exc:
                # A fault of ours in one connection ends that connection (trio closes
                # the stream), never the server and its other connections. The type
                # only: a message may quote what the client sent.
                log.error("connection_failed", extra={"note": error_type(exc)})
                await trio.lowlevel.checkpoint()  # it may have failed before any
        finally:
            self._open -= 1
            self._saturated = False


def _address(sock: trio.socket.SocketType, *, peer: bool) -> tuple[str, int] | None:
    try:
        address = sock.getpeername() if peer else sock.getsockname()
    except OSError:  # the peer already left
        return None
    return str(address[0]), int(address[1])


async def open_listeners(settings: HttpSettings) -> list[trio.SocketListener]:
    """Bind ``settings.host``:``settings.port`` and listen: one socket, on the first
    address the host resolves to (so port 0 means one free port). Raises OSError when
    the address cannot be bound or the host does not resolve."""
    infos = await trio.socket.getaddrinfo(
        settings.host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    address = infos[0][4]
    return await trio.open_tcp_listeners(
        settings.port, host=str(address[0]), backlog=settings.backlog
    )


def bound_port(listener: trio.SocketListener) -> int:
    address = listener.socket.getsockname()
    return int(address[1])


async def serve_connections(
    app: ASGIApp,
    settings: HttpSettings,
    limits: ConnectionLimits,
    *,
    shutdown_trigger: trio.Event,
    task_status: trio.TaskStatus[tuple[int, ConnectionGate]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``settings``' address until ``shutdown_trigger`` is set.

    Reports ``(bound port, gate)`` once listening. On shutdown it stops accepting
    (the listening socket is closed), closes idle keep-alive connections, and gives
    connections in flight ``settings.graceful_timeout_s`` seconds before cancelling
    them; then it returns. Raises OSError when the address cannot be bound.
    """
    listeners = await open_listeners(settings)
    gate = ConnectionGate(app, settings, limits)
    for listener in listeners:
        http_log.info(
            "Running on http://%s:%d (CTRL + C to quit)",
            *_host_and_port(listener),
        )
    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as acceptors:
            acceptors.start_soon(
                partial(trio.serve_listeners, gate.handle, listeners, handler_nursery=connections)
            )
            task_status.started((bound_port(listeners[0]), gate))
            await shutdown_trigger.wait()
            acceptors.cancel_scope.cancel()
        # Idle connections close now, the rest get the grace.
        gate.closing.close_idle()
        connections.cancel_scope.deadline = trio.current_time() + settings.graceful_timeout_s


def _host_and_port(listener: trio.SocketListener) -> tuple[str, int]:
    address = listener.socket.getsockname()
    host = str(address[0])
    if listener.socket.family == socket.AF_INET6:
        host = f"[{host}]"
    return host, int(address[1])
