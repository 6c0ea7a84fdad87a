"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: Anthropic's Messages
API on the sidecar, routed like chat completions.

The body is checked (:mod:`oswitch.core.anthropic_inbound`), translated to the internal
form with the original beside it, and handed to the switcher: an Anthropic target sends
the original, any other target the translation. The answer goes back in Anthropic's
shapes (:mod:`oswitch.core.anthropic_outbound`): a message, or the event stream, whose
status goes out only once the first content is in hand (so a failure before content
still gets an honest status); one after it ends with an in-band ``error`` event and no
``message_stop``. Errors have the chat endpoint's statuses and Retry-After in
Anthropic's error object. The gateway key is taken as ``x-api-key`` or bearer; the body
bounds, disconnect handling and metrics are the chat endpoint's own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

import trio

from oswitch.core.anthropic_inbound import (
    ANTHROPIC,
    forwarded_headers,
    messages_request_problems,
    to_chat_request,
)
from oswitch.core.anthropic_outbound import (
    CorruptToolCall,
    MessagesStreamEncoder,
    message_id,
    to_message,
)
from oswitch.core.chat_request import describe
from oswitch.core.inbound import ORIGINAL_KEY
from oswitch.core.secret import scrub
from oswitch.core.tokens import estimate_request
from oswitch.errors import SwitcherError
from oswitch.providers.anthropic_original import ANTHROPIC_VERSION
from oswitch.runtime.http import encode_json
from oswitch.runtime.switcher import Switcher
from oswitch.runtime.target import TargetActor
from oswitch.sidecar.chat import (
    ChatCompletions,
    ClientGone,
    EventRelay,
    RefusedBody,
    _note_finish,
    _RequestState,
)
from oswitch.sidecar.errors import HttpError, anthropic_body, anthropic_error_type, http_error_for
from oswitch.sidecar.responses import Receive, Scope, Send, send_json

log = logging.getLogger("oswitch.sidecar")

# count_tokens forwarded to an Anthropic target: its answer within this time and size,
# else the estimate.
COUNT_TOKENS_TIMEOUT_S = 10.0
MAX_COUNT_REPLY_BYTES = 64 * 1024


