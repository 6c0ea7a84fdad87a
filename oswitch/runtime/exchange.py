"""One target's upstream exchange: send an attempt and turn what came back into an answer.

The target actor decides whether an attempt may run and settles its outcome; this
module does the exchange in between, the same for a streamed and a non-streamed
attempt: translate the request for the target's protocol and encode it, post it
through the target's transport, then either open the event stream (read up to its
first content) or read and check the reply, classifying every failure. Every wait
runs inside the order's guard, so cancelling the order cancels the call.

What comes back is an :class:`Answer`: the outcome, plain data, and beside it the
open :class:`~oswitch.runtime.upstream.UpstreamStream` of a streamed attempt that
began.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Set
from typing import Any, NamedTuple

import attrs
import httpx
import trio

from oswitch.config import TargetConfig
from oswitch.core.classify import Classification, classify, classify_stream_error
from oswitch.core.clip import MAX_TEXT_CHARS, clip
from oswitch.core.error_class import ErrorClass
from oswitch.core.inbound import original_of
from oswitch.core.secret import Secret, scrub
from oswitch.core.tokens import read_usage
from oswitch.providers.base import MalformedReply, ProviderAdapter, UpstreamCall
from oswitch.providers.registry import adapter_for
from oswitch.runtime.credentials import TargetKey
from oswitch.runtime.http import TargetTransport, encode_json
from oswitch.runtime.messages import AttemptOrder, AttemptOutcome, OutcomeKind
from oswitch.runtime.replies import (
    MAX_REPLY_BYTES,
    STREAM_USAGE_PROVIDERS,
    asks_stream_usage,
    caller_asked_usage,
    decode_json,
    is_event_stream,
    read_limited,
    transient,
    with_stream_usage,
)
from oswitch.runtime.settings import TargetSettings
from oswitch.runtime.timings import TargetTimings
from oswitch.runtime.upstream import StreamedChunk, StreamInterrupted, UpstreamStream

# The request and reply helpers live in oswitch.runtime.replies; the public ones stay
# importable from here, where docs and callers have found them.
__all__ = [
    "MAX_REPLY_BYTES",
    "STREAM_USAGE_PROVIDERS",
    "Answer",
    "TargetExchange",
    "asks_stream_usage",
    "caller_asked_usage",
    "transient",
]

log = logging.getLogger("oswitch.target")


class Answer(NamedTuple):
    """How an exchange ended: its outcome, and the open stream of a streamed attempt
    whose content began (then ``outcome`` is OK; whoever holds it must close it)."""

    outcome: AttemptOutcome
    stream: UpstreamStream | None = None


class TargetExchange:
    """The upstream side of one target's attempts: its adapter and its transport (a pool
    of its own sized to its concurrency limit, or the ``transport`` given to
    ``open_switcher``). Owned by the target's actor, which keeps it current (a reload,
    a new key); nothing here touches the target's health."""

    def __init__(
        self,
        *,
        target: TargetConfig,
        settings: TargetSettings,
        transport: httpx.AsyncBaseTransport | None,
        key: TargetKey,
        secrets: Set[Secret],
        timings: TargetTimings | None = None,
    ) -> None:
        self.target_id = target.target_id
        # The target's learned deadlines, which its attempts feed.
        self.timings = timings if timings is not None else TargetTimings(settings)
        self.target = target
        self.settings = settings
        self.adapter: ProviderAdapter = adapter_for(target.api)
        self._transport = transport
        self.client = TargetTransport(max_connections=target.concurrency_limit, transport=transport)
        self.key = key
        self.secrets = secrets
        self.background: trio.Nursery | None = None  # where a stream's body is drained
        # Told of every reply's headers as soon as they are in (the actor learns the
        # provider's limits from them).
        self.on_headers: Callable[[httpx.Headers], None] | None = None
        # Streams ask for usage here until the target refuses ``stream_options``.
        self.stream_usage = asks_stream_usage(target)

    def reconfigure(self, target: TargetConfig, settings: TargetSettings) -> TargetTransport | None:
        """Take a reloaded target. Returns the old client when a new concurrency limit
        needed a new pool (attempts in flight finish on the old one: close it after)."""
        old, self.target, self.settings = self.target, target, settings
        if (target.api, target.provider_id, target.stream_usage) != (
            old.api,
            old.provider_id,
            old.stream_usage,
        ):
            self.stream_usage = asks_stream_usage(target)
        if target.api != old.api:
            self.adapter = adapter_for(target.api)
        if target.concurrency_limit == old.concurrency_limit:
            return None
        retired, self.client = (
            self.client,
            TargetTransport(max_connections=target.concurrency_limit, transport=self._transport),
        )
        return retired

    # ---- outcomes ----------------------------------------------------------------

    def outcome(
        self, kind: OutcomeKind, served_model: str, started: float, **fields: Any
    ) -> AttemptOutcome:
        """An outcome of this target's attempt begun at ``started``, lasting until now."""
        return AttemptOutcome(
            kind=kind,
            target_id=self.target_id,
            served_model=served_model,
            started_at=started,
            duration_s=trio.current_time() - started,
            **fields,
        )

    def failed(
        self,
        served_model: str,
        started: float,
        classification: Classification,
        *,
        note: str = "",
    ) -> AttemptOutcome:
        """A FAILED outcome; the provider's message is scrubbed of every known key."""
        if classification.message:
            classification = attrs.evolve(
                classification, message=scrub(classification.message, tuple(self.secrets))
            )
        return self.outcome(
            OutcomeKind.FAILED,
            served_model,
            started,
            classification=classification,
            note=note,
        )

    @staticmethod
    def _observe_unanswered(order: AttemptOrder, started: float, now: float) -> None:
        """A non-streamed attempt ended unanswered at ``now``: its reply takes longer
        than this (a censored sample for the learned deadline; see runtime/timings)."""
        if not order.stream and order.timings is not None:
            order.timings.response_headers.observe_longer_than(now - started, now=now)

    def cancelled(self, order: AttemptOrder, served_model: str, started: float) -> AttemptOutcome:
        """The outcome of an attempt whose guard fired: cancelled from outside (with the
        order's reason), else abandoned at its deadline (silent, TransportFailure)."""
        now = trio.current_time()
        self._observe_unanswered(order, started, now)
        if (reason := order.cancel_reason) is not None:
            return self.outcome(OutcomeKind.CANCELLED, served_model, started, cancel_reason=reason)
        waited = "headers" if order.stream else "answer"
        if order.stream:
            which = f"first_token {self.timings.silence_cap(served_model).describe()}"
        elif order.limit is not None and started + order.limit.seconds <= order.deadline:
            which = f"response_headers {order.limit.describe()}"
        else:
            which = "request deadline"
        return self.outcome(
            OutcomeKind.FAILED,
            served_model,
            started,
            classification=Classification(
                error_class=ErrorClass.TRANSPORT_FAILURE,
                retry_after=None,
                message=f"no answer within {now - started:.3f}s",
            ),
            silent=True,
            note=f"abandoned: no {waited} in time",
            deadline=which,
        )

    # ---- the exchange ------------------------------------------------------------

    async def exchange(
        self,
        order: AttemptOrder,
        served_model: str,
        started: float,
        *,
        opened: Callable[[AttemptOrder, UpstreamStream], None] | None = None,
    ) -> Answer:
        """Send ``order`` upstream and return its answer; never raises but for
        cancellation of the calling task (then any response is closed).

        Blocks until the reply is read (non-streamed), or until a streamed reply's
        first content, within the order's guard: its deadline (a stream's
        first-token limit for the headers) or a cancel from outside, which give a
        cancelled or abandoned outcome. ``opened`` is told of a stream as soon as
        its headers are in (the actor ends it if the caller goes away). A bug here
        costs one attempt, never the actor and its switcher.
        """
        deadline = order.deadline
        if order.stream:
            # The hard limit on silence; the dispatcher hedges long before (learned).
            cap = self.timings.silence_cap(served_model)
            deadline = min(started + cap.seconds, deadline)
        answer: Answer | None = None
        upstream: UpstreamStream | None = None
        try:
            sent: AttemptOutcome | UpstreamStream | None = None
            try:
                with order.guard(deadline):
                    try:
                        sent = await self._send(order, served_model, started, deadline)
                    except Exception as exc:
                        log.exception("attempt_crashed", extra={"target_id": self.target_id})
                        message = f"internal error: {exc!r}"
                        sent = self.failed(served_model, started, transient(message))
                        await trio.lowlevel.checkpoint()
            except trio.Cancelled:
                # The calling task's own cancellation (its deadline, a client gone; the
                # guard keeps its own): unanswered so far, as when the guard fires.
                self._observe_unanswered(order, started, trio.current_time())
                raise
            if sent is None:  # the guard fired
                answer = Answer(self.cancelled(order, served_model, started))
            elif isinstance(sent, AttemptOutcome):
                answer = Answer(sent)
            else:
                upstream = sent
                if opened is not None:
                    opened(order, upstream)
                answer = await self._first_content(upstream, served_model, started)
        finally:
            if upstream is not None and (answer is None or answer.stream is None):
                await upstream.aclose()
        assert answer is not None
        # A guard fires only at a checkpoint, and every other path above awaits one; a
        # further checkpoint after a cancel would delay settling the attempt a round.
        return answer  # noqa: ASYNC910

    async def _send(
        self,
        order: AttemptOrder,
        served_model: str,
        started: float,
        deadline: float,
        *,
        ask_usage: bool = True,
    ) -> AttemptOutcome | UpstreamStream:
        """Post the call; an event stream once its headers are in, else the outcome of
        the reply read whole. Transport faults are classified, never raised.
        ``ask_usage`` False: do not add ``stream_options`` (the target refused them)."""
        prepared = self._prepare(order, served_model, started, ask_usage=ask_usage)
        if isinstance(prepared, AttemptOutcome):
            await trio.lowlevel.checkpoint()  # refused before anything was sent
            return prepared
        call, content, asked_usage = prepared
        response: httpx.Response | None = None
        status: int | None = None
        try:
            response = await self.client.post(call.url, call.headers, content)
            status = response.status_code
            timings = order.timings
            if timings is not None and not order.stream and 200 <= status < 300:
                now = trio.current_time()
                timings.response_headers.observe(now - started, now=now)
            if self.on_headers is not None:
                self.on_headers(response.headers)
            if order.stream and is_event_stream(status, response.headers):
                gap = self.timings.chunk_gap(served_model)
                upstream = UpstreamStream(
                    order=order,
                    response=response,
                    decoder=self.adapter.stream_decoder(
                        model=served_model, secrets=self.secrets, native=self._native(order)
                    ),
                    started_at=started,
                    first_token_deadline=deadline,
                    idle_timeout_s=gap.seconds,
                    request_deadline=order.deadline,
                    background=self.background,
                    timings=timings,
                    gap_deadline=gap,
                    silence_deadline=self.timings.silence_cap(served_model),
                )
                # The usage chunk oswitch asked for is hidden from a chat caller that
                # did not ask; a request that arrived in another shape (Messages) is
                # answered from it (message_delta's usage), so it keeps it.
                upstream.usage_added = asked_usage and original_of(order.request) is None
                response = None  # the stream closes the response from here on
                return upstream
            body = await read_limited(response, MAX_REPLY_BYTES)
            headers = response.headers
        except MalformedReply as exc:
            await trio.lowlevel.checkpoint()
            return self.failed(
                served_model, started, transient(str(exc), status=status), note="malformed"
            )
        except Exception as exc:  # every transport fault is classified, never raised
            await trio.lowlevel.checkpoint()  # it may have been raised before any wait
            classification = classify(
                status,
                None,
                None,
                exc,
                quota_after_s=self.settings.quota_after_s,
                secrets=self.secrets,
            )
            return self.failed(served_model, started, classification, note=type(exc).__name__)
        finally:
            # A body read to its end closed its response already (httpx does): then the
            # shielded close would cost two cancel scopes to do nothing.
            if response is not None and not response.is_closed:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await response.aclose()
        if asked_usage and status == 400 and b"stream_options" in body:
            # The target refused the stream_options oswitch added: the request is sent
            # again at once without them, the refusal charged to nobody, and (unless
            # the caller sent stream_options of its own, which may be what it refused)
            # the target is not asked again.
            if "stream_options" not in order.request:
                self.stream_usage = False
            log.warning("stream_usage_refused", extra={"target_id": self.target_id})
            return await self._send(order, served_model, started, deadline, ask_usage=False)
        return self._judge(
            status,
            headers,
            body,
            served_model,
            started,
            streamed=order.stream,
            native=self._native(order),
        )

    def _native(self, order: AttemptOrder) -> bool:
        """Whether the request arrived in this target's own protocol (its reply then
        keeps what the OpenAI shape drops, for the caller's own shape)."""
        return original_of(order.request, self.adapter.api) is not None

    def _prepare(
        self, order: AttemptOrder, served_model: str, started: float, *, ask_usage: bool = True
    ) -> tuple[UpstreamCall, bytes, bool] | AttemptOutcome:
        """The upstream call for ``order``, its encoded body and whether oswitch added
        ``stream_options.include_usage`` to it, or a failed outcome when the caller's
        request cannot be expressed in this target's protocol or encoded
        (InvalidRequest: the caller's fault, not the target's)."""
        try:
            call = self.adapter.build_call(
                order.request,
                base_url=self.target.base_url,
                model=served_model,
                api_key=self.key.value,
                stream=order.stream,
            )
            asked = (
                ask_usage
                and order.stream
                and self.stream_usage
                and not caller_asked_usage(order.request)
            )
            if asked:
                call = with_stream_usage(call)
            return call, encode_json(call.body), asked
        except Exception as exc:
            # The exception may quote the caller's request: keep a bounded piece of it.
            reason = clip(f"{type(exc).__name__}: {exc}", MAX_TEXT_CHARS)
            log.warning(
                "request_untranslatable", extra={"target_id": self.target_id, "note": reason}
            )
            message = f"the request cannot be sent to a {self.target.api} target: {reason}"
            return self.failed(
                served_model,
                started,
                Classification(
                    error_class=ErrorClass.INVALID_REQUEST, retry_after=None, message=message
                ),
            )

    # ---- reply checks ------------------------------------------------------------

    def _judge(
        self,
        status: int,
        headers: httpx.Headers,
        body: bytes,
        served_model: str,
        started: float,
        *,
        streamed: bool,
        native: bool = False,
    ) -> AttemptOutcome:
        """The outcome of a reply read whole: a classified failure, an error object in
        a 2xx, a whole reply where a stream was asked for, a malformed one, or OK."""
        quota_after_s = self.settings.quota_after_s
        if not 200 <= status < 300:
            classification = classify(
                status, headers, body, quota_after_s=quota_after_s, secrets=self.secrets
            )
            return self.failed(served_model, started, classification)
        try:
            payload = decode_json(body)
        except MalformedReply as exc:
            # A 2xx that is not a reply is the provider's fault, like a 5xx.
            message = "stream is not SSE or JSON" if streamed else f"malformed reply: {exc}"
            return self.failed(
                served_model, started, transient(message, status=status), note="malformed"
            )
        if type(payload) is dict and "error" in payload and "choices" not in payload:
            # Some gateways (OpenRouter) answer 200 with an error object.
            classification = classify_stream_error(
                payload, quota_after_s=quota_after_s, secrets=self.secrets
            )
            return self.failed(served_model, started, classification, note="200 error")
        if streamed:
            return self.failed(
                served_model, started, transient("asked for a stream, got a whole reply")
            )
        try:
            reply = self.adapter.parse_reply(payload, model=served_model, native=native)
        except Exception as exc:  # a reply no adapter check foresaw must not kill the actor
            return self.failed(
                served_model,
                started,
                transient(f"malformed reply: {exc}", status=status),
                note="malformed",
            )
        return self.outcome(
            OutcomeKind.OK,
            str(reply.get("model") or served_model),
            started,
            reply=reply,
            usage=read_usage(payload),
        )

    async def _first_content(
        self, upstream: UpstreamStream, served_model: str, started: float
    ) -> Answer:
        """Read an open stream up to its first content: OK beside the stream (the
        chunks read so far kept as ``first_chunks``), or what interrupted it."""
        buffered: list[StreamedChunk] = []
        try:
            while True:
                chunks = await upstream.next_chunks()
                if chunks is None:
                    # A clean end with no content at all is an (empty) answer too.
                    break
                buffered.extend(chunks)
                if any(chunk.progress for chunk in chunks):
                    break
        except StreamInterrupted as interrupted:
            # Raised by a read that awaited the provider, or by its guard firing (at a
            # checkpoint); a further one would delay settling a cancelled attempt.
            timings = upstream.order.timings
            if timings is not None and (
                interrupted.cancel_reason is not None or interrupted.silent
            ):
                # Headers in, no content yet: the first token takes longer than this.
                now = trio.current_time()
                timings.first_token.observe_longer_than(now - started, now=now)
            if interrupted.cancel_reason is not None:
                return Answer(  # noqa: ASYNC910
                    self.outcome(
                        OutcomeKind.CANCELLED,
                        served_model,
                        started,
                        cancel_reason=interrupted.cancel_reason,
                    )
                )
            failed = self.failed(served_model, started, interrupted.classification)
            return Answer(  # noqa: ASYNC910
                attrs.evolve(
                    failed,
                    silent=interrupted.silent,
                    note="before first content",
                    deadline=interrupted.deadline,
                )
            )
        upstream.first_chunks = buffered
        return Answer(self.outcome(OutcomeKind.OK, served_model, started), upstream)
