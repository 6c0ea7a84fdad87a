"""How the sidecar answers over ASGI: a JSON body, an OpenAI-shaped error, an SSE
event, and a ``send`` that remembers how far its response got.

Every response carries ``x-oswitch-request-id``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, MutableMapping
from types import TracebackType
from typing import Any, Protocol

import trio

from oswitch.core.json_codec import encode
from oswitch.sidecar.errors import HttpError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CLOSE = (b"connection", b"close")
"""The header that closes the connection once the response is sent."""

DISCONNECT_EXTENSION = "oswitch.disconnect"
"""An ASGI extension of oswitch's own server: ``scope["extensions"][DISCONNECT_EXTENSION]``
takes a callback (or None to unregister) that the server calls once, from its reader
task, if the client leaves before the response is complete, so an app learns it
without a task waiting in ``receive``."""

BODY_IN_HAND_EXTENSION = "oswitch.body_in_hand"
"""An ASGI extension of oswitch's own server: ``scope["extensions"][BODY_IN_HAND_EXTENSION]()``
is True when what is left of the request body is already in the server's buffer, so
reading it cannot wait on the client (an app may skip its body deadline then)."""

REQUEST_SCOPE_EXTENSION = "oswitch.request_scope"
"""An ASGI extension of oswitch's own server: the trio cancel scope the request's app
runs in. Cancelling it (from any task) ends the request at once, and the connection
with it: what an app's disconnect callback does, instead of entering a scope of its own."""


class Corkable(Protocol):
    """A client connection whose writes can be held and sent as one (the listener's)."""

    def cork(self) -> None: ...

    async def uncork(self) -> None: ...


CONNECTION: contextvars.ContextVar[Corkable | None] = contextvars.ContextVar(
    "oswitch_sidecar_connection", default=None
)
"""The connection the current request arrived on, set by the listener for the tasks
of each connection; None under any other ASGI server (then nothing is corked)."""


class OneWrite:
    """``async with OneWrite():`` — what the app sends inside the block reaches the
    client's socket in one write when the block ends (a reply's head and body, or a
    stream's last events and its end). The block must not wait on anything but those
    sends: nothing goes out until it ends. Leaving it writes whatever was held, shielded
    (bounded by the connection's write timeout), even when cancelled."""

    __slots__ = ("_connection",)

    def __init__(self) -> None:
        self._connection = CONNECTION.get()

    async def __aenter__(self) -> None:
        # Checkpoint first: a cancellation here must not leave the connection corked.
        await trio.lowlevel.checkpoint()
        if self._connection is not None:
            self._connection.cork()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._connection is not None:
            await self._connection.uncork()
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()


class Responder:
    """``send`` that remembers how far the response got, so a handler's unexpected
    failure can still be answered in the right shape (a 500, or an in-band event)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.finished = False
        self.event_stream = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.event_stream = (b"content-type", b"text/event-stream") in message["headers"]
        elif not message.get("more_body", False):
            self.finished = True
        await self._send(message)


def sse(payload: object) -> bytes:
    """``payload`` as one server-sent event: ``data: <compact JSON>`` and a blank line."""
    return b"data: " + encode(payload) + b"\n\n"


def error_type(exc: BaseException) -> str:
    """The exception's type, and for a group the types inside it (never its message,
    which may quote a caller's input)."""
    if isinstance(exc, BaseExceptionGroup):
        return f"{type(exc).__name__}({', '.join(error_type(e) for e in exc.exceptions)})"
    return type(exc).__name__


async def send_json(
    send: Send,
    request_id: str,
    status: int,
    payload: object,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send a whole JSON response: ``status``, ``payload`` and any extra ``headers``.
    Blocks until the server took both messages (oswitch's server writes a head with its
    body's first bytes, so the two go out in one write without corking)."""
    body = encode(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-oswitch-request-id", request_id.encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(
    send: Send,
    request_id: str,
    error: HttpError,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send ``error`` as its status and OpenAI error JSON, with its own headers
    (Retry-After) and any extra ``headers``. Blocks as :func:`send_json` does."""
    await send_json(
        send, request_id, error.status, error.body(), [*error.headers(), *(headers or [])]
    )
