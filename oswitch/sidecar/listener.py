"""The sidecar's accept loop: hypercorn's HTTP/1.1 protocol on connections oswitch bounds.

``hypercorn.trio.serve`` builds its own listeners and offers neither a connection cap
nor a write limit, and its ``TCPServer`` writes with ``send_all`` inside a *shielded*
cancel scope: a client that stops reading blocks that write, and with it the request
behind it, for as long as the client keeps its socket open — no cancellation reaches
it. So the sidecar accepts connections itself and gives each one to hypercorn's
``TCPServer`` (the same protocol code hypercorn.trio.serve runs) through
:class:`BoundedWriteStream`, whose writes give up after ``write_timeout_s``: the
socket is closed, hypercorn sees the client gone, and the app cancels the request.
A deadline set inside a shielded scope still fires, which is what makes this work.
Connections past ``max_connections`` get a canned 503 and are closed at once.

hypercorn writes every ASGI message to the socket as it comes (a response's head, its
body, and the end of the body each on their own). The app may *cork* its connection
(:class:`~oswitch.sidecar.responses.OneWrite`) so that what it sends in a block goes
out in one write: head and body of a JSON reply, or a stream's last events, ``[DONE]``
and the chunked terminator together. Each write costs a syscall, hypercorn's lock and
shielded scope and our write deadline (docs/bench.md, "Speed at the floor").
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import socket
from collections.abc import Callable
from functools import partial

import attrs
import hypercorn
import trio
from hypercorn.events import Event, RawData, Updated
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ASGIFramework, ConnectionState
from hypercorn.utils import wrap_app

from oswitch.sidecar.responses import CONNECTION

log = logging.getLogger("oswitch.sidecar")
http_log = logging.getLogger("oswitch.sidecar.http")

# Longest the canned 503 for a connection past the cap may take to write: the socket is
# new, so the write fits the kernel buffer at once unless something is badly wrong.
REFUSAL_WRITE_S = 1.0


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
    ``ClosedResourceError``) and the write raises ``BrokenResourceError``, which
    hypercorn treats as the client having gone. ``on_timeout`` is called once.
    """

    def __init__(
        self,
        stream: trio.SocketStream,
        *,
        write_timeout_s: float,
        on_timeout: Callable[[], None],
    ) -> None:
        self._stream = stream
        self._write_timeout_s = write_timeout_s
        self._on_timeout = on_timeout

    @property
    def socket(self) -> trio.socket.SocketType:
        # hypercorn's TCPServer reads the peer and local addresses from it.
        return self._stream.socket

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        with trio.move_on_after(self._write_timeout_s) as scope:
            await self._stream.send_all(data)
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
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()


class _PromptCloseTCPServer(TCPServer):
    """hypercorn's connection server, closing the socket as soon as the client has gone.

    hypercorn's own waits for its keep-alive idle timer even after the client closed
    (the timer task outlives the read loop), so every keep-alive client that hangs up
    after its answer holds a descriptor in CLOSE-WAIT for ``keep_alive_timeout``.
    """

    _client_gone = False
    # While corked: the task that corked, and what it wrote meanwhile (to go out as one).
    _corked_by: trio.lowlevel.Task | None = None
    _held: list[bytes]

    def cork(self) -> None:
        """Hold this task's writes back until :meth:`uncork` (which sends them as one)."""
        self._corked_by = trio.lowlevel.current_task()
        self._held = []

    async def uncork(self) -> None:
        """Write what was held, in one write, and stop holding. Shielded: hypercorn's
        protocol state already counts those bytes as sent, so they must go out even if
        the app is being cancelled (each write is bounded by ``write_timeout_s``)."""
        held = b"".join(self._held) if self._corked_by is not None else b""
        self._corked_by = None
        self._held = []
        with trio.CancelScope(shield=True):
            if held:
                await super().protocol_send(RawData(data=held))
            else:
                await trio.lowlevel.checkpoint()

    async def _read_data(self) -> None:
        await super()._read_data()
        # The client is gone and nothing more will be read: no idle timer to wait for.
        self._client_gone = True
        await self.idle_task.stop()

    async def protocol_send(self, event: Event) -> None:
        if self._corked_by is not None:
            if isinstance(event, RawData) and self._corked_by is trio.lowlevel.current_task():
                # Held for uncork, which writes (and checkpoints); a checkpoint per held
                # write would cost a scheduling round each, the very cost corking removes.
                self._held.append(event.data)
                return  # noqa: ASYNC910
            if not isinstance(event, Updated):
                # The socket is about to close (a reply with Connection: close) or another
                # task writes: what was held goes first.
                await self.uncork()
        if self._client_gone and isinstance(event, Updated) and event.idle:
            # An answer finished after the client left: nothing to keep alive for.
            await trio.lowlevel.checkpoint()
            return
        await super().protocol_send(event)


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
    """Counts the connections being served and hands each to hypercorn's protocol."""

    def __init__(
        self,
        app: ASGIFramework,
        config: hypercorn.Config,
        limits: ConnectionLimits,
        context: WorkerContext,
    ) -> None:
        self._app = wrap_app(app, config.wsgi_max_body_size, "asgi")
        self._config = config
        self._limits = limits
        self._context = context
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
            server = _PromptCloseTCPServer(
                self._app,
                self._config,
                self._context,
                ConnectionState({}),
                bounded,  # type: ignore[arg-type]  # hypercorn types it as an SSLStream
            )
            # The app's tasks are spawned from this one, so they see their connection.
            CONNECTION.set(server)
            await server
        finally:
            self._open -= 1
            self._saturated = False


def open_listeners(config: hypercorn.Config) -> list[trio.SocketListener]:
    """Bind ``config.bind`` the way hypercorn does (its socket options) and listen."""
    listeners = []
    for sock in config.create_sockets().insecure_sockets:
        sock.listen(config.backlog)
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
    return listeners


def bound_port(listener: trio.SocketListener) -> int:
    address = listener.socket.getsockname()
    return int(address[1])


async def serve_connections(
    app: ASGIFramework,
    config: hypercorn.Config,
    limits: ConnectionLimits,
    *,
    shutdown_trigger: trio.Event,
    task_status: trio.TaskStatus[tuple[int, ConnectionGate]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``config.bind`` until ``shutdown_trigger`` is set.

    Reports ``(bound port, gate)`` once listening. On shutdown it stops accepting
    (the listening socket is closed), closes idle keep-alive connections, and gives
    connections in flight ``config.graceful_timeout`` seconds before cancelling
    them; then it returns. Raises OSError when the address cannot be bound.
    """
    listeners = open_listeners(config)
    context = WorkerContext(None)
    gate = ConnectionGate(app, config, limits, context)
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
        # As hypercorn.trio.serve does: idle connections close now, the rest get the grace.
        await context.terminated.set()
        connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout


def _host_and_port(listener: trio.SocketListener) -> tuple[str, int]:
    address = listener.socket.getsockname()
    host = str(address[0])
    if listener.socket.family == socket.AF_INET6:
        host = f"[{host}]"
    return host, int(address[1])
