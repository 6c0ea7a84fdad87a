"""The OpenAI-compatible HTTP gateway, as a plain ASGI application on trio.

Endpoints: ``POST /v1/chat/completions`` (JSON or SSE), ``POST /v1/messages`` and
``POST /v1/messages/count_tokens`` (Anthropic's shapes, oswitch.sidecar.messages),
``GET /v1/models``, ``GET /healthz``, ``GET /readyz`` and ``GET /metrics`` (HEAD too,
for each GET), and ``/dashboard`` (oswitch.sidecar.dashboard) when the app is given one.
Every response carries ``x-oswitch-request-id``, and every failure is an OpenAI-shaped
error (Anthropic-shaped under ``/v1/messages``): 4xx for the caller's faults, 500
``internal_error`` for ours. A websocket handshake (``oswitch ctl`` pointed at this
port) gets a 404 saying where the control channel is. A client that
disconnects (or stops reading, see :mod:`oswitch.sidecar.listener`) cancels its
request, which cancels the upstream attempt and closes its connection.

This module routes and answers the simple endpoints; the chat endpoint is
oswitch.sidecar.chat, the response helpers oswitch.sidecar.responses.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import trio

from oswitch.core.anthropic_outbound import MessagesStreamEncoder
from oswitch.core.clip import shorten
from oswitch.core.secret import Secret
from oswitch.metrics import CONTENT_TYPE, SwitcherMetrics
from oswitch.otel import Tracing
from oswitch.runtime.entry import new_request_id
from oswitch.runtime.switcher import Switcher
from oswitch.sidecar.chat import BodyTimeout, BodyTooLarge, ChatCompletions, ClientGone
from oswitch.sidecar.dashboard import Dashboard
from oswitch.sidecar.errors import HttpError, bad_request, internal_error
from oswitch.sidecar.messages import Messages, send_anthropic_error
from oswitch.sidecar.responses import (
    CLOSE,
    Receive,
    Responder,
    Scope,
    Send,
    error_type,
    send_json,
    sse,
)
from oswitch.sidecar.responses import send_error as send_openai_error

# The chat endpoint's refusals, importable from here as before.
__all__ = ["BodyTimeout", "BodyTooLarge", "ClientGone", "SidecarApp"]

log = logging.getLogger("oswitch.sidecar")


def _ambiguous_framing(scope: Scope) -> bool:
    """Both Content-Length and Transfer-Encoding: RFC 9112 §6.3 says such a request may
    be an attempt at request smuggling; it is refused and its connection closed."""
    # ASGI servers hand header names over lower-cased.
    names = [name for name, _ in scope.get("headers", ())]
    return b"content-length" in names and b"transfer-encoding" in names


def _is_messages(scope: Scope) -> bool:
    """Whether the request is for one of the Messages endpoints (Anthropic's shapes)."""
    path = str(scope.get("path", ""))
    return path == "/v1/messages" or path.startswith("/v1/messages/")


class SidecarApp:
    """The ASGI app; one per switcher.

    ``api_keys``: when given, clients must send one as ``Authorization: Bearer`` or
    ``x-api-key`` (compared in constant time), on every routing endpoint.
    ``max_body_bytes`` bounds request bodies (413); ``body_timeout_s`` the time to
    receive one once its headers are in (408).
    ``dashboard``: served under ``/dashboard`` (its own guard; ``api_keys`` do not
    open it); without one, ``/dashboard`` is a 404 like any unknown path.
    ``tracing``: each chat request becomes spans (oswitch.otel) when it ends.
    """

    def __init__(
        self,
        switcher: Switcher,
        *,
        api_keys: tuple[Secret, ...] = (),
        max_body_bytes: int = 4 * 1024 * 1024,
        body_timeout_s: float = 30.0,
        metrics: SwitcherMetrics | None = None,
        dashboard: Dashboard | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.switcher = switcher
        self.dashboard = dashboard
        self.metrics = metrics or SwitcherMetrics(switcher)
        self._chat = ChatCompletions(
            switcher,
            api_keys=api_keys,
            max_body_bytes=max_body_bytes,
            body_timeout_s=body_timeout_s,
            metrics=self.metrics,
            tracing=tracing,
        )
        self._messages = Messages(switcher, self._chat)
        self._routes: dict[str, tuple[str, Callable[..., Awaitable[None]]]] = {
            "/v1/chat/completions": ("POST", self._chat),
            "/chat/completions": ("POST", self._chat),
            "/v1/messages": ("POST", self._messages),
            "/v1/messages/count_tokens": ("POST", self._messages.count_tokens),
            "/v1/models": ("GET", self._models),
            "/healthz": ("GET", self._healthz),
            "/readyz": ("GET", self._readyz),
            "/metrics": ("GET", self._metrics),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await trio.lowlevel.checkpoint()  # a scope type no server sends us
            return
        request_id = new_request_id()
        responder = Responder(send)
        try:
            await self._route(scope, receive, responder, request_id)
        except Exception as exc:
            # Ours, not the caller's: answered in the documented shape, logged once
            # (the type only: a message may quote the caller), and the server goes on.
            log.error("handler_failed", extra={"request_id": request_id, "note": error_type(exc)})
            await self._internal_error(responder, request_id, messages=_is_messages(scope))

    async def _route(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        method, path = scope["method"], scope["path"]
        # A refusal on a Messages path is in Anthropic's shape, elsewhere in OpenAI's.
        send_error = send_anthropic_error if _is_messages(scope) else send_openai_error
        if _ambiguous_framing(scope):
            await send_error(
                send,
                request_id,
                bad_request(
                    "a request may not carry both Content-Length and Transfer-Encoding",
                    code="ambiguous_framing",
                ),
                [CLOSE],
            )
            return
        if self.dashboard is not None and (path == "/dashboard" or path.startswith("/dashboard/")):
            await self.dashboard(scope, receive, send, request_id)
            return
        route = self._routes.get(path)
        if route is None:
            await send_error(
                send,
                request_id,
                HttpError(
                    status=404,
                    message=f"no such endpoint: {shorten(path)}",
                    type="invalid_request_error",
                    code="not_found",
                ),
            )
            return
        allowed, handler = route
        # HEAD is GET without the body (the server drops the body bytes for HEAD).
        if method != allowed and not (method == "HEAD" and allowed == "GET"):
            allow = b"GET, HEAD" if allowed == "GET" else allowed.encode()
            await send_error(
                send,
                request_id,
                HttpError(
                    status=405,
                    message=f"{path} takes {allowed}, not {shorten(method)}",
                    type="invalid_request_error",
                    code="method_not_allowed",
                ),
                [(b"allow", allow)],
            )
            return
        await handler(scope, receive, send, request_id)

    async def _internal_error(
        self, responder: Responder, request_id: str, *, messages: bool = False
    ) -> None:
        # Rare (a handler's bug), and it may end without sending anything: checkpoint
        # first, so every way out is one.
        await trio.lowlevel.checkpoint()
        failure = internal_error(request_id)
        try:
            if not responder.started:
                send_error = send_anthropic_error if messages else send_openai_error
                await send_error(responder, request_id, failure, [CLOSE])
            elif responder.event_stream and not responder.finished:
                event = (
                    MessagesStreamEncoder.error("api_error", failure.message)
                    if messages
                    else sse(failure.body())
                )
                await responder({"type": "http.response.body", "body": event, "more_body": False})
            # Otherwise a plain reply broke half-way: the server closes the connection.
        except Exception as exc:
            # The connection itself is what failed: nothing more can be said on it.
            log.info(
                "handler_failed_unanswered",
                extra={"request_id": request_id, "note": error_type(exc)},
            )

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A websocket handshake here is a control client on the wrong port: refuse it
        with a plain HTTP 404 that says where the control channel is and carries
        ``x-oswitch-request-id`` (which ``oswitch ctl`` recognises), rather than the
        bare 500 a server sends for an app that never answers the handshake."""
        message = await receive()
        if message["type"] != "websocket.connect":
            return  # the client left before its handshake reached us
        request_id = new_request_id()
        error = HttpError(
            status=404,
            message=(
                "this is oswitch's HTTP sidecar port, not its control channel: "
                "the control channel (websocket) listens on control.port"
            ),
            type="invalid_request_error",
            code="not_control_channel",
        )
        if "websocket.http.response" not in scope.get("extensions", {}):
            # The server cannot send a response of ours: a refusal is all there is.
            await send({"type": "websocket.close"})
            return
        body = json.dumps(error.body()).encode()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": error.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-oswitch-request-id", request_id.encode()),
                    CLOSE,
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body, "more_body": False})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ---- simple endpoints --------------------------------------------------------

    async def _models(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "oswitch"}
            for name in self.switcher.models()
        ]
        await send_json(send, request_id, 200, {"object": "list", "data": data})

    async def _healthz(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        body: dict[str, object] = {"status": "ok"}
        fleet = self.switcher.fleet
        if fleet is not None:
            # Degraded is still alive (on_store_error applies), but said loudly.
            stats = fleet.statistics()
            body["store"] = {
                "degraded": stats.store.degraded,
                "on_store_error": stats.mode,
                "replica": stats.replica_id,
                "last_error": stats.store.last_error,
            }
        await send_json(send, request_id, 200, body)

    async def _readyz(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        admission = self.switcher.statistics().admission
        if not self.switcher.ready():
            await send_json(
                send, request_id, 503, {"ready": False, "reason": "no target is eligible"}
            )
        elif admission.backpressure:
            await send_json(
                send,
                request_id,
                503,
                {"ready": False, "reason": f"backpressure: {admission.queued} queued"},
            )
        else:
            await send_json(send, request_id, 200, {"ready": True})

    async def _metrics(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        body = self.metrics.render()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", CONTENT_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-oswitch-request-id", request_id.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
