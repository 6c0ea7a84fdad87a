"""The control server: operator commands and live events over a websocket.

One connection is three tasks at most: a reader that handles frames one at a time
in arrival order, a writer that owns every send, and (while subscribed) a
forwarder from the switcher's event hub. Between them sits a small bounded
outbox, so a client that sends faster than it reads stalls its own reader (and,
through TCP, itself) instead of growing memory. A send that cannot complete
within ``send_timeout_s`` means the client stopped reading: its connection is
aborted. A subscription that falls ``subscriber_buffer`` events behind is
dropped by the hub, never waited on, so no client can slow routing down.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping
from functools import partial
from typing import Any, NoReturn

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    Endpoint,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
)

from oswitch.config import ControlConfig, SwitcherConfig, load_config, parse_config
from oswitch.control.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_POLICY_VIOLATION,
    PROTOCOL_VERSION,
    Auth,
    Command,
    ErrorCode,
    InspectRequest,
    ListTargets,
    ProtocolError,
    ReloadConfig,
    RequestId,
    Subscribe,
    TargetCommand,
    Unsubscribe,
    error_reply,
    event_frame,
    ok_reply,
    parse_frame,
    protocol_error_reply,
    trace_json,
)
from oswitch.core.secret import Secret
from oswitch.errors import ConfigError, UnknownRequest, UnknownTarget
from oswitch.runtime.events import SUBSCRIBER_BUFFER, TOPIC_OF_EVENT, Event
from oswitch.runtime.switcher import Switcher

log = logging.getLogger("oswitch.control")

AUTH_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 10.0
# Replies and events queued for one connection's writer; small on purpose.
OUTBOX_SIZE = 16
# How long a closing handshake may take before the socket is simply closed.
CLOSE_TIMEOUT_S = 2.0
# On shutdown, how long each client gets to answer our close 1001.
SHUTDOWN_CLOSE_S = 0.25


@attrs.frozen(kw_only=True)
class ControlStatistics:
    """Counters of a control server since it started."""

    connections_open: int
    connections_total: int
    connections_refused: int
    auth_failures: int
    commands: int
    refused: int
    subscriptions_dropped: int
    slow_clients_aborted: int
    oversized_frames: int


def control_token(
    control: ControlConfig, environ: Mapping[str, str] | None = None
) -> Secret | None:
    """The control token: ``control.token`` if set, else the variable named by
    ``control.token_env`` in ``environ`` (default ``os.environ``); None when
    neither gives a non-empty value. Raises nothing."""
    if control.token:
        return control.token
    value = (os.environ if environ is None else environ).get(control.token_env, "")
    return Secret(value) if value else None


class _Stop(Exception):
    """Ends a connection: close with ``code`` and ``reason``, or abort when code is None."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ControlServer:
    """Serves one switcher's control channel. ``serve_control`` is the usual way in;
    build one directly to read its ``statistics()``.

    Raises ConfigError at construction when ``token`` is missing or empty: the
    control channel never runs without one.
    """

    def __init__(
        self,
        switcher: Switcher,
        *,
        token: Secret | str | None,
        max_message_bytes: int | None = None,
        auth_timeout_s: float = AUTH_TIMEOUT_S,
        send_timeout_s: float = SEND_TIMEOUT_S,
        subscriber_buffer: int = SUBSCRIBER_BUFFER,
    ) -> None:
        secret = Secret(token) if isinstance(token, str) else token
        if not secret:
            raise ConfigError(
                [
                    (
                        "$.control.token",
                        "the control channel requires a token: set control.token "
                        f"or the {ControlConfig().token_env} environment variable",
                    )
                ]
            )
        self.switcher = switcher
        self.token = secret
        self.max_message_bytes = max_message_bytes or switcher.config.control.max_message_bytes
        self.max_connections = switcher.config.control.max_connections
        self._connections_refused = 0
        self.auth_timeout_s = auth_timeout_s
        self.send_timeout_s = send_timeout_s
        self.subscriber_buffer = subscriber_buffer
        value = secret.reveal()
        # The token as it would appear inside JSON text too, in case a reply quotes it.
        escaped = json.dumps(value)[1:-1]
        self._needles = tuple(n for n in dict.fromkeys((value, escaped)) if len(n) >= 4)
        self._open = 0
        self._total = 0
        self._auth_failures = 0
        self._commands = 0
        self._refused = 0
        self._dropped = 0
        self._aborted = 0
        self._oversized = 0

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Listen on ``host:port`` and hand the bound port to ``task_status.started``.

        Runs until cancelled. Raises OSError when the address cannot be bound.
        """
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(
                    serve_websocket,
                    self._handle,
                    host,
                    port,
                    None,
                    message_queue_size=1,
                    max_message_size=self.max_message_bytes,
                    connect_timeout=self.auth_timeout_s,
                    disconnect_timeout=CLOSE_TIMEOUT_S,
                )
            )
            # A name like "localhost" may bind IPv4 and IPv6 on different ports;
            # report the first, as the one a client resolving the name tries first.
            ports = [e.port for e in server.listeners if isinstance(e, Endpoint)]
            log.info("control_listening", extra={"host": host, "port": ports[0]})
            task_status.started(ports[0])
        raise AssertionError("serve_websocket returned")

    async def _handle(self, request: WebSocketRequest) -> None:
        # Runs in trio-websocket's handler nursery, where an escaping exception would
        # take every other connection down with it: only Cancelled may leave.
        if self._open >= self.max_connections:
            self._connections_refused += 1
            log.warning("control_connection_refused", extra={"note": "max_connections"})
            with trio.move_on_after(CLOSE_TIMEOUT_S), contextlib.suppress(Exception):
                await request.reject(503, body=b"too many control connections; retry later")
            return
        self._open += 1
        self._total += 1
        connection: _Connection | None = None
        try:
            connection = _Connection(self, await request.accept())
            await connection.run()
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("control_connection_failed")
            if connection is not None:
                with trio.move_on_after(CLOSE_TIMEOUT_S):
                    await connection.ws.aclose(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            self._open -= 1
            if connection is not None and connection.ws.closed is None:
                # Still open, so we are being cancelled: the server is shutting down.
                await connection.going_away()

    def scrub(self, text: str) -> str:
        """``text`` with the token (raw or JSON-escaped) replaced by ``***``."""
        for needle in self._needles:
            if needle in text:
                text = text.replace(needle, "***")
        return text

    def statistics(self) -> ControlStatistics:
        return ControlStatistics(
            connections_open=self._open,
            connections_total=self._total,
            connections_refused=self._connections_refused,
            auth_failures=self._auth_failures,
            commands=self._commands,
            refused=self._refused,
            subscriptions_dropped=self._dropped,
            slow_clients_aborted=self._aborted,
            oversized_frames=self._oversized,
        )


@attrs.define
class _Subscription:
    topics: frozenset[str]
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    ready: trio.Event = attrs.Factory(trio.Event)


class _Connection:
    """One authenticated-or-not client connection."""

    def __init__(self, server: ControlServer, ws: WebSocketConnection) -> None:
        self.server = server
        self.ws = ws
        self.switcher = server.switcher
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
                self.server._oversized += 1
            return None
        limit = self.server.max_message_bytes
        # trio-websocket counts characters; a frame of non-ASCII text can be up to
        # four times as many bytes.
        if (
            isinstance(frame, str)
            and len(frame) * 4 > limit
            and len(frame.encode("utf-8", "surrogatepass")) > limit
        ):
            self.server._oversized += 1
            raise _Stop(CLOSE_MESSAGE_TOO_BIG, f"message too big: limit {limit} bytes")
        return frame

    async def _send_now(self, text: str) -> None:
        """Send outside the writer (before it runs); a stuck send aborts the connection."""
        with trio.move_on_after(self.server.send_timeout_s) as scope:
            self._sending = True
            await self.ws.send_message(self.server.scrub(text))
            self._sending = False
        if scope.cancelled_caught:
            self.server._aborted += 1
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
        with trio.move_on_after(self.server.auth_timeout_s):
            frame = await self._receive()
            if frame is None:
                raise ConnectionClosed(self.ws.closed)
        if frame is None:
            await self._refuse_auth(
                None,
                ErrorCode.AUTH_TIMEOUT,
                f"no auth frame within {self.server.auth_timeout_s:g} s",
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
            good = self.server.token.matches(command.token.reveal())
        except UnicodeEncodeError:
            good = False
        if not good:
            await self._refuse_auth(command.id, ErrorCode.AUTH_FAILED, "wrong token")
        await self._send_now(ok_reply(command.id, {"protocol": PROTOCOL_VERSION}))
        log.info("control_authenticated", extra={"remote": str(self.ws.remote)})

    async def _refuse_auth(self, id: RequestId, code: ErrorCode, message: str) -> NoReturn:
        self.server._auth_failures += 1
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
                with trio.move_on_after(self.server.send_timeout_s) as scope:
                    try:
                        self._sending = True
                        await self.ws.send_message(self.server.scrub(text))
                        self._sending = False
                    except ConnectionClosed:
                        self._nursery.cancel_scope.cancel()
                        return
                if scope.cancelled_caught:
                    log.warning("control_client_too_slow", extra={"remote": str(self.ws.remote)})
                    self.server._aborted += 1
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
                self.server._refused += 1
                await self._outbox.send(protocol_error_reply(exc))
                continue
            self.server._commands += 1
            if isinstance(command, Subscribe):
                await self._subscribe(command)
            elif isinstance(command, Unsubscribe):
                self._unsubscribe()
                await self._outbox.send(ok_reply(command.id, {"topics": []}))
            else:
                await self._outbox.send(await self._execute(command))

    async def _execute(self, command: Command) -> str:
        try:
            result = await self._run(command)
        except ProtocolError as exc:
            reply = protocol_error_reply(exc)
        except UnknownTarget as exc:
            reply = error_reply(command.id, ErrorCode.UNKNOWN_TARGET, str(exc))
        except UnknownRequest as exc:
            reply = error_reply(command.id, ErrorCode.UNKNOWN_REQUEST, str(exc))
        except ConfigError as exc:
            message = "; ".join(f"{reason} @ {path}" for path, reason in exc.problems)
            reply = error_reply(command.id, ErrorCode.INVALID_CONFIG, message, exc.problems)
        except Exception:
            # A bug here must cost this one command, not the connection or routing.
            log.exception("control_command_failed", extra={"op": type(command).__name__})
            reply = error_reply(
                command.id, ErrorCode.INTERNAL, "internal error; see the server log"
            )
        else:
            return ok_reply(command.id, result)
        self.server._refused += 1
        return reply

    async def _run(self, command: Command) -> dict[str, Any]:
        switcher = self.switcher
        if isinstance(command, ListTargets):
            await trio.lowlevel.checkpoint()
            return {"targets": switcher.list_targets()}
        if isinstance(command, TargetCommand):
            operations = {
                "pause_target": switcher.pause_target,
                "resume_target": switcher.resume_target,
                "drain_target": switcher.drain_target,
                "disable_target": switcher.disable_target,
            }
            await operations[command.op](command.target_id)
            views = [v for v in switcher.list_targets() if v.target_id == command.target_id]
            return {"target": views[0] if views else None}
        if isinstance(command, InspectRequest):
            await trio.lowlevel.checkpoint()
            return {"trace": trace_json(switcher.inspect_request(command.request_id))}
        if isinstance(command, ReloadConfig):
            config = await self._load(command)
            await switcher.reload_config(config)
            return {"target_ids": [t.target_id for t in config.targets]}
        if isinstance(command, Auth):
            raise ProtocolError(
                ErrorCode.ALREADY_AUTHENTICATED, "already authenticated", id=command.id
            )
        raise AssertionError(f"unhandled command {type(command).__name__}")

    async def _load(self, command: ReloadConfig) -> SwitcherConfig:
        if command.path is not None:
            # Abandoned on cancel: a file on a hung network mount must not hold up shutdown.
            return await trio.to_thread.run_sync(load_config, command.path, abandon_on_cancel=True)
        assert command.config is not None
        return parse_config(command.config, source="inline config")

    # ---- subscription ------------------------------------------------------------

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
        buffer = self.server.subscriber_buffer
        async with outbox:
            with subscription.scope:
                with self.switcher.events.subscribe(subscription.topics, buffer=buffer) as events:
                    task_status.started()
                    await subscription.ready.wait()
                    async for event in events:
                        await outbox.send(self._event_frame(event))
                # The hub closed the channel: this client fell `buffer` events behind.
                self.server._dropped += 1
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


async def serve_control(
    switcher: Switcher,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    token: Secret | str | None,
    max_message_bytes: int | None = None,
    auth_timeout_s: float = AUTH_TIMEOUT_S,
    send_timeout_s: float = SEND_TIMEOUT_S,
    subscriber_buffer: int = SUBSCRIBER_BUFFER,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve ``switcher``'s control channel on ``host:port`` until cancelled.

    Start it with ``port = await nursery.start(serve_control, switcher, ...)``:
    the bound port (useful with ``port=0``) comes back through ``task_status``.
    Clients must send ``{"op": "auth", "token": ...}`` first (see
    docs/control-protocol.md). ``max_message_bytes`` defaults to the switcher's
    ``control.max_message_bytes``; a client silent for ``auth_timeout_s`` before
    authenticating, or not reading for ``send_timeout_s``, is disconnected; a
    subscription more than ``subscriber_buffer`` events behind is dropped.

    Raises ConfigError at once when ``token`` is None or empty (the channel
    never runs unauthenticated; see :func:`control_token`), OSError when the
    address cannot be bound.
    """
    server = ControlServer(
        switcher,
        token=token,
        max_message_bytes=max_message_bytes,
        auth_timeout_s=auth_timeout_s,
        send_timeout_s=send_timeout_s,
        subscriber_buffer=subscriber_buffer,
    )
    await server.serve(host, port, task_status=task_status)
