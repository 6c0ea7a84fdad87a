"""``POST /v1/chat/completions``: the sidecar's one endpoint that routes.

The caller's gateway key is checked, the body read within its size and time bounds,
parsed and validated, then handed to the switcher: a JSON reply, or an SSE stream
whose status goes out only once the first content chunk is in hand (so a failure
before content still gets an honest status code; one after it ends in-band, never
with ``[DONE]``). A client that disconnects before its answer is complete cancels
the request, which cancels the upstream attempt. Each request is counted once in
the metrics, as finished.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import trio

from oswitch.core.chat_request import MAX_DEPTH, check_chat_request, describe
from oswitch.core.clip import shorten
from oswitch.core.json_codec import decode
from oswitch.core.secret import Secret
from oswitch.errors import SwitcherError, UnknownRequest
from oswitch.metrics import SwitcherMetrics
from oswitch.runtime.switcher import Switcher
from oswitch.sidecar.errors import HttpError, bad_request, http_error_for
from oswitch.sidecar.responses import (
    BODY_IN_HAND_EXTENSION,
    CLOSE,
    DISCONNECT_EXTENSION,
    REQUEST_SCOPE_EXTENSION,
    OneWrite,
    Receive,
    Scope,
    Send,
    send_error,
    send_json,
    sse,
)

if TYPE_CHECKING:
    from oswitch.otel import Tracing

log = logging.getLogger("oswitch.sidecar")


@attrs.define
class _RequestState:
    """One chat request as the HTTP layer sees it. ``answered``: the answer is complete
    (or its error decided), so a disconnect after that is just the client leaving."""

    stream: bool
    started: float
    answered: bool = False
    first_token_at: float | None = None
    # For its span (oswitch.otel), when tracing is on: the caller's trace context and
    # what the answer said of itself.
    request_id: str = ""
    parent: Any = None
    reply: dict[str, Any] | None = None
    usage: Any = None
    finish_reason: str | None = None


class RefusedBody(Exception):
    """A request body that cannot be taken: ``error`` is the answer, sent with
    ``headers`` (e.g. ``Connection: close``) in the endpoint's own shape."""

    def __init__(self, error: HttpError, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.headers = headers or []


class BodyTooLarge(Exception):
    """The request body grew past ``max_body_bytes`` (answered 413)."""


class BodyTimeout(Exception):
    """The request body did not arrive within ``body_timeout_s`` (answered 408)."""


class ClientGone(Exception):
    """The client disconnected while its body was being read (nothing to answer)."""


class EventRelay:
    """A stream's SSE response, written as few times as possible: the head goes out with
    the first events, and the last events with the end of the body (the chunked
    terminator), each pair in one socket write."""

    def __init__(self, send: Send, request_id: str) -> None:
        self._send = send
        self._request_id = request_id
        self._events: list[bytes] = []
        self._started = False

    def add(self, event: bytes) -> None:
        self._events.append(event)

    async def flush(self, *, last: bool = False) -> None:
        """Send the events added so far (with the head, the first time); ``last`` ends
        the body. Blocks until the server took them."""
        if self._started and not last and not self._events:
            await trio.lowlevel.checkpoint()  # nothing new to send
            return
        body = b"".join(self._events)
        self._events.clear()
        message = {"type": "http.response.body", "body": body, "more_body": not last}
        if self._started and not last:
            await self._send(message)
            return
        async with OneWrite():
            if not self._started:
                self._started = True
                await self._send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [
                            (b"content-type", b"text/event-stream"),
                            (b"cache-control", b"no-cache"),
                            (b"x-oswitch-request-id", self._request_id.encode()),
                        ],
                    }
                )
            await self._send(message)

    async def end(self) -> None:
        """Send what is left and end the body."""
        await self.flush(last=True)


