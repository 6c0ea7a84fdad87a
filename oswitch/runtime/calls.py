"""One target's upstream calls: send an attempt and turn what came back into an outcome.

The target actor decides whether an attempt may run and settles its outcome; this
module does the exchange in between: translate the request for the target's
protocol, post it through the target's transport, read and check the reply (or
open the event stream up to its first content), and classify any failure. Every
wait runs inside the order's guard, so cancelling the order cancels the call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Set
from typing import Any

import attrs
import httpx
import trio

from oswitch.config import TargetConfig
from oswitch.core.classify import Classification, classify, classify_stream_error
from oswitch.core.clip import MAX_TEXT_CHARS, clip
from oswitch.core.error_class import ErrorClass
from oswitch.core.secret import Secret, scrub
from oswitch.providers.base import MalformedReply, ProviderAdapter, UpstreamCall
from oswitch.providers.registry import adapter_for
from oswitch.runtime.credentials import TargetKey
from oswitch.runtime.http import TargetTransport
from oswitch.runtime.messages import AttemptOrder, AttemptOutcome, OutcomeKind
from oswitch.runtime.settings import TargetSettings
from oswitch.runtime.upstream import StreamedChunk, StreamInterrupted, UpstreamStream

log = logging.getLogger("oswitch.target")

# A reply body larger than this is refused as malformed rather than buffered.
MAX_REPLY_BYTES = 32 * 1024 * 1024


class TargetCalls:
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
    ) -> None:
        self.target_id = target.target_id
        self.target = target
        self.settings = settings
        self.adapter: ProviderAdapter = adapter_for(target.api)
        self._transport = transport
        self.client = TargetTransport(max_connections=target.concurrency_limit, transport=transport)
        self.key = key
        self.secrets = secrets
        self.background: trio.Nursery | None = None  # where a stream's body is drained

    def reconfigure(self, target: TargetConfig, settings: TargetSettings) -> TargetTransport | None:
        """Take a reloaded target. Returns the old client when a new concurrency limit
        needed a new pool (attempts in flight finish on the old one: close it after)."""
        old, self.target, self.settings = self.target, target, settings
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

    def cancelled(self, order: AttemptOrder, served_model: str, started: float) -> AttemptOutcome:
        """The outcome of an attempt whose guard fired: cancelled from outside (with the
        order's reason), else abandoned at its deadline (silent, TransportFailure)."""
        now = trio.current_time()
        if order.cancel_reason is not None:
            return self.outcome(
                OutcomeKind.CANCELLED,
                served_model,
                started,
                cancel_reason=order.cancel_reason,
            )
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
            note="abandoned: no answer in time",
        )

    # ---- translation -------------------------------------------------------------

    def _translate(
        self, order: AttemptOrder, served_model: str, started: float, *, stream: bool
    ) -> UpstreamCall | AttemptOutcome:
        """The upstream call for ``order``, or a failed outcome when the caller's
        request cannot be expressed in this target's protocol (InvalidRequest)."""
        try:
            return self.adapter.build_call(
                order.request,
                base_url=self.target.base_url,
                model=served_model,
                api_key=self.key.value,
                stream=stream,
            )
        except Exception as exc:
            return self._untranslatable(exc, served_model, started)

    def _untranslatable(self, exc: Exception, served_model: str, started: float) -> AttemptOutcome:
        # The exception may quote the caller's request: keep a bounded piece of it.
        reason = clip(f"{type(exc).__name__}: {exc}", MAX_TEXT_CHARS)
        log.warning("request_untranslatable", extra={"target_id": self.target_id, "note": reason})
        return self.failed(
            served_model,
            started,
            Classification(
                error_class=ErrorClass.INVALID_REQUEST,
                retry_after=None,
                message=f"the request cannot be sent to a {self.target.api} target: {reason}",
            ),
        )

    # ---- non-streamed --------------------------------------------------------------

    async def attempt(
        self, order: AttemptOrder, served_model: str, started: float
    ) -> AttemptOutcome:
        """Run a non-streamed attempt inside the order's guard: its outcome, a cancelled
        one when the guard fired, or a failure for a bug here (which must cost one
        attempt, never the actor and its switcher). A cancel of the calling task itself
        propagates."""
        outcome: AttemptOutcome | None = None
        with order.guard(order.deadline):
            try:
                outcome = await self.call_upstream(order, served_model, started)
            except Exception as exc:
                log.exception("attempt_crashed", extra={"target_id": self.target_id})
                outcome = self.failed(served_model, started, transient(f"internal error: {exc!r}"))
        if outcome is None:
            outcome = self.cancelled(order, served_model, started)
        return outcome

    async def call_upstream(
        self, order: AttemptOrder, served_model: str, started: float
    ) -> AttemptOutcome:
        """Send a non-streamed attempt and return its outcome (never raises but for
        cancellation; the caller runs it inside the order's guard)."""
        call = self._translate(order, served_model, started, stream=False)
        if isinstance(call, AttemptOutcome):
            return call
        quota_after_s = self.settings.quota_after_s
        status: int | None = None
        try:
            response = await self.client.post(call.url, call.headers, call.body)
            try:
                status = response.status_code
                body = await _read_limited(response, MAX_REPLY_BYTES)
                headers = response.headers
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await response.aclose()
        except MalformedReply as exc:
            classification = Classification(
                error_class=ErrorClass.TRANSIENT_SERVER_FAILURE,
                retry_after=None,
                message=str(exc),
                status=status,
            )
            return self.failed(served_model, started, classification, note="malformed")
        except Exception as exc:  # every transport fault is classified, never raised
            classification = classify(
                status, None, None, exc, quota_after_s=quota_after_s, secrets=self.secrets
            )
            return self.failed(served_model, started, classification, note=type(exc).__name__)
        if 200 <= status < 300:
            try:
                payload = json.loads(body)
                if isinstance(payload, dict) and "error" in payload and "choices" not in payload:
                    # Some gateways (OpenRouter) answer 200 with an error object.
                    classification = classify_stream_error(
                        payload, quota_after_s=quota_after_s, secrets=self.secrets
                    )
                    return self.failed(served_model, started, classification, note="200 error")
                reply = self.adapter.parse_reply(payload, model=served_model)
            except Exception as exc:  # a reply no adapter check foresaw must not kill the actor
                # A 2xx that is not a reply is the provider's fault, like a 5xx.
                classification = Classification(
                    error_class=ErrorClass.TRANSIENT_SERVER_FAILURE,
                    retry_after=None,
                    message=f"malformed reply: {exc}",
                    status=status,
                )
                return self.failed(served_model, started, classification, note="malformed")
            return self.outcome(
                OutcomeKind.OK,
                str(reply.get("model") or served_model),
                started,
                reply=reply,
            )
        classification = classify(
            status, headers, body, quota_after_s=quota_after_s, secrets=self.secrets
        )
        return self.failed(served_model, started, classification)

    # ---- streamed (run in the caller's task) ---------------------------------------

    async def open_stream(
        self, order: AttemptOrder, served_model: str, started: float
    ) -> AttemptOutcome:
        """Send a granted streamed attempt and read it up to its first content: OK with
        ``outcome.stream``, else a failed or cancelled outcome, its response closed (also
        when the calling task is cancelled, which propagates)."""
        outcome: AttemptOutcome | None = None
        upstream: UpstreamStream | None = None
        try:
            outcome, upstream = await self.send_stream_request(order, served_model, started)
            if upstream is not None:
                outcome = await self.read_to_first_content(upstream, served_model, started)
        finally:
            if upstream is not None and (outcome is None or outcome.kind is not OutcomeKind.OK):
                await upstream.aclose()
        assert outcome is not None
        return outcome

    async def send_stream_request(
        self, order: AttemptOrder, served_model: str, started: float
    ) -> tuple[AttemptOutcome | None, UpstreamStream | None]:
        """Send a streamed request: ``(None, stream)`` once an event stream began,
        else ``(failed or cancelled outcome, None)`` with the response closed."""
        settings = self.settings
        first_token_deadline = min(started + settings.first_token_s, order.deadline)
        call = self._translate(order, served_model, started, stream=True)
        if isinstance(call, AttemptOutcome):
            return call, None
        quota_after_s = settings.quota_after_s
        response: httpx.Response | None = None
        handed_over = False
        try:
            with order.guard(first_token_deadline):
                response = await self.client.post(call.url, call.headers, call.body)
                status = response.status_code
                if 200 <= status < 300 and "text/event-stream" in response.headers.get(
                    "content-type", ""
                ):
                    upstream = UpstreamStream(
                        order=order,
                        response=response,
                        decoder=self.adapter.stream_decoder(
                            model=served_model, secrets=self.secrets
                        ),
                        started_at=started,
                        first_token_deadline=first_token_deadline,
                        idle_timeout_s=settings.idle_s,
                        request_deadline=order.deadline,
                        background=self.background,
                    )
                    order.upstream = upstream
                    handed_over = True  # the stream closes the response from here on
                    return None, upstream
                body = await _read_limited(response, MAX_REPLY_BYTES)
                if not 200 <= status < 300:
                    classification = classify(
                        status,
                        response.headers,
                        body,
                        quota_after_s=quota_after_s,
                        secrets=self.secrets,
                    )
                    return self.failed(served_model, started, classification), None
                return self._unstreamed_reply(body, served_model, started), None
        except MalformedReply as exc:
            return self.failed(served_model, started, transient(str(exc))), None
        except Exception as exc:
            classification = classify(
                None, None, None, exc, quota_after_s=quota_after_s, secrets=self.secrets
            )
            return self.failed(served_model, started, classification, note=type(exc).__name__), None
        finally:
            if response is not None and not handed_over:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await response.aclose()
        # The guard fired: no headers in time, or cancelled from outside the attempt.
        outcome = self.cancelled(order, served_model, started)
        if outcome.silent:
            outcome = attrs.evolve(outcome, note="abandoned: no headers in time")
        return outcome, None

    async def read_to_first_content(
        self, upstream: UpstreamStream, served_model: str, started: float
    ) -> AttemptOutcome:
        """Read an open stream up to its first content: OK with ``outcome.stream`` (the
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
            if interrupted.cancel_reason is not None:
                return self.outcome(
                    OutcomeKind.CANCELLED,
                    served_model,
                    started,
                    cancel_reason=interrupted.cancel_reason,
                )
            return attrs.evolve(
                self.failed(served_model, started, interrupted.classification),
                silent=interrupted.silent,
                note="before first content",
            )
        upstream.first_chunks = buffered
        return self.outcome(
            OutcomeKind.OK,
            served_model,
            started,
            stream=upstream,
        )

    def _unstreamed_reply(self, body: bytes, served_model: str, started: float) -> AttemptOutcome:
        """A 2xx that is not an event stream: an error object, or a whole reply."""
        try:
            payload = json.loads(body)
        except ValueError:
            return self.failed(served_model, started, transient("stream is not SSE or JSON"))
        if isinstance(payload, dict) and "error" in payload and "choices" not in payload:
            classification = classify_stream_error(
                payload, quota_after_s=self.settings.quota_after_s, secrets=self.secrets
            )
            return self.failed(served_model, started, classification, note="200 error")
        return self.failed(
            served_model, started, transient("asked for a stream, got a whole reply")
        )


def transient(message: str) -> Classification:
    """A TransientServerFailure with ``message`` (the provider's fault, or ours)."""
    return Classification(
        error_class=ErrorClass.TRANSIENT_SERVER_FAILURE, retry_after=None, message=message
    )


async def _read_limited(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise MalformedReply(f"reply body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
