"""One control client's connection: authentication, then its commands and events.

One connection is three tasks at most: a reader that handles frames one at a time
in arrival order, a writer that owns every send, and (while subscribed) a
forwarder from the switcher's event hub. Between them sits a small bounded
outbox, so a client that sends faster than it reads stalls its own reader (and,
through TCP, itself) instead of growing memory. A send that cannot complete
within ``send_timeout_s`` means the client stopped reading: its connection is
aborted. A subscription that falls ``subscriber_buffer`` events behind is
dropped by the hub, never waited on, so no client can slow routing down.
What each command does is oswitch.control.commands.
"""

from __future__ import annotations

import json
import logging
from typing import NoReturn

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from oswitch.control.commands import execute
from oswitch.control.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_POLICY_VIOLATION,
    PROTOCOL_VERSION,
    Auth,
    ErrorCode,
    ProtocolError,
    RequestId,
    Subscribe,
    Unsubscribe,
    error_reply,
    event_frame,
    ok_reply,
    parse_frame,
    protocol_error_reply,
)
from oswitch.core.secret import Secret
from oswitch.runtime.events import TOPIC_OF_EVENT, Event
from oswitch.runtime.switcher import Switcher

log = logging.getLogger("oswitch.control")

# Replies and events queued for one connection's writer; small on purpose.
OUTBOX_SIZE = 16
# How long a closing handshake may take before the socket is simply closed.
CLOSE_TIMEOUT_S = 2.0
# On shutdown, how long each client gets to answer our close 1001.
SHUTDOWN_CLOSE_S = 0.25


@attrs.frozen(kw_only=True)
class ConnectionRules:
    """What every connection of one server holds its client to: the ``token`` to
    authenticate with, the largest frame in UTF-8 bytes, how long a client may stay
    silent before authenticating and how long one send may take, and how far a
    subscription may fall behind before it is dropped."""

    token: Secret
    max_message_bytes: int
    auth_timeout_s: float
    send_timeout_s: float
    subscriber_buffer: int
    # The token as sent, and as it would appear inside JSON text (a reply quoting it).
    _needles: tuple[str, ...] = attrs.field(init=False)

    @_needles.default
    def _token_spellings(self) -> tuple[str, ...]:
        value = self.token.reveal()
        escaped = json.dumps(value)[1:-1]
        return tuple(n for n in dict.fromkeys((value, escaped)) if len(n) >= 4)

    def scrub(self, text: str) -> str:
        """``text`` with the token (raw or JSON-escaped) replaced by ``***``."""
        for needle in self._needles:
            if needle in text:
                text = text.replace(needle, "***")
        return text


@attrs.define
class ConnectionCounters:
    """What the connections of one server have seen, counted since it started; the
    connections write it, the server reports it (``ControlServer.statistics``, whose
    fields of the same names these are)."""

    auth_failures: int = 0
    commands: int = 0
    refused: int = 0
    subscriptions_dropped: int = 0
    slow_clients_aborted: int = 0
    oversized_frames: int = 0


