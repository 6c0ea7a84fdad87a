"""One client connection of the sidecar's own HTTP/1.1 server, under trio.

:class:`HttpConnection` reads a request head, runs the ASGI app for it *in the
connection's own task* (no task or channel per request), writes the response
and, when the connection may be kept, reads the next head. What it reads and writes is
framed by the sans-IO :mod:`oswitch.sidecar.h1`.

- One reader task per connection does all the reading into a bounded buffer. When the
  client leaves (or a write to it times out: ``listener.BoundedWriteStream``) it
  calls the request's ``oswitch.disconnect`` callback, which cancels the scope the
  request runs in (``oswitch.request_scope``, also its header timeout): a request
  needs no task or scope of its own. Bytes of a pipelined next request are kept.
- The app's ``receive`` hands the request body over as it arrives (``100 Continue``
  first when the client waits for it; one empty message for a request without a body);
  once the body is in, it returns ``http.disconnect`` when the client leaves or the
  response has ended (ASGI's rule, for apps that watch ``receive``).
- The app's ``send`` holds a response's head until its first body bytes, so a head and
  its body (or a stream's head and first events) leave in one write; the last body
  message and the chunked terminator too. A task may :meth:`cork` the connection to
  send several messages in one write (:class:`~oswitch.sidecar.responses.OneWrite`).
- A head that breaks HTTP/1.1 is answered with an OpenAI-shaped error naming what is
  wrong (400, 431, 501 or 505) and the connection closed. A response sent before its
  request's body was read (a 401, a 413) is followed by a bounded lingering close.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import trio

from oswitch.sidecar.closing import ConnectionClosing
from oswitch.sidecar.h1 import (
    MAX_HEAD_BYTES,
    BadRequest,
    ChunkedBody,
    RequestHead,
    ResponseFraming,
    asgi_scope,
    content_length,
    find_head_end,
    parse_request_head,
    refusal,
    response_head,
)
from oswitch.sidecar.responses import (
    BODY_IN_HAND_EXTENSION,
    DISCONNECT_EXTENSION,
    REQUEST_SCOPE_EXTENSION,
    ASGIApp,
    Message,
)
from oswitch.sidecar.upgrade import refuse_websocket

log = logging.getLogger("oswitch.sidecar")


RECEIVE_BYTES = 65536
# The most the reader holds unconsumed (a body being read, a pipelined next request);
# past it, it stops reading until the request takes bytes off the buffer.
MAX_BUFFERED_BYTES = MAX_HEAD_BYTES + RECEIVE_BYTES
# A lingering close (after a response that left its request body unread) reads and
# drops at most this much, for at most this long.
LINGER_BYTES = 8 * 1024 * 1024
LINGER_S = 2.0
DISCONNECT: Message = {"type": "http.disconnect"}


class HttpConnection:
    """Serves HTTP/1.1 requests on one accepted connection with an ASGI app.

    ``stream`` is the client's socket stream (its writes bounded by the caller);
    ``header_timeout_s`` bounds the wait for each request's head, from the connection's
    start or the end of the previous response (the keep-alive limit too).
    """

    def __init__(
        self,
        stream: trio.abc.HalfCloseableStream,
        app: ASGIApp,
        *,
        header_timeout_s: float | None,
        closing: ConnectionClosing,
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
    ) -> None:
        self._stream = stream
        self._app = app
        self._header_timeout_s = header_timeout_s
        self._closing = closing
        self._client = client
        self._server = server
        self._buffer = bytearray()
        self.client_gone = False  # EOF or an error on the socket: nothing more is read
        # The reader task parks nobody but itself: consumers wait on ``_arrived`` for
        # bytes (or the client's going), the reader on ``_drained`` for room.
        self._arrived = trio.lowlevel.ParkingLot()
        self._drained = trio.lowlevel.ParkingLot()
        self._on_disconnect: Callable[[], None] | None = None
        self._write_failed = False
        # The task holding writes back (cork), and what it wrote meanwhile.
        self._corked_by: trio.lowlevel.Task | None = None
        self._held: list[bytes] = []
        self._request_scope: trio.CancelScope | None = None  # the request's, once its head is in
        self._begin(None)

    def _begin(self, head: RequestHead | None) -> None:
        """Reset the per-request state for ``head``."""
        self._head = head
        self._body_left = head.length if head is not None and head.body == "length" else 0
        self._chunked = ChunkedBody() if head is not None and head.body == "chunked" else None
        self._body_done = head is None or head.body == "none"
        self._body_given = head is None or head.upgrade == b"websocket"  # the body's end sent
        self._body_error: BadRequest | None = None
        self._continue_sent = False
        self._keep = head is not None and head.keep_alive
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._framing: ResponseFraming | None = None  # set once the head is written
        self._length_due = -1  # body bytes the app's Content-Length still promises
        self.started = False
        self.finished = False

    # ---- the connection's life --------------------------------------------------------

    async def serve(self) -> None:
        """Serve requests until the client leaves, a response closes the connection,
        the server shuts down or a head does not come within the header timeout.

        Blocks for the connection's life; raises only Cancelled (the caller closes the
        stream). One reader task per connection does all the reading, so a request in
        flight learns at once that its client left, without a task of its own.
        """
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_until_gone)
            await self._serve_requests()
            nursery.cancel_scope.cancel()

    async def _serve_requests(self) -> None:
        pending: RequestHead | None = None  # a head that came with its scope's cancel
        while True:
            timeout = self._header_timeout_s if pending is None else None
            deadline = trio.current_time() + timeout if timeout is not None else math.inf
            # One cancel scope per request: the header timeout (and the idle wait that a
            # shutdown cancels) while its head is awaited, then the scope its app runs
            # in, which the client's going cancels (REQUEST_SCOPE_EXTENSION).
            with trio.CancelScope(deadline=deadline) as scope:
                head, pending = pending or await self._next_head(scope), None
                if head is None:
                    return  # noqa: ASYNC910 (_next_head awaited)
                if scope.cancel_called:  # the timeout or a shutdown came with the head:
                    pending = head  # it is answered in a fresh scope
                    continue
                if not await self._serve_one(head, scope):
                    return
            if scope.cancelled_caught:
                return  # no head in time, a shutdown while idle, or the client left

    async def _serve_one(self, head: RequestHead, scope: trio.CancelScope) -> bool:
        """Answer the request ``head`` in ``scope``; whether to go on."""
        scope.deadline = math.inf
        self._request_scope = scope
        self._begin(head)
        if head.upgrade == b"websocket":
            self._keep = False
            await refuse_websocket(self, self._app, self._scope(head, "websocket"))
            return False
        await self._run_app(head)
        if not self._body_done and self._body_error is None:
            self._drop_buffered_body()
        if not self._keep_after():
            unread = not self._body_done and self._body_error is None
            if unread and self.started and not self.client_gone:
                await self._linger()
            return False
        return True

    async def _read_until_gone(self) -> None:
        """The reader: appends what the client sends to the buffer (pausing while it
        holds :data:`MAX_BUFFERED_BYTES`) until the client leaves, then wakes every
        waiter and tells the request in flight (its disconnect callback)."""
        while True:
            if len(self._buffer) >= MAX_BUFFERED_BYTES:
                await self._drained.park()
                continue
            try:
                data = await self._stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await trio.lowlevel.checkpoint()  # it may have failed without waiting
                data = b""
            if not data:
                break
            self._buffer += data
            if self._arrived:
                self._arrived.unpark_all()
        self.client_gone = True
        self._arrived.unpark_all()
        callback, self._on_disconnect = self._on_disconnect, None
        if callback is not None and not self.finished:
            callback()

    def on_disconnect(self, callback: Callable[[], None] | None) -> None:
        """The ``oswitch.disconnect`` ASGI extension: call ``callback`` (once, from the
        reader task) if the client leaves before the response is complete; None
        unregisters. Called at once when the client has already gone."""
        if callback is not None and self.client_gone and not self.finished:
            callback()
            return
        self._on_disconnect = callback

    async def _more(self) -> bool:
        """Wait until the reader brought more bytes; False once the client has gone."""
        if self.client_gone:
            await trio.lowlevel.checkpoint()
            return False
        await self._arrived.park()
        return True

    def _consumed(self) -> None:
        """Bytes were taken off the buffer: a reader paused for room may go on."""
        if self._drained:
            self._drained.unpark_all()

    async def _next_head(self, waiting: trio.CancelScope) -> RequestHead | None:
        """The next request's head, or None when the connection should close (the
        client left, or sent a head that was answered 4xx/5xx). ``waiting`` (its
        deadline the header timeout) is, while nothing of the next request has arrived,
        the idle wait that a shutdown cancels; its cancellation raises Cancelled."""
        self._head = None  # a refusal of this head must not answer the previous one
        scanned = 0
        read = False
        while True:
            try:
                end = find_head_end(self._buffer, scanned)
                if end >= 0:
                    head = bytes(self._buffer[:end])
                    del self._buffer[:end]
                    self._consumed()
                    if not read:  # pipelined: it was all in the buffer already
                        await trio.lowlevel.checkpoint()
                    return parse_request_head(head)  # noqa: ASYNC910 (a read or the checkpoint above)
            except BadRequest as bad:
                await self.refuse(bad)
                return None
            scanned = max(0, len(self._buffer) - 3)
            if self._buffer:
                more = await self._more()
            elif self._closing.closing:
                await trio.lowlevel.checkpoint()
                return None
            else:
                self._closing.enter_idle(self, waiting)
                try:
                    more = await self._more()
                finally:
                    self._closing.leave_idle(self)
            read = True
            if not more:
                return None

    def _body_in_hand(self) -> bool:
        """Whether the request body has been read, or what is left of it is in the
        buffer (then the connection can carry the next request once it is dropped)."""
        if self._body_done:
            return True
        return self._chunked is None and len(self._buffer) >= self._body_left

    def _drop_buffered_body(self) -> None:
        """Drop the part of an unread request body already in the buffer: when that is
        all of it, the connection can still be kept."""
        try:
            self._take_body()
        except BadRequest:
            self._keep = False

    def _keep_after(self) -> bool:
        """Whether the connection carries another request after this one."""
        return (
            self._keep
            and self.finished
            and self._body_done
            and self._length_due <= 0
            and not self.client_gone
            and not self._write_failed
            and not self._closing.closing
            and self._framing is not None
            and self._framing.keep_alive
        )

    async def _linger(self) -> None:
        """Half-close and drop what the client still sends (bounded), so that a
        response sent before its request body was read is not lost to a reset."""
        with trio.move_on_after(LINGER_S):
            try:
                await self._stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await trio.lowlevel.checkpoint()
                return
            dropped = 0
            while dropped < LINGER_BYTES:
                dropped += len(self._buffer)
                self._buffer.clear()
                self._consumed()
                if not await self._more():
                    return

    # ---- one request ------------------------------------------------------------------

    def _scope(self, head: RequestHead, kind: str) -> dict[str, Any]:
        extensions: dict[str, Any] = {"websocket.http.response": {}}
        if kind == "http":
            extensions = {
                DISCONNECT_EXTENSION: self.on_disconnect,
                BODY_IN_HAND_EXTENSION: self._body_in_hand,
                REQUEST_SCOPE_EXTENSION: self._request_scope,
            }
        return asgi_scope(head, kind, self._client, self._server, extensions)

    async def _run_app(self, head: RequestHead) -> None:  # noqa: ASYNC910 (the app checkpoints)
        try:
            await self._app(self._scope(head, "http"), self.receive, self.send)
        except Exception as exc:
            # The app answers its own failures (SidecarApp does); this is a last resort.
            log.error("asgi_app_failed", extra={"note": type(exc).__name__})
            await trio.lowlevel.checkpoint()
            self._keep = False
        if self._corked_by is not None:
            await self.uncork()
        if not self.started:
            self._keep = False
            if not self.client_gone:
                bad = self._body_error or BadRequest("the server could not answer", 500)
                await self.refuse(bad)
        elif not self.finished:
            self._keep = False  # a body cut short: the close tells the client

    async def receive(self) -> Message:
        """ASGI ``receive``: the request body's next piece, then (once the body is in)
        wait until the client leaves and return ``http.disconnect``. Blocks on the
        socket; a cancelled wait loses no bytes."""
        if self.client_gone or self.finished or self._body_error is not None:
            await trio.lowlevel.checkpoint()
            return DISCONNECT
        if not self._body_done:
            return await self._body_message()
        if not self._body_given:  # a request without a body gets its one (empty) message
            self._body_given = True
            await trio.lowlevel.checkpoint()
            return {"type": "http.request", "body": b"", "more_body": False}
        # Bytes arriving meanwhile are the next request, pipelined: left in the buffer.
        while await self._more() and not self.finished:
            pass
        return DISCONNECT

    async def _body_message(self) -> Message:
        head = self._head
        assert head is not None
        if head.expect_continue and not self._continue_sent and not self._buffer:
            self._continue_sent = True
            await self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while True:
            await trio.lowlevel.checkpoint_if_cancelled()  # before a byte is taken; app waits next
            try:
                piece = self._take_body()
            except BadRequest as bad:
                self._body_error = bad  # nothing more is read on this connection
                await trio.lowlevel.checkpoint()
                return DISCONNECT
            if piece or self._body_done:
                self._body_given = self._body_done
                return {"type": "http.request", "body": piece, "more_body": not self._body_done}
            if not await self._more():
                return DISCONNECT

    def _take_body(self) -> bytes:
        """The body bytes the buffer holds, taken off it."""
        buffer = self._buffer
        if self._chunked is not None:
            piece = self._chunked.decode(buffer)
            self._body_done = self._chunked.done
        else:
            taken = min(self._body_left, len(buffer))
            piece = bytes(buffer[:taken])
            del buffer[:taken]
            self._body_left -= taken
            self._body_done = not self._body_left
        self._consumed()
        return piece

    async def send(self, message: Message) -> None:
        """ASGI ``send``. The head waits for the first body bytes; each body message is
        one write (or held while corked). After the client has gone, sends do nothing
        (the app learns it from ``receive``). Raises RuntimeError for messages out of
        order or a header that cannot be written."""
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self._status = int(message["status"])
            self._headers = list(message.get("headers", ()))
            # Nothing to write until the body's first bytes (or its end).
            return  # noqa: ASYNC910 (no I/O here; the body's write checkpoints)
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if not self.started:
            raise RuntimeError("http.response.body before http.response.start")
        if self.finished:
            raise RuntimeError("http.response.body after the response ended")
        more = bool(message.get("more_body", False))
        if not more:
            self.finished = True
            self._on_disconnect = None
            if self._arrived:  # a receive waiting for the client's going returns
                self._arrived.unpark_all()
        await self._write(self._framed(bytes(message.get("body", b"")), more))

    def _framed(self, body: bytes, more: bool) -> bytes:
        """``body`` as it goes on the wire: the head first if it is not out yet, then
        the body in its framing (and the chunked terminator once ``more`` is false)."""
        prefix = b""
        framing = self._framing
        if framing is None:
            head = self._head
            assert head is not None
            try:
                prefix, framing = response_head(
                    self._status,
                    self._headers,
                    head,
                    keep_alive=self._keep and self._body_in_hand() and not self._closing.closing,
                )
            except ValueError as exc:
                raise RuntimeError(str(exc)) from None
            self._framing = framing
            if framing.kind == "length":
                self._length_due = content_length(self._headers)
        kind = framing.kind
        if kind == "chunked":
            if body:
                body = b"%x\r\n%b\r\n" % (len(body), body)
            if not more:
                body += b"0\r\n\r\n"
        elif kind == "length":
            if len(body) > self._length_due:
                body = body[: max(self._length_due, 0)]
                self._keep = False  # the app broke its own Content-Length
            self._length_due -= len(body)
            if not more and self._length_due:
                self._keep = False
        elif kind == "none":
            body = b""
        return prefix + body if prefix else body

    # ---- writing ----------------------------------------------------------------------

    def cork(self) -> None:
        """Hold this task's writes back until :meth:`uncork` (which sends them as one)."""
        self._corked_by = trio.lowlevel.current_task()
        self._held = []

    async def uncork(self) -> None:
        """Write what was held, in one write, and stop holding. Shielded: the bytes are
        part of a response already under way, so they must go out even if the app is
        being cancelled (each write is bounded by the stream's write timeout)."""
        held = b"".join(self._held)
        self._corked_by = None
        self._held = []
        with trio.CancelScope(shield=True):
            await self._write(held)

    async def _write(self, data: bytes) -> None:
        if self._corked_by is not None:
            if self._corked_by is trio.lowlevel.current_task():
                # Held for uncork, which writes (and checkpoints): a checkpoint per held
                # write would cost a scheduling round each, the very cost corking removes.
                self._held.append(data)
                return  # noqa: ASYNC910
            await self.uncork()  # another task writes: what was held goes first
        if not data or self._write_failed:
            await trio.lowlevel.checkpoint()
            return
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await trio.lowlevel.checkpoint()  # it may have failed without waiting
            self._write_failed = True

    async def refuse(self, bad: BadRequest) -> None:
        """Answer a request this server cannot serve (:func:`~oswitch.sidecar.h1.refusal`)
        and leave the connection to close."""
        self.started = True
        with trio.move_on_after(LINGER_S):
            await self._write(refusal(bad, self._head))
        self.finished = True
        self._keep = False
