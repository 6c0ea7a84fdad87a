"""The OpenAI-compatible HTTP gateway, as a plain ASGI application on trio.

Endpoints: ``POST /v1/chat/completions`` (JSON or SSE), ``GET /v1/models``,
``GET /healthz``, ``GET /readyz`` and ``GET /metrics`` (HEAD too, for each GET).
Every response carries ``x-oswitch-request-id``, and every failure is an OpenAI-shaped
error: 4xx for the caller's faults, 500 ``internal_error`` for ours. A websocket
handshake (``oswitch ctl`` pointed at this port) gets a 404 saying where the control
channel is. A client that
disconnects (or stops reading, see :mod:`oswitch.sidecar.listener`) cancels its
request, which cancels the upstream attempt and closes its connection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import attrs
import trio

from oswitch.core.chat_request import MAX_DEPTH, chat_request_problems, describe
from oswitch.core.clip import shorten
from oswitch.core.secret import Secret
from oswitch.errors import SwitcherError
from oswitch.metrics import CONTENT_TYPE, SwitcherMetrics
from oswitch.runtime.entry import new_request_id
from oswitch.runtime.switcher import Switcher
from oswitch.sidecar.errors import HttpError, bad_request, http_error_for, internal_error

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("oswitch.sidecar")

CLOSE = (b"connection", b"close")


@attrs.define
class _RequestState:
    """One chat request as the HTTP layer sees it. ``answered``: the answer is complete
    (or its error decided), so a disconnect after that is just the client leaving."""

    stream: bool
    started: float
    answered: bool = False
    first_token_at: float | None = None


class _Responder:
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


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


class ClientGone(Exception):
    pass


def _non_finite(literal: str) -> float:
    # NaN, Infinity and -Infinity are not JSON. They are read as the floats they name so
    # that the request check refuses them naming their path ($.temperature), exactly as
    # it refuses 1e999, which the decoder reads as infinity.
    return float(literal)


def _sse(payload: object) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _error_type(exc: BaseException) -> str:
    """The exception's type, and for a group the types inside it (never its message,
    which may quote a caller's input)."""
    if isinstance(exc, BaseExceptionGroup):
        return f"{type(exc).__name__}({', '.join(_error_type(e) for e in exc.exceptions)})"
    return type(exc).__name__


def _ambiguous_framing(scope: Scope) -> bool:
    """Both Content-Length and Transfer-Encoding: RFC 9112 §6.3 says such a request may
    be an attempt at request smuggling; it is refused and its connection closed."""
    names = {name.lower() for name, _ in scope.get("headers", ())}
    return b"content-length" in names and b"transfer-encoding" in names


