"""The OpenAI-compatible HTTP gateway, as a plain ASGI application on trio.

Endpoints: ``POST /v1/chat/completions`` (JSON or SSE), ``GET /v1/models``,
``GET /healthz``, ``GET /readyz`` and ``GET /metrics``. Every response carries
``x-oswitch-request-id``. A client that disconnects cancels its request, which
cancels the upstream attempt and closes its connection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

from oswitch.core.secret import Secret
from oswitch.errors import SwitcherError
from oswitch.runtime.switcher import Switcher, new_request_id
from oswitch.sidecar.errors import HttpError, bad_request, http_error_for
from oswitch.sidecar.metrics import CONTENT_TYPE, SwitcherMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("oswitch.sidecar")

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


class _RequestState:
    """Whether the answer is complete: a disconnect after that is just the client leaving."""

    answered = False


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


def chat_request_problems(body: object) -> list[tuple[str, str]]:
    """What makes ``body`` not a chat-completions request, as ``(path, reason)`` pairs."""
    if not isinstance(body, dict):
        return [("$", f"must be a JSON object (got {type(body).__name__})")]
    problems: list[tuple[str, str]] = []
    model = body.get("model")
    if not isinstance(model, str) or not model:
        problems.append(("$.model", "required: a non-empty string"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        problems.append(("$.messages", "required: a non-empty array of messages"))
    else:
        for index, message in enumerate(messages):
            path = f"$.messages[{index}]"
            if not isinstance(message, dict):
                problems.append((path, "must be an object"))
                continue
            role = message.get("role")
            if role not in ROLES:
                problems.append((f"{path}.role", f"must be one of {sorted(ROLES)} (got {role!r})"))
            content = message.get("content")
            if content is not None and not isinstance(content, str | list):
                problems.append((f"{path}.content", "must be a string, an array or null"))
    if "stream" in body and not isinstance(body["stream"], bool):
        problems.append(("$.stream", "must be true or false"))
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        problems.append(("$.max_tokens", "must be an integer >= 1"))
    if body.get("stream") is True and body.get("n", 1) != 1:
        problems.append(("$.n", "streaming supports n = 1 only"))
    return problems


def _sse(payload: object) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class SidecarApp:
    """The ASGI app; one per switcher.

    ``api_keys``: when given, clients must send one as ``Authorization: Bearer``
    (compared in constant time). ``max_body_bytes`` bounds request bodies (413).
    """

    def __init__(
        self,
        switcher: Switcher,
        *,
        api_keys: tuple[Secret, ...] = (),
        max_body_bytes: int = 4 * 1024 * 1024,
        metrics: SwitcherMetrics | None = None,
    ) -> None:
        self.switcher = switcher
        self.api_keys = api_keys
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics or SwitcherMetrics(switcher)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request_id = new_request_id()
        method, path = scope["method"], scope["path"]
        routes = {
            "/v1/chat/completions": ("POST", self._chat),
            "/chat/completions": ("POST", self._chat),
            "/v1/models": ("GET", self._models),
            "/healthz": ("GET", self._healthz),
            "/readyz": ("GET", self._readyz),
            "/metrics": ("GET", self._metrics),
        }
        route = routes.get(path)
        if route is None:
            await self._error(
                send,
                request_id,
                HttpError(
                    status=404,
                    message=f"no such endpoint: {path}",
                    type="invalid_request_error",
                    code="not_found",
                ),
            )
            return
        if method != route[0]:
            await self._error(
                send,
                request_id,
                HttpError(
                    status=405,
                    message=f"{path} takes {route[0]}, not {method}",
                    type="invalid_request_error",
                    code="method_not_allowed",
                ),
            )
            return
        await route[1](scope, receive, send, request_id)

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

    async def _error(self, send: Send, request_id: str, error: HttpError) -> None:
        await self._json(send, request_id, error.status, error.body(), error.headers())

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
        chunks: list[bytes] = []
        size = 0
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
        try:
            body = json.loads(raw)
        except ValueError as exc:
            await self._error(
                send,
                request_id,
                bad_request(f"request body is not valid JSON: {exc}", code="invalid_json"),
            )
            return
        problems = chat_request_problems(body)
        if problems:
            message = "; ".join(f"{reason} @ {path}" for path, reason in problems)
            await self._error(
                send,
                request_id,
                bad_request(f"not a chat completion request: {message}", param=problems[0][0]),
            )
            return
        started = trio.current_time()
        state = _RequestState()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_disconnect, receive, nursery.cancel_scope, state)
            if body.get("stream"):
                await self._stream(send, request_id, body, started, state)
            else:
                await self._complete(send, request_id, body, started, state)
            nursery.cancel_scope.cancel()

    async def _watch_disconnect(
        self, receive: Receive, scope: trio.CancelScope, state: _RequestState
    ) -> None:
        """Cancel the request when the client goes away before its answer is complete."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not state.answered:
                    log.info("client_disconnected")
                    scope.cancel()
                return

    async def _complete(
        self,
        send: Send,
        request_id: str,
        body: dict[str, Any],
        started: float,
        state: _RequestState,
    ) -> None:
        try:
            reply = await self.switcher.complete(body, request_id=request_id)
        except SwitcherError as error:
            self._observe(error, stream=False, started=started)
            state.answered = True
            await self._error(send, request_id, http_error_for(error))
            return
        self._observe(None, stream=False, started=started)
        state.answered = True
        await self._json(send, request_id, 200, reply)

    async def _stream(
        self,
        send: Send,
        request_id: str,
        body: dict[str, Any],
        started: float,
        state: _RequestState,
    ) -> None:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        first_token_at: float | None = None
        try:
            async with self.switcher.stream(body, request_id=request_id) as chunks:
                first_token_at = trio.current_time()
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
                    # Content already went out: say so in-band, and never send [DONE].
                    self._observe(
                        error, stream=True, started=started, first_token_at=first_token_at
                    )
                    state.answered = True
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
                self._observe(None, stream=True, started=started, first_token_at=first_token_at)
                state.answered = True
                await send({"type": "http.response.body", "body": tail, "more_body": False})
        except SwitcherError as error:
            # Nothing went out yet: an honest status code is still possible.
            self._observe(error, stream=True, started=started)
            state.answered = True
            await self._error(send, request_id, http_error_for(error))

    def _observe(
        self,
        error: SwitcherError | None,
        *,
        stream: bool,
        started: float,
        first_token_at: float | None = None,
    ) -> None:
        error_class = getattr(error, "error_class", None)
        self.metrics.observe_request(
            outcome="ok" if error is None else type(error).__name__,
            error_class="" if error_class is None else str(error_class),
            stream=stream,
            started=started,
            first_token_at=first_token_at,
        )
