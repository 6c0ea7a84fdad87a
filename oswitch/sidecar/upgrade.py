"""A websocket handshake on the sidecar's port, which serves no websockets.

The app sees a ``websocket`` scope with the ``websocket.http.response`` extension, so it
can refuse the handshake with a response of its own (the sidecar's 404 says where the
control channel listens); an app that closes or answers nothing gets a plain 403.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any, Protocol

import trio

from oswitch.sidecar.h1 import BadRequest
from oswitch.sidecar.responses import ASGIApp, Message

log = logging.getLogger("oswitch.sidecar")


class Connection(Protocol):
    """What a handshake's refusal needs of its connection (an HttpConnection)."""

    started: bool
    client_gone: bool

    async def receive(self) -> Message: ...

    async def send(self, message: Message) -> None: ...

    async def refuse(self, bad: BadRequest) -> None: ...


async def refuse_websocket(
    connection: Connection, app: ASGIApp, scope: MutableMapping[str, Any]
) -> None:
    """Run ``app`` for a websocket handshake on ``connection`` and send its refusal.
    Blocks until the refusal is written; raises RuntimeError for an app that tries to
    accept (this server speaks no websocket)."""
    connected = False

    async def receive() -> Message:
        nonlocal connected
        if not connected:
            connected = True
            await trio.lowlevel.checkpoint()
            return {"type": "websocket.connect"}
        message = await connection.receive()
        if message["type"] == "http.disconnect":
            return {"type": "websocket.disconnect", "code": 1006}
        return message

    async def send(message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.http.response.start":
            await connection.send({**message, "type": "http.response.start"})
        elif kind == "websocket.http.response.body":
            await connection.send({**message, "type": "http.response.body"})
        elif kind == "websocket.close" and not connection.started:
            await connection.refuse(BadRequest("websocket refused", 403))
        else:
            raise RuntimeError(f"websocket message {kind!r} is not supported here")

    try:
        await app(scope, receive, send)
    except Exception as exc:
        log.error("asgi_app_failed", extra={"note": type(exc).__name__})
    if not connection.started and not connection.client_gone:
        await connection.refuse(BadRequest("websocket refused", 403))
    else:
        await trio.lowlevel.checkpoint()
