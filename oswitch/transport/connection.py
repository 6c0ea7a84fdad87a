"""One connection of oswitch's HTTP/1.1 pool (:mod:`oswitch.transport.pool`): its socket,
the bytes read past the last response, and the pool's reads and writes on it."""

from __future__ import annotations

import select

import httpx
import trio

from oswitch.transport import socket_io, wire

READ_SIZE = 64 * 1024
# A request this small goes out in one write, head and body together.
SMALL_BODY_BYTES = 64 * 1024


class Connection:
    """One socket (plain or TLS) and the bytes read past the last response.

    A plain TCP connection reads and writes its socket directly
    (:mod:`~oswitch.transport.socket_io`): trio's SocketStream adds a conflict detector
    and a generator context manager (its error translation) to every call, trio's
    socket a wrapper and a context manager of its own, and one connection has one
    request at a time. The errors are of the same types, ``httpx.WriteError`` /
    ``httpx.ReadError``, their text the socket's OSError (``ConnectionResetError:
    [Errno 104] ...``) rather than trio's wording."""

    __slots__ = ("_poller", "answered", "buffer", "direct", "idle_since", "socket", "stream")

    def __init__(self, stream: trio.abc.Stream, socket: trio.socket.SocketType) -> None:
        self.stream = stream
        self.socket = socket
        self.direct = isinstance(stream, trio.SocketStream)  # else TLS (or a test's stream)
        self.buffer = b""
        self.idle_since = 0.0
        self.answered = False  # a byte of a response to the latest request arrived
        self._poller: select.poll | None = None

    def reusable(self) -> bool:
        """Whether the connection may carry another request: nothing left over, still
        open, and nothing to read (an idle connection that is readable was closed by
        the peer, or sent junk). One ``poll`` kept per connection: trio's
        ``is_readable`` builds and registers a new one on every call."""
        if self.buffer or self.socket.fileno() == -1:
            return False
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(self.socket.fileno(), select.POLLIN)
        return not self._poller.poll(0)

    def close(self) -> None:
        """Close at once, without a TLS goodbye (synchronous, so safe when cancelled)."""
        self.socket.close()

    async def send(self, head: bytes, body: bytes) -> None:
        """Send the request; httpx.WriteError means some of it never left."""
        try:
            if len(body) < SMALL_BODY_BYTES:
                await self._send_all(head + body)
            else:  # a large body goes out after the head, uncopied
                await self._send_all(head)
                await self._send_all(body)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise httpx.WriteError(f"sending the request failed: {reason(exc)}") from exc

    async def _send_all(self, data: bytes) -> None:
        if not self.direct:
            await self.stream.send_all(data)
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            sent = socket_io.write_now(self.socket, data)
        except OSError:
            await trio.lowlevel.cancel_shielded_checkpoint()  # as a failed trio send does
            raise
        if sent < len(data):
            await socket_io.write_rest(self.socket, data, sent)
        # A schedule point after the write, as trio's send has: the answer's first read
        # then comes a round later, with more of it in. Without it, a stream of events
        # written one by one is read in more pieces (docs/bench.md, "Run of 3 December,
        # night"): cheaper for a plain request, dearer for a stream.
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def receive(self) -> bytes:
        data: bytes | bytearray
        try:
            if self.direct:
                data = await socket_io.receive(self.socket, READ_SIZE)
            else:
                data = await self.stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise httpx.ReadError(f"reading the response failed: {reason(exc)}") from exc
        return data if type(data) is bytes else bytes(data)  # TLS reads give a bytearray

    async def read_head(self, method: bytes) -> wire.Head:
        """Read the final response head (interim 1xx heads skipped).

        Always reads (and so checkpoints) at least once: it is only called right after
        the request was sent, on a connection with nothing buffered (a connection with
        bytes left over is never reused)."""
        parser = wire.HeadParser(method)
        buffer = self.buffer
        try:
            while True:
                if buffer:  # nothing to parse before the first read (see above)
                    head, buffer = parser.parse(buffer)
                    if head is not None:
                        self.buffer = buffer
                        return head  # noqa: ASYNC910 (never on the first pass: see above)
                data = await self.receive()
                if not data:
                    parser.end_of_stream(buffer)
                self.answered = True
                buffer += data
        except wire.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc


def reason(exc: BaseException) -> str:
    """``exc`` as ``Type: message`` (the type alone without a message)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
