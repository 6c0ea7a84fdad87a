"""A small control-channel client, as ``oswitch ctl`` and tests use it.

::

    async with open_control("ws://127.0.0.1:8788", token=token) as control:
        for view in await control.list_targets():
            print(view["target_id"], view["state"])
        await control.pause_target("openai-a")

The client runs no background task: each call sends one command and reads frames
until its reply arrives, keeping any event frames met on the way for
``next_event``. Use one client from one task at a time (calls from several tasks
queue behind each other).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from oswitch.core.secret import Secret
from oswitch.errors import SwitcherError

# Replies can be large (a thousand targets listed); the client trusts its server more
# than the server trusts its clients.
CLIENT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
EVENT_BUFFER = 1024


class ControlError(SwitcherError):
    """Base class of the control client's errors."""


class ControlConnectionError(ControlError):
    """The control channel could not be reached, refused the token, or went away.

    ``code`` is the server's error code when it sent one (``auth_failed``,
    ``auth_required``, ``auth_timeout``), ``close_code`` the websocket close code
    when the connection was closed (1008 for refused authentication).
    """

    def __init__(
        self, message: str, *, code: str | None = None, close_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.close_code = close_code


class CommandRefused(ControlError):
    """The server answered a command with ``ok: false``.

    ``code`` and ``message`` are the server's; ``problems`` the ``(path, reason)``
    pairs of a ``bad_argument`` or ``invalid_config`` refusal.
    """

    def __init__(self, code: str, message: str, problems: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.problems: tuple[tuple[str, str], ...] = tuple(problems)


def _refusal(error: object) -> CommandRefused:
    if not isinstance(error, Mapping):
        return CommandRefused("bad_reply", "the server sent an error without details")
    problems = [
        (str(p.get("path", "")), str(p.get("reason", "")))
        for p in error.get("problems", ())
        if isinstance(p, Mapping)
    ]
    return CommandRefused(str(error.get("code", "")), str(error.get("message", "")), problems)


def _closed(exc: ConnectionClosed, during: str) -> ControlConnectionError:
    reason = exc.reason
    if reason is None:
        return ControlConnectionError(f"connection lost {during}")
    detail = f": {reason.reason}" if reason.reason else ""
    return ControlConnectionError(
        f"connection closed {during} (code {reason.code}{detail})", close_code=reason.code
    )


class ControlClient:
    """An authenticated connection to a control server; get one from ``open_control``."""

    def __init__(self, ws: WebSocketConnection, *, event_buffer: int = EVENT_BUFFER) -> None:
        self._ws = ws
        self._next_id = 0
        self._lock = trio.Lock()
        self._events: deque[dict[str, Any]] = deque()
        self._event_buffer = event_buffer
        self.events_dropped = 0
        """Events discarded because more than ``event_buffer`` arrived while a
        call waited for its reply (the oldest go first)."""

    async def _send(self, frame: Mapping[str, Any]) -> None:
        try:
            await self._ws.send_message(json.dumps(frame))
        except ConnectionClosed as exc:
            raise _closed(exc, "while sending") from None

    async def _receive(self) -> dict[str, Any]:
        try:
            text = await self._ws.get_message()
        except ConnectionClosed as exc:
            raise _closed(exc, "while waiting for the server") from None
        try:
            frame = json.loads(text)
        except ValueError:
            frame = None
        if not isinstance(frame, dict):
            raise ControlConnectionError("the server sent a frame that is not a JSON object")
        return frame

    def _keep(self, event: dict[str, Any]) -> None:
        if len(self._events) >= self._event_buffer:
            self._events.popleft()
            self.events_dropped += 1
        self._events.append(event)

    async def _authenticate(self, token: Secret) -> dict[str, Any]:
        await self._send({"op": "auth", "token": token.reveal()})
        try:
            frame = await self._receive()
        except ControlConnectionError as exc:
            raise ControlConnectionError(
                f"authentication failed: {exc}", close_code=exc.close_code
            ) from None
        if frame.get("ok") is True:
            result = frame.get("result")
            return result if isinstance(result, dict) else {}
        refusal = _refusal(frame.get("error"))
        raise ControlConnectionError(
            f"authentication refused: {refusal.message}",
            code=refusal.code,
            close_code=1008,
        )

    async def call(self, op: str, **arguments: Any) -> Any:
        """Send command ``op`` with ``arguments`` and return its ``result``.

        Raises CommandRefused when the server answers ``ok: false`` and
        ControlConnectionError when the connection ends first.
        """
        async with self._lock:
            self._next_id += 1
            request_id = self._next_id
            await self._send({"id": request_id, "op": op, **arguments})
            while True:
                frame = await self._receive()
                if "event" in frame:
                    self._keep(frame)
                elif frame.get("id") == request_id:
                    if frame.get("ok") is True:
                        return frame.get("result")
                    raise _refusal(frame.get("error"))

    async def next_event(self) -> dict[str, Any]:
        """The next event frame (``{"event", "at", "topic", "fields"}``) of the
        subscription, waiting for one if none is kept.

        Raises ControlConnectionError when the connection ends first.
        """
        async with self._lock:
            if self._events:
                await trio.lowlevel.checkpoint()
                return self._events.popleft()
            while True:
                frame = await self._receive()
                if "event" in frame:
                    return frame

    async def list_targets(self) -> list[dict[str, Any]]:
        """Every target's view. Raises as :meth:`call`."""
        result = await self.call("list_targets")
        return list(result["targets"])

    async def pause_target(self, target_id: str) -> dict[str, Any]:
        """Pause a target; return its view after the change. Raises as :meth:`call`."""
        return dict((await self.call("pause_target", target_id=target_id))["target"])

    async def resume_target(self, target_id: str) -> dict[str, Any]:
        """Resume a target; return its view after the change. Raises as :meth:`call`."""
        return dict((await self.call("resume_target", target_id=target_id))["target"])

    async def drain_target(self, target_id: str) -> dict[str, Any]:
        """Drain a target; return its view once draining began. Raises as :meth:`call`."""
        return dict((await self.call("drain_target", target_id=target_id))["target"])

    async def disable_target(self, target_id: str) -> dict[str, Any]:
        """Disable a target; return its view after the change. Raises as :meth:`call`."""
        return dict((await self.call("disable_target", target_id=target_id))["target"])

    async def inspect_request(self, request_id: str) -> dict[str, Any]:
        """A request's trace. Raises as :meth:`call` (``unknown_request``)."""
        return dict((await self.call("inspect_request", request_id=request_id))["trace"])

    async def reload_config(
        self, *, path: str | None = None, config: Mapping[str, Any] | None = None
    ) -> list[str]:
        """Reload from ``path`` (read by the server) or an inline ``config``; return
        the new target ids. Raises as :meth:`call` (``invalid_config``)."""
        arguments: dict[str, Any] = {}
        if path is not None:
            arguments["path"] = path
        if config is not None:
            arguments["config"] = dict(config)
        return list((await self.call("reload_config", **arguments))["target_ids"])

    async def subscribe(self, topics: Sequence[str] | None = None) -> list[str]:
        """Start (or change) the event stream; return the topics subscribed to.
        Raises as :meth:`call`."""
        arguments = {} if topics is None else {"topics": list(topics)}
        return list((await self.call("subscribe", **arguments))["topics"])

    async def unsubscribe(self) -> None:
        """Stop the event stream. Raises as :meth:`call`."""
        await self.call("unsubscribe")


def _what_answered(headers: Sequence[tuple[bytes, bytes]]) -> str:
    """Why an HTTP server refused the websocket handshake, as far as its headers tell."""
    if any(name.lower() == b"x-oswitch-request-id" for name, _ in headers):
        return (
            "this is oswitch's HTTP sidecar port, not its control channel "
            "(the control channel listens on control.port, e.g. 8788)"
        )
    return "not an oswitch control channel (is this the right port?)"


@asynccontextmanager
async def open_control(
    url: str,
    *,
    token: Secret | str,
    connect_timeout_s: float = 10.0,
    max_message_bytes: int = CLIENT_MAX_MESSAGE_BYTES,
    event_buffer: int = EVENT_BUFFER,
) -> AsyncIterator[ControlClient]:
    """Connect to the control channel at ``url`` (``ws://HOST:PORT``), authenticate
    with ``token`` and yield a :class:`ControlClient`; close the connection on exit.

    Raises ControlConnectionError when the URL is invalid, the server cannot be
    reached or handshaken within ``connect_timeout_s``, or the token is refused.
    """
    secret = Secret(token) if isinstance(token, str) else token
    if not secret:
        raise ControlConnectionError("no control token given")
    async with AsyncExitStack() as stack:
        try:
            # open_websocket_url owns a nursery, so it is entered outside any cancel
            # scope of ours and bounded by its own connect_timeout.
            ws = await stack.enter_async_context(
                open_websocket_url(
                    url,
                    max_message_size=max_message_bytes,
                    connect_timeout=connect_timeout_s,
                    disconnect_timeout=2.0,
                )
            )
        except ConnectionRejected as exc:
            raise ControlConnectionError(
                f"cannot connect to {url}: handshake rejected (HTTP {exc.status_code}): "
                f"{_what_answered(exc.headers)}"
            ) from None
        except HandshakeError as exc:
            cause = exc.__cause__ or exc.__context__
            detail = str(cause) if cause is not None else f"no answer in {connect_timeout_s:g} s"
            raise ControlConnectionError(f"cannot connect to {url}: {detail}") from None
        except (OSError, ValueError) as exc:
            raise ControlConnectionError(f"cannot connect to {url}: {exc}") from None
        client = ControlClient(ws, event_buffer=event_buffer)
        authenticated = False
        with trio.move_on_after(connect_timeout_s):
            await client._authenticate(secret)
            authenticated = True
        if not authenticated:
            raise ControlConnectionError(
                f"no answer to authentication from {url} within {connect_timeout_s:g} s"
            )
        yield client