async def send_anthropic_error(
    send: Send,
    request_id: str,
    error: HttpError,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send ``error`` with its status and headers (Retry-After) as Anthropic's error
    object. Blocks until the server took the response."""
    await send_json(
        send, request_id, error.status, anthropic_body(error), [*error.headers(), *(headers or [])]
    )


def _invalid(message: str) -> HttpError:
    return HttpError(status=400, message=message, type="invalid_request_error")


def _ready_targets(switcher: Switcher, model: str, api: str) -> list[TargetActor]:
    """The targets speaking ``api`` that serve ``model`` and could take an attempt for
    it now. (The switcher's router is read here, not through a method of the switcher,
    which is at its module-size budget.)"""
    now = trio.current_time()
    return [
        actor
        for actor in switcher._router.candidates(model)
        if actor.target.api == api and actor.ready_at(model, now) <= now
    ]


class Messages:
    """The Messages endpoints of one sidecar, sharing the chat endpoint's gateway keys,
    body bounds and metrics (``chat``)."""

    def __init__(self, switcher: Switcher, chat: ChatCompletions) -> None:
        self.switcher = switcher
        self._chat = chat

    async def _read(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, *, count_only: bool
    ) -> dict[str, Any] | None:
        """The checked body, or None once the refusal is sent (or the client left)."""
        chat = self._chat
        if not chat._authorized(scope):
            await send_anthropic_error(
                send,
                request_id,
                HttpError(
                    status=401,
                    message="missing or invalid API key for this gateway",
                    type="authentication_error",
                ),
            )
            return None
        try:
            body = await chat.read_json_body(receive, scope, request_id, kind="Messages request")
        except ClientGone:
            await trio.lowlevel.checkpoint()
            return None
        except RefusedBody as refusal:
            await send_anthropic_error(send, request_id, refusal.error, refusal.headers)
            return None
        problems = messages_request_problems(body, count_only=count_only)
        if problems:
            await send_anthropic_error(send, request_id, _invalid(describe(problems)))
            return None
        assert isinstance(body, dict)
        return body

    # ---- /v1/messages --------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """Answer one Messages request. Blocks until the answer is sent or the client
        left; raises only what the connection itself raises (and Cancelled)."""
        body = await self._read(scope, receive, send, request_id, count_only=False)
        if body is None:
            return
        request = to_chat_request(body, forwarded_headers(scope.get("headers", ())))
        state = _RequestState(
            stream=body.get("stream") is True, started=trio.current_time(), request_id=request_id
        )
        tracing = self._chat.tracing
        if tracing is not None:
            state.parent = tracing.parent_from(scope.get("headers", ()))
        if state.stream:
            work = partial(self._stream, send, request_id, request, state)
        else:
            work = partial(self._complete, send, request_id, request, state)
        await self._chat.run_watched(scope, receive, state, work)

    async def _complete(
        self, send: Send, request_id: str, request: dict[str, Any], state: _RequestState
    ) -> None:
        try:
            reply = await self.switcher.complete(request, request_id=request_id)
            state.reply = reply
            message = to_message(reply, request_id=request_id)
        except SwitcherError as error:
            self._chat._observe(error, state)
            await send_anthropic_error(send, request_id, http_error_for(error))
            return
        except CorruptToolCall as exc:
            self._chat._observe(None, state, outcome="CorruptToolCall")
            await send_anthropic_error(
                send, request_id, HttpError(status=502, message=str(exc), type="upstream_error")
            )
            return
        self._chat._observe(None, state)
        await send_json(send, request_id, 200, message)

    async def _stream(
        self, send: Send, request_id: str, request: dict[str, Any], state: _RequestState
    ) -> None:
        tracing = self._chat.tracing
        encoder = MessagesStreamEncoder(
            message_id=message_id(request_id),
            model=str(request["model"]),
            input_tokens=estimate_request(request).prompt_tokens,
        )
        try:
            async with self.switcher.stream(request, request_id=request_id) as chunks:
                state.first_token_at = trio.current_time()
                relay = EventRelay(send, request_id)
                # As on the chat endpoint: everything one upstream read decoded goes out
                # in one write, and the last events with the end of the body.
                take_ready = getattr(chunks, "take_ready", list)
                try:
                    async for chunk in chunks:
                        for each in (chunk, *take_ready()):
                            if each.get("usage"):
                                state.usage = each["usage"]
                            if tracing is not None:
                                _note_finish(each, state)
                            out = encoder.feed(each)
                            if out:
                                relay.add(out)
                        if not getattr(chunks, "ending", False):
                            await relay.flush()
                    tail = encoder.finish()
                except SwitcherError as error:
                    # Content already went out: say so in-band, never message_stop.
                    self._chat._observe(error, state)
                    failure = http_error_for(error)
                    await self._end_in_error(
                        relay, anthropic_error_type(failure.status), failure.message
                    )
                    return
                except CorruptToolCall as exc:
                    self._chat._observe(None, state, outcome="CorruptToolCall")
                    await self._end_in_error(relay, "api_error", str(exc))
                    return
                self._chat._observe(None, state)
                relay.add(tail)
                await relay.end()
        except SwitcherError as error:
            # Nothing went out yet: an honest status code is still possible.
            self._chat._observe(error, state)
            await send_anthropic_error(send, request_id, http_error_for(error))

    async def _end_in_error(self, relay: EventRelay, error_type: str, message: str) -> None:
        relay.add(MessagesStreamEncoder.error(error_type, message))
        await relay.end()

    # ---- /v1/messages/count_tokens --------------------------------------------------

    async def count_tokens(
        self, scope: Scope, receive: Receive, send: Send, request_id: str
    ) -> None:
        """Count a Messages request's input tokens: forwarded to an Anthropic target that
        serves its model and could take it now, else (or when that target does not
        answer usably within COUNT_TOKENS_TIMEOUT_S) oswitch's estimate
        (oswitch.core.tokens). The answer's ``x-oswitch-token-count`` says which."""
        body = await self._read(scope, receive, send, request_id, count_only=True)
        if body is None:
            return
        headers = forwarded_headers(scope.get("headers", ()))
        forwarded = await self._forward_count(body, headers)
        if forwarded is not None:
            status, payload = forwarded
            await send_json(
                send, request_id, status, payload, [(b"x-oswitch-token-count", b"anthropic")]
            )
            return
        request = to_chat_request(body)
        request.pop(ORIGINAL_KEY)
        estimate = estimate_request(request).prompt_tokens
        await send_json(
            send,
            request_id,
            200,
            {"input_tokens": estimate},
            [(b"x-oswitch-token-count", b"estimate")],
        )

    async def _forward_count(
        self, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> tuple[int, Any] | None:
        """The first usable answer of an Anthropic target serving the body's model, all
        tries within COUNT_TOKENS_TIMEOUT_S: its status and JSON for a 2xx or a 400 (the
        request's own fault), else None."""
        model = str(body["model"])
        with trio.move_on_after(COUNT_TOKENS_TIMEOUT_S):
            for actor in _ready_targets(self.switcher, model, ANTHROPIC):
                try:
                    answer = await _count_on(actor, body, headers, model)
                except Exception as exc:  # a transport fault: try the next, or estimate
                    log.info(
                        "count_tokens_forward_failed",
                        extra={"target_id": actor.target_id, "note": type(exc).__name__},
                    )
                    continue
                if answer is not None:
                    return answer  # noqa: ASYNC910 (the post awaited)
        await trio.lowlevel.checkpoint()
        return None


async def _count_on(
    actor: TargetActor, body: Mapping[str, Any], headers: Mapping[str, str], model: str
) -> tuple[int, Any] | None:
    """POST ``body`` to ``actor``'s count_tokens; its status and JSON object for a 200
    or 400 within MAX_COUNT_REPLY_BYTES (scrubbed of every configured key), else None.
    Raises httpx's transport errors."""
    exchange = actor.exchange
    sent = dict(body, model=actor.upstream_model(model))
    call_headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
    call_headers.update(headers)
    if exchange.key.value:
        call_headers["x-api-key"] = exchange.key.value
    url = actor.target.base_url.rstrip("/") + "/messages/count_tokens"
    # Not over the target's own pool: its connections are its admitted attempts'.
    client = exchange.client.side_channel()
    raw = b""
    try:
        response = await client.post(url, call_headers, encode_json(sent))
        try:
            async for piece in response.aiter_bytes():
                raw += piece
                if len(raw) > MAX_COUNT_REPLY_BYTES:
                    return None
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await response.aclose()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await client.aclose()
    if response.status_code not in (200, 400):
        return None
    try:
        payload = json.loads(scrub(raw.decode("utf-8", "replace"), exchange.secrets))
    except ValueError:
        return None
    return (response.status_code, payload) if isinstance(payload, dict) else None