class ChatCompletions:
    """The chat completions endpoint of one sidecar; see :class:`SidecarApp` for
    ``api_keys``, ``max_body_bytes`` and ``body_timeout_s``."""

    def __init__(
        self,
        switcher: Switcher,
        *,
        api_keys: tuple[Secret, ...],
        max_body_bytes: int,
        body_timeout_s: float,
        metrics: SwitcherMetrics,
        tracing: Tracing | None = None,
    ) -> None:
        self.switcher = switcher
        self.api_keys = api_keys
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.metrics = metrics
        self.tracing = tracing

    def _authorized(self, scope: Scope) -> bool:
        if not self.api_keys:
            return True
        header = b""
        api_key: bytes | None = None
        for name, value in scope.get("headers", ()):
            lowered = name.lower()
            if lowered == b"authorization":
                header = value
            elif lowered == b"x-api-key":  # Anthropic's SDKs send the key so
                api_key = value
        text = header.decode("latin-1")
        if text.lower().startswith("bearer "):
            offered = text[7:].strip()
        elif api_key is not None:
            offered = api_key.decode("latin-1").strip()
        else:
            return False
        # Check every key, so timing does not tell which one almost matched.
        matches = [key.matches(offered) for key in self.api_keys]
        return any(matches)

    async def read_json_body(
        self, receive: Receive, scope: Scope, request_id: str, *, kind: str
    ) -> Any:
        """The request body, decoded as JSON (any value: the endpoint checks its shape).
        Blocks until the body is in. Raises ClientGone, or RefusedBody with the answer
        (413 too large, 408 too slow, 400 not JSON or nested too deep for a ``kind``);
        each endpoint sends that answer in its own shape."""
        try:
            raw = await self._read_body(receive, scope)
        except BodyTooLarge:
            raise RefusedBody(
                HttpError(
                    status=413,
                    message=f"request body over {self.max_body_bytes} bytes",
                    type="invalid_request_error",
                    code="body_too_large",
                )
            ) from None
        except BodyTimeout:
            log.info("request_body_timeout", extra={"request_id": request_id})
            raise RefusedBody(
                HttpError(
                    status=408,
                    message=f"request body not received within {self.body_timeout_s:g} s",
                    type="invalid_request_error",
                    code="body_timeout",
                ),
                [CLOSE],
            ) from None
        try:
            return decode(raw)
        except ValueError as exc:
            raise RefusedBody(
                bad_request(
                    f"request body is not valid JSON: {shorten(str(exc), 200)}", code="invalid_json"
                )
            ) from None
        except RecursionError:
            # The decoder recursed past the interpreter's limit: far beyond MAX_DEPTH.
            raise RefusedBody(
                bad_request(f"not a {kind}: nested deeper than {MAX_DEPTH} levels @ $", param="$")
            ) from None

    async def _read_body(self, receive: Receive, scope: Scope) -> bytes:
        """The whole body, within ``max_body_bytes`` and ``body_timeout_s`` (counted
        from the app's start, which is when the request's headers were in). A body the
        server says it already holds (oswitch's own server, ``BODY_IN_HAND_EXTENSION``)
        is taken without the deadline's cancel scope: nothing of it can keep us waiting."""
        in_hand = scope.get("extensions", {}).get(BODY_IN_HAND_EXTENSION)
        if in_hand is not None and in_hand():
            return await self._collect_body(receive)
        with trio.move_on_after(self.body_timeout_s):
            return await self._collect_body(receive)
        raise BodyTimeout

    async def _collect_body(self, receive: Receive) -> bytes:
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """Answer one chat request. Blocks until the answer is sent or the client
        left; raises only what the connection itself raises (and Cancelled)."""
        if not self._authorized(scope):
            await send_error(
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
            body = await self.read_json_body(
                receive, scope, request_id, kind="chat completion request"
            )
        except ClientGone:
            # The disconnect may have been waiting already: receive returned at once.
            await trio.lowlevel.checkpoint()
            return
        except RefusedBody as refusal:
            await send_error(send, request_id, refusal.error, refusal.headers)
            return
        # Checked once: the engine does not walk a CheckedChatRequest again.
        checked, problems = check_chat_request(body)
        if checked is None:
            await send_error(
                send, request_id, bad_request(describe(problems), param=problems[0][0])
            )
            return
        state = _RequestState(
            stream=checked.get("stream") is True, started=trio.current_time(), request_id=request_id
        )
        if self.tracing is not None:
            state.parent = self.tracing.parent_from(scope.get("headers", ()))
        if state.stream:
            work = partial(self._stream, send, request_id, checked, state)
        else:
            work = partial(self._complete, send, request_id, checked, state)
        await self.run_watched(scope, receive, state, work)

    async def run_watched(
        self,
        scope: Scope,
        receive: Receive,
        state: _RequestState,
        work: Callable[[], Awaitable[None]],
    ) -> None:
        """Run ``work`` (answering a request), cancelled if the client leaves before
        the answer is complete. oswitch's server says so through its
        ``oswitch.disconnect`` extension; under any other server a task waits in
        ``receive`` for ``http.disconnect``. Blocks until ``work`` returns."""
        extensions = scope.get("extensions", {})
        watch = extensions.get(DISCONNECT_EXTENSION)
        if watch is not None:
            # oswitch's own server runs the request in a scope it offers: cancelling it
            # on the client's going needs no scope of ours (Cancelled leaves the app).
            offered = extensions.get(REQUEST_SCOPE_EXTENSION)
            own = trio.CancelScope() if offered is None else contextlib.nullcontext(offered)
            with own as cancel:
                watch(partial(self._client_left, cancel, state))
                try:
                    await work()
                finally:
                    watch(None)
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_disconnect, receive, nursery.cancel_scope, state)
            await work()
            nursery.cancel_scope.cancel()

    def _client_left(self, scope: trio.CancelScope, state: _RequestState) -> None:
        if not state.answered:
            log.info("client_disconnected")
            self._observe(None, state, outcome="client_cancelled")
            scope.cancel()

    async def _watch_disconnect(
        self, receive: Receive, scope: trio.CancelScope, state: _RequestState
    ) -> None:
        """Cancel the request when the client goes away before its answer is complete
        (it closed the connection, or stopped reading past ``write_timeout_ms``), and
        count it as ``client_cancelled``."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self._client_left(scope, state)
                return

    async def _complete(
        self, send: Send, request_id: str, body: dict[str, Any], state: _RequestState
    ) -> None:
        try:
            reply = await self.switcher.complete(body, request_id=request_id)
        except SwitcherError as error:
            self._observe(error, state)
            await send_error(send, request_id, http_error_for(error))
            return
        state.reply = reply
        self._observe(None, state)
        await send_json(send, request_id, 200, reply)

    async def _stream(
        self, send: Send, request_id: str, body: dict[str, Any], state: _RequestState
    ) -> None:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        try:
            async with self.switcher.stream(body, request_id=request_id) as chunks:
                state.first_token_at = trio.current_time()
                relay = EventRelay(send, request_id)
                usage: Any = None
                usage_sent = False
                # A ChatStream says what is in hand; any other iterator (a test's) is
                # relayed a chunk at a time.
                take_ready = getattr(chunks, "take_ready", list)
                try:
                    async for chunk in chunks:
                        # Every chunk the last read decoded goes out in one write.
                        for each in (chunk, *take_ready()):
                            if each.get("usage"):
                                usage = state.usage = each["usage"]
                                usage_sent = usage_sent or not each.get("choices")
                            if self.tracing is not None:
                                _note_finish(each, state)
                            relay.add(sse(each))
                        if not getattr(chunks, "ending", False):
                            await relay.flush()
                        # Else the rest is in hand: it goes out with [DONE] and the end.
                except SwitcherError as error:
                    # Content already went out (or the request's deadline passed while it
                    # was being delivered): say so in-band, and never send [DONE].
                    self._observe(error, state)
                    relay.add(sse(http_error_for(error).body()))
                    await relay.end()
                    return
                if include_usage and usage is not None and not usage_sent:
                    relay.add(
                        sse(
                            {
                                "id": f"chatcmpl-{request_id}",
                                "object": "chat.completion.chunk",
                                "model": body["model"],
                                "choices": [],
                                "usage": usage,
                            }
                        )
                    )
                relay.add(b"data: [DONE]\n\n")
                self._observe(None, state)
                await relay.end()
        except SwitcherError as error:
            # Nothing went out yet: an honest status code is still possible.
            self._observe(error, state)
            await send_error(send, request_id, http_error_for(error))

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
        if self.tracing is not None:
            self._trace(error, state)

    def _trace(self, error: SwitcherError | None, state: _RequestState) -> None:
        """Hand the request's trace, as it is now, to tracing (one span and a child per
        attempt); a trace already evicted is skipped."""
        assert self.tracing is not None
        try:
            trace = self.switcher.inspect_request(state.request_id)
        except UnknownRequest:
            return
        self.tracing.record(
            trace,
            config=self.switcher.config,
            parent=state.parent,
            reply=state.reply,
            usage=state.usage,
            finish_reason=state.finish_reason,
            deadline_exceeded=bool(getattr(error, "deadline_exceeded", False)),
        )


def _note_finish(chunk: dict[str, Any], state: _RequestState) -> None:
    choices = chunk.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if isinstance(choice, dict) and choice.get("finish_reason"):
                state.finish_reason = str(choice["finish_reason"])