class _Stop(Exception):
    """Ends a connection: close with ``code`` and ``reason``, or abort when code is None."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@attrs.define
class _Subscription:
    topics: frozenset[str]
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    ready: trio.Event = attrs.Factory(trio.Event)


class Connection:
    """One authenticated-or-not client connection, held to ``rules``; what it sees is
    counted in ``counters``."""

    def __init__(
        self,
        ws: WebSocketConnection,
        switcher: Switcher,
        rules: ConnectionRules,
        counters: ConnectionCounters,
    ) -> None:
        self.ws = ws
        self.switcher = switcher
        self.rules = rules
        self.counters = counters
        self._subscription: _Subscription | None = None
        self._too_slow = False
        # True while a frame is being written: a cancel then would cut it in half.
        self._sending = False

    async def run(self) -> None:
        """Authenticate, then serve commands until the client leaves or is stopped.

        Raises ConnectionClosed when the client goes away during authentication.
        """
        try:
            await self._authenticate()
            await self._serve_commands()
        except _Stop as stop:
            await self._close(stop)

    # ---- I/O helpers -------------------------------------------------------------

    async def _receive(self) -> str | bytes | None:
        """The next frame, or None once the client closed the connection."""
        try:
            frame = await self.ws.get_message()
        except ConnectionClosed as exc:
            if exc.reason is not None and exc.reason.code == CLOSE_MESSAGE_TOO_BIG:
                # trio-websocket already sent close 1009 (its limit counts characters).
                self.counters.oversized_frames += 1
            # get_message raises at once on a connection already closed.
            await trio.lowlevel.checkpoint()
            return None
        limit = self.rules.max_message_bytes
        # trio-websocket counts characters; a frame of non-ASCII text can be up to
        # four times as many bytes.
        if (
            isinstance(frame, str)
            and len(frame) * 4 > limit
            and len(frame.encode("utf-8", "surrogatepass")) > limit
        ):
            self.counters.oversized_frames += 1
            raise _Stop(CLOSE_MESSAGE_TOO_BIG, f"message too big: limit {limit} bytes")
        return frame

    async def _send_now(self, text: str) -> None:
        """Send outside the writer (before it runs); a stuck send aborts the connection."""
        with trio.move_on_after(self.rules.send_timeout_s) as scope:
            self._sending = True
            await self.ws.send_message(self.rules.scrub(text))
            self._sending = False
        if scope.cancelled_caught:
            self.counters.slow_clients_aborted += 1
            raise _Stop(None)

    async def going_away(self) -> None:
        """Tell the client the server is shutting down (close 1001), briefly and shielded."""
        with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_CLOSE_S):
            if self._sending:
                # Cancelled mid-frame: no close frame can follow, just drop the socket.
                await self._close(_Stop(None))
            else:
                await self.ws.aclose(CLOSE_GOING_AWAY, "server shutting down")

    async def _close(self, stop: _Stop) -> None:
        if stop.code is None:
            # A send was cut off mid-frame: no close frame can follow it. A cancelled
            # aclose still closes the socket (trio's AsyncResource contract).
            with trio.CancelScope() as scope:
                scope.cancel()
                await self.ws.aclose()
            return
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            await self.ws.aclose(stop.code, stop.reason)

    # ---- authentication ----------------------------------------------------------

    async def _authenticate(self) -> None:
        frame: str | bytes | None = None
        with trio.move_on_after(self.rules.auth_timeout_s):
            frame = await self._receive()
            if frame is None:
                raise ConnectionClosed(self.ws.closed)
        if frame is None:
            await self._refuse_auth(
                None,
                ErrorCode.AUTH_TIMEOUT,
                f"no auth frame within {self.rules.auth_timeout_s:g} s",
            )
        assert frame is not None
        try:
            command = parse_frame(frame)
        except ProtocolError as exc:
            await self._refuse_auth(
                exc.id, ErrorCode.AUTH_REQUIRED, f"authenticate first ({exc.message})"
            )
        if not isinstance(command, Auth):
            await self._refuse_auth(
                command.id,
                ErrorCode.AUTH_REQUIRED,
                'authenticate first: the first frame must be {"op": "auth", "token": "..."}',
            )
        try:
            good = self.rules.token.matches(command.token.reveal())
        except UnicodeEncodeError:
            good = False
        if not good:
            await self._refuse_auth(command.id, ErrorCode.AUTH_FAILED, "wrong token")
        await self._send_now(ok_reply(command.id, {"protocol": PROTOCOL_VERSION}))
        log.debug("control_authenticated", extra={"remote": str(self.ws.remote)})

    async def _refuse_auth(self, id: RequestId, code: ErrorCode, message: str) -> NoReturn:
        self.counters.auth_failures += 1
        log.warning("control_auth_refused", extra={"remote": str(self.ws.remote), "code": code})
        await self._send_now(error_reply(id, code, message))
        raise _Stop(CLOSE_POLICY_VIOLATION, "authentication required")

    # ---- commands ----------------------------------------------------------------

    async def _serve_commands(self) -> None:
        send, receive = trio.open_memory_channel[str](OUTBOX_SIZE)
        stop: _Stop | None = None
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._write, receive)
            async with send:
                self._outbox = send
                try:
                    left = await self._read_commands()
                except _Stop as exc:
                    stop, left = exc, False
                finally:
                    self._unsubscribe()
                if left:
                    # The client is gone: nothing queued can reach it.
                    nursery.cancel_scope.cancel()
            # Otherwise the writer ends once it has flushed every queued frame.
        if self._too_slow:
            raise _Stop(None)
        if stop is not None:
            raise stop

    async def _write(self, receive: trio.MemoryReceiveChannel[str]) -> None:
        async with receive:
            async for text in receive:
                with trio.move_on_after(self.rules.send_timeout_s) as scope:
                    try:
                        self._sending = True
                        await self.ws.send_message(self.rules.scrub(text))
                        self._sending = False
                    except ConnectionClosed:
                        self._nursery.cancel_scope.cancel()
                        return
                if scope.cancelled_caught:
                    log.warning("control_client_too_slow", extra={"remote": str(self.ws.remote)})
                    self.counters.slow_clients_aborted += 1
                    self._too_slow = True
                    self._nursery.cancel_scope.cancel()
                    return

    async def _read_commands(self) -> bool:
        """Handle frames one at a time; True when the client closed the connection."""
        while True:
            frame = await self._receive()
            if frame is None:
                return True
            try:
                command = parse_frame(frame)
            except ProtocolError as exc:
                self.counters.refused += 1
                await self._outbox.send(protocol_error_reply(exc))
                continue
            self.counters.commands += 1
            if isinstance(command, Subscribe):
                await self._subscribe(command)
            elif isinstance(command, Unsubscribe):
                self._unsubscribe()
                await self._outbox.send(ok_reply(command.id, {"topics": []}))
            else:
                reply, refused = await execute(self.switcher, command)
                if refused:
                    self.counters.refused += 1
                await self._outbox.send(reply)

    async def _subscribe(self, command: Subscribe) -> None:
        self._unsubscribe()
        subscription = _Subscription(topics=command.topics)
        await self._nursery.start(self._forward, subscription, self._outbox.clone())
        self._subscription = subscription
        await self._outbox.send(ok_reply(command.id, {"topics": sorted(command.topics)}))
        # Events that arrived meanwhile wait in the hub's buffer, so none precedes the reply.
        subscription.ready.set()

    def _unsubscribe(self) -> None:
        if self._subscription is not None:
            # The forwarder never touches the socket, so cancelling it cannot cut a frame.
            self._subscription.scope.cancel()
            self._subscription = None

    async def _forward(
        self,
        subscription: _Subscription,
        outbox: trio.MemorySendChannel[str],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        buffer = self.rules.subscriber_buffer
        async with outbox:
            with subscription.scope:
                with self.switcher.events.subscribe(subscription.topics, buffer=buffer) as events:
                    task_status.started()
                    await subscription.ready.wait()
                    async for event in events:
                        await outbox.send(self._event_frame(event))
                # The hub closed the channel: this client fell `buffer` events behind.
                self.counters.subscriptions_dropped += 1
                if self._subscription is subscription:
                    self._subscription = None
                log.warning("control_subscription_dropped", extra={"remote": str(self.ws.remote)})
                await outbox.send(
                    event_frame(
                        "subscription_dropped",
                        trio.current_time(),
                        None,
                        {"reason": f"fell more than {buffer} events behind", "buffer": buffer},
                    )
                )

    @staticmethod
    def _event_frame(event: Event) -> str:
        topic = TOPIC_OF_EVENT.get(event.name, "audit")
        return event_frame(event.name, event.at, topic, event.fields)