class SidecarApp:
    """The ASGI app; one per switcher.

    ``api_keys``: when given, clients must send one as ``Authorization: Bearer``
    (compared in constant time). ``max_body_bytes`` bounds request bodies (413);
    ``body_timeout_s`` the time to receive one once its headers are in (408).
    """

    def __init__(
        self,
        switcher: Switcher,
        *,
        api_keys: tuple[Secret, ...] = (),
        max_body_bytes: int = 4 * 1024 * 1024,
        body_timeout_s: float = 30.0,
        metrics: SwitcherMetrics | None = None,
    ) -> None:
        self.switcher = switcher
        self.api_keys = api_keys
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.metrics = metrics or SwitcherMetrics(switcher)
        self._routes: dict[str, tuple[str, Callable[..., Awaitable[None]]]] = {
            "/v1/chat/completions": ("POST", self._chat),
            "/chat/completions": ("POST", self._chat),
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
            return
        request_id = new_request_id()
        responder = _Responder(send)
        try:
            await self._route(scope, receive, responder, request_id)
        except Exception as exc:
            # Ours, not the caller's: answered in the documented shape, logged once
            # (the type only: a message may quote the caller), and the server goes on.
            log.error("handler_failed", extra={"request_id": request_id, "note": _error_type(exc)})
            await self._internal_error(responder, request_id)

    async def _route(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        method, path = scope["method"], scope["path"]
        if _ambiguous_framing(scope):
            await self._error(
                send,
                request_id,
                bad_request(
                    "a request may not carry both Content-Length and Transfer-Encoding",
                    code="ambiguous_framing",
                ),
                [CLOSE],
            )
            return
        route = self._routes.get(path)
        if route is None:
            await self._error(
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
        # HEAD is GET without the body (hypercorn drops the body bytes for HEAD).
        if method != allowed and not (method == "HEAD" and allowed == "GET"):
            allow = b"GET, HEAD" if allowed == "GET" else allowed.encode()
            await self._error(
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

    async def _internal_error(self, responder: _Responder, request_id: str) -> None:
        failure = internal_error(request_id)
        try:
            if not responder.started:
                await self._error(responder, request_id, failure, [CLOSE])
            elif responder.event_stream and not responder.finished:
                await responder(
                    {"type": "http.response.body", "body": _sse(failure.body()), "more_body": False}
                )
            # Otherwise a plain reply broke half-way: hypercorn closes the connection.
        except Exception as exc:
            # The connection itself is what failed: nothing more can be said on it.
            log.info(
                "handler_failed_unanswered",
                extra={"request_id": request_id, "note": _error_type(exc)},
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

    # ---- responses ---------------------------------------------------------------

    async def _json(
        self,
        send: Send,
        request_id: str,
        status: int,
        payload: object,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        body = json.dumps(payload).encode()
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

    async def _error(
        self,
        send: Send,
        request_id: str,
        error: HttpError,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        await self._json(
            send, request_id, error.status, error.body(), [*error.headers(), *(headers or [])]
        )

    # ---- simple endpoints --------------------------------------------------------

    async def _models(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "oswitch"}
            for name in self.switcher.models()
        ]
        await self._json(send, request_id, 200, {"object": "list", "data": data})

    async def _healthz(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        await self._json(send, request_id, 200, {"status": "ok"})

    async def _readyz(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        admission = self.switcher.statistics().admission
        if not self.switcher.ready():
            await self._json(
                send, request_id, 503, {"ready": False, "reason": "no target is eligible"}
            )
        elif admission.backpressure:
            await self._json(
                send,
                request_id,
                503,
                {"ready": False, "reason": f"backpressure: {admission.queued} queued"},
            )
        else:
            await self._json(send, request_id, 200, {"ready": True})

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

    # ---- chat completions --------------------------------------------------------

    def _authorized(self, scope: Scope) -> bool:
        if not self.api_keys:
            return True
        header = b""
        for name, value in scope.get("headers", ()):
            if name.lower() == b"authorization":
                header = value
        text = header.decode("latin-1")
        if not text.lower().startswith("bearer "):
            return False
        offered = text[7:].strip()
        # Check every key, so timing does not tell which one almost matched.
        matches = [key.matches(offered) for key in self.api_keys]
        return any(matches)

    async def _read_body(self, receive: Receive) -> bytes:
        """The whole body, within ``max_body_bytes`` and ``body_timeout_s`` (counted
        from the app's start, which is when the request's headers were in)."""
        chunks: list[bytes] = []
        size = 0
        with trio.move_on_after(self.body_timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise BodyTooLarge
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        raise BodyTimeout

    async def _chat(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        if not self._authorized(scope):
            await self._error(
                send,
                request_id,
                HttpError(
                    status=401,
                    message="missing or invalid API key for this gateway",
                    type="invalid_request_error",
                    code="invalid_api_key",
                ),
            )
            return
        try:
            raw = await self._read_body(receive)
        except ClientGone:
            return
        except BodyTooLarge:
            await self._error(
                send,
                request_id,
                HttpError(
                    status=413,
                    message=f"request body over {self.max_body_bytes} bytes",
                    type="invalid_request_error",
                    code="body_too_large",
                ),
            )
            return
        except BodyTimeout:
            log.info("request_body_timeout", extra={"request_id": request_id})
            await self._error(
                send,
                request_id,
                HttpError(
                    status=408,
                    message=f"request body not received within {self.body_timeout_s:g} s",
                    type="invalid_request_error",
                    code="body_timeout",
                ),
                [CLOSE],
            )
            return
        try:
            body = json.loads(raw, parse_constant=_non_finite)
        except ValueError as exc:
            await self._error(
                send,
                request_id,
                bad_request(
                    f"request body is not valid JSON: {shorten(str(exc), 200)}", code="invalid_json"
                ),
            )
            return
        except RecursionError:
            # The decoder recursed past the interpreter's limit: far beyond MAX_DEPTH.
            await self._error(
                send,
                request_id,
                bad_request(
                    f"not a chat completion request: nested deeper than {MAX_DEPTH} levels @ $",
                    param="$",
                ),
            )
            return
        problems = chat_request_problems(body)
        if problems:
            await self._error(
                send, request_id, bad_request(describe(problems), param=problems[0][0])
            )
            return
        state = _RequestState(stream=body.get("stream") is True, started=trio.current_time())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_disconnect, receive, nursery.cancel_scope, state)
            if state.stream:
                await self._stream(send, request_id, body, state)
            else:
                await self._complete(send, request_id, body, state)
            nursery.cancel_scope.cancel()

    async def _watch_disconnect(
        self, receive: Receive, scope: trio.CancelScope, state: _RequestState
    ) -> None:
        """Cancel the request when the client goes away before its answer is complete
        (it closed the connection, or stopped reading past ``write_timeout_ms``), and
        count it as ``client_cancelled``."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not state.answered:
                    log.info("client_disconnected")
                    self._observe(None, state, outcome="client_cancelled")
                    scope.cancel()
                return

    async def _complete(
        self, send: Send, request_id: str, body: dict[str, Any], state: _RequestState
    ) -> None:
        try:
            reply = await self.switcher.complete(body, request_id=request_id)
        except SwitcherError as error:
            self._observe(error, state)
            await self._error(send, request_id, http_error_for(error))
            return
        self._observe(None, state)
        await self._json(send, request_id, 200, reply)

    async def _stream(
        self, send: Send, request_id: str, body: dict[str, Any], state: _RequestState
    ) -> None:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        try:
            async with self.switcher.stream(body, request_id=request_id) as chunks:
                state.first_token_at = trio.current_time()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [
                            (b"content-type", b"text/event-stream"),
                            (b"cache-control", b"no-cache"),
                            (b"x-oswitch-request-id", request_id.encode()),
                        ],
                    }
                )
                usage: Any = None
                usage_sent = False
                try:
                    async for chunk in chunks:
                        if chunk.get("usage"):
                            usage = chunk["usage"]
                            usage_sent = usage_sent or not chunk.get("choices")
                        await send(
                            {"type": "http.response.body", "body": _sse(chunk), "more_body": True}
                        )
                except SwitcherError as error:
                    # Content already went out (or the request's deadline passed while it
                    # was being delivered): say so in-band, and never send [DONE].
                    self._observe(error, state)
                    failure = http_error_for(error)
                    await send(
                        {
                            "type": "http.response.body",
                            "body": _sse(failure.body()),
                            "more_body": False,
                        }
                    )
                    return
                tail = b""
                if include_usage and usage is not None and not usage_sent:
                    tail += _sse(
                        {
                            "id": f"chatcmpl-{request_id}",
                            "object": "chat.completion.chunk",
                            "model": body["model"],
                            "choices": [],
                            "usage": usage,
                        }
                    )
                tail += b"data: [DONE]\n\n"
                self._observe(None, state)
                await send({"type": "http.response.body", "body": tail, "more_body": False})
        except SwitcherError as error:
            # Nothing went out yet: an honest status code is still possible.
            self._observe(error, state)
            await self._error(send, request_id, http_error_for(error))

    def _observe(
        self, error: SwitcherError | None, state: _RequestState, *, outcome: str | None = None
    ) -> None:
        """Count the request once, as finished: ``ok``, the error raised, or
        ``client_cancelled``; after this a disconnect is just the client leaving."""
        state.answered = True
        error_class = getattr(error, "error_class", None)
        self.metrics.observe_request(
            outcome=outcome or ("ok" if error is None else type(error).__name__),
            error_class="" if error_class is None else str(error_class),
            stream=state.stream,
            started=state.started,
            first_token_at=state.first_token_at,
        )
