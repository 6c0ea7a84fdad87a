"""The control server: operator commands and live events over a websocket.

The server listens, counts and caps connections, and reports statistics; each
connection (oswitch.control.connection) authenticates its client and carries its
commands and events; oswitch.control.commands runs each command. Every bound a
client is held to is a ConnectionRules field.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from functools import partial
from typing import NoReturn

import attrs
import trio
from trio_websocket import ConnectionClosed, Endpoint, WebSocketRequest, serve_websocket

from oswitch.config import ControlConfig
from oswitch.control.connection import (
    CLOSE_TIMEOUT_S,
    Connection,
    ConnectionCounters,
    ConnectionRules,
)
from oswitch.control.protocol import CLOSE_INTERNAL_ERROR
from oswitch.core.secret import Secret
from oswitch.errors import ConfigError
from oswitch.runtime.events import SUBSCRIBER_BUFFER
from oswitch.runtime.switcher import Switcher

log = logging.getLogger("oswitch.control")

AUTH_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 10.0


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
        self.auth_timeout_s = auth_timeout_s
        self.send_timeout_s = send_timeout_s
        self.subscriber_buffer = subscriber_buffer
        self._rules = ConnectionRules(
            token=secret,
            max_message_bytes=self.max_message_bytes,
            auth_timeout_s=auth_timeout_s,
            send_timeout_s=send_timeout_s,
            subscriber_buffer=subscriber_buffer,
        )
        self._counters = ConnectionCounters()
        self._open = 0
        self._total = 0
        self._connections_refused = 0

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
        # Checkpoint first, once per connection, so that every way out of here is
        # one (a refusal whose reject failed at once, a client gone before accept).
        await trio.lowlevel.checkpoint()
        if self._open >= self.max_connections:
            self._connections_refused += 1
            log.warning("control_connection_refused", extra={"note": "max_connections"})
            with trio.move_on_after(CLOSE_TIMEOUT_S), contextlib.suppress(Exception):
                await request.reject(503, body=b"too many control connections; retry later")
            return
        self._open += 1
        self._total += 1
        connection: Connection | None = None
        try:
            ws = await request.accept()
            connection = Connection(ws, self.switcher, self._rules, self._counters)
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
        return self._rules.scrub(text)

    def statistics(self) -> ControlStatistics:
        return ControlStatistics(
            connections_open=self._open,
            connections_total=self._total,
            connections_refused=self._connections_refused,
            **attrs.asdict(self._counters),
        )


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
