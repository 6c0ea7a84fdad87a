"""One open streamed reply from one target, read chunk by chunk in the caller's task.

Every wait on the provider runs inside the attempt's guard (its cancel scope), with
the deadline that applies: the first-token limit until content begins, then the
idle gap since the last progress. Only content is progress: text, tool-call bytes
(an id, a name or arguments) and the first finish reason. Pings, comments,
role-only, empty, usage-only and repeated finish chunks are not. Anything that
ends the stream other than the provider's terminator is raised as
:class:`StreamInterrupted` carrying what it means for the target.

Between reads the caller may be away for as long as it likes; the target's
:class:`~oswitch.runtime.deadlines.StreamDeadlines` then ends the attempt at the
request deadline (:meth:`UpstreamStream.expire`), and the next read raises.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, NamedTuple, NoReturn

import httpx
import trio

from oswitch.core.classify import Classification
from oswitch.core.deadline_learning import Deadline, ModelTimings
from oswitch.core.error_class import ErrorClass
from oswitch.providers.base import StreamDecoder, StreamFault
from oswitch.providers.sse import SSEEvent, SSELimitExceeded, SSEParser
from oswitch.runtime.messages import AttemptOrder, CancelReason
from oswitch.transport.pool import body_ended

# After the terminator, how long and how much is read (in the target's nursery, after
# the caller has its end) to let the connection be reused; past either it is closed.
DRAIN_TIMEOUT_S = 1.0
DRAIN_LIMIT_BYTES = 64 * 1024


class StreamInterrupted(Exception):
    """A stream ended without its terminator: cut, stalled, malformed, errored or
    cancelled. ``classification`` is the target-side meaning; ``silent`` marks a
    stall (no progress within the limit); ``cancel_reason`` an outside cancel."""

    def __init__(
        self,
        classification: Classification,
        *,
        silent: bool = False,
        cancel_reason: CancelReason | None = None,
        deadline_exceeded: bool = False,
        deadline: str = "",
    ) -> None:
        super().__init__(classification.message)
        self.classification = classification
        self.silent = silent
        self.cancel_reason = cancel_reason
        self.deadline_exceeded = deadline_exceeded
        self.deadline = deadline  # which deadline fired, and why (a stall)


def _fault(message: str, error_class: ErrorClass = ErrorClass.TRANSPORT_FAILURE) -> Classification:
    return Classification(error_class=error_class, retry_after=None, message=message)


class StreamedChunk(NamedTuple):
    """A decoded chunk and what the engine needs to know of it, looked at once.

    ``progress``: the chunk moves the answer on (text, tool-call bytes, or a finish).
    ``finish_reason`` is None for an empty one (``""``, which some servers send for
    null): a chunk saying nothing does not end the answer.
    """

    chunk: dict[str, Any]
    text: str
    tool_call: bool
    finish_reason: str | None
    progress: bool


# A NamedTuple's own __new__ is Python code: building the tuple directly skips a call.
_new_chunk = tuple.__new__


def streamed_chunk(chunk: dict[str, Any]) -> StreamedChunk:
    """Wrap a decoded chunk with its facts (what ``chunk_facts`` says, looked at inline:
    this runs once per chunk of every stream)."""
    choices = chunk.get("choices")
    if choices:
        choice = choices[0]
        delta = choice.get("delta") or {}
        text = delta.get("content")
        if type(text) is not str and not isinstance(text, str):
            text = ""
        tool_call = bool(delta.get("tool_calls") or delta.get("function_call"))
        finish_reason = choice.get("finish_reason")
        if not finish_reason or not isinstance(finish_reason, str):
            finish_reason = None
    else:
        text, tool_call, finish_reason = "", False, None
    if text or finish_reason is not None:
        return _new_chunk(StreamedChunk, (chunk, text, tool_call, finish_reason, True))
    progress = tool_call and _tool_call_bytes(chunk)
    if not progress and choices:
        # Thinking and blocks carried as sent (decoded only for a request that arrived
        # as Anthropic) move the answer on too: a model thinking for a minute is not silent.
        delta = chunk["choices"][0].get("delta") or {}
        progress = bool(delta.get("thinking") or delta.get("signature"))
        progress = progress or bool(delta.get("redacted_thinking"))
        progress = progress or bool(delta.get("anthropic_block") or delta.get("anthropic_delta"))
    return _new_chunk(StreamedChunk, (chunk, text, tool_call, finish_reason, progress))


def _tool_call_bytes(chunk: Mapping[str, Any]) -> bool:
    """Whether a tool-call delta carries anything (an id, a name, argument text):
    ``{"tool_calls": [{"index": 0}]}`` over and over is not progress."""
    delta = chunk["choices"][0].get("delta") or {}
    calls = delta.get("tool_calls")
    if not isinstance(calls, list):
        calls = [{"function": delta.get("function_call")}]
    for call in calls:
        if not isinstance(call, Mapping):
            continue
        function = call.get("function")
        if call.get("id") or (
            isinstance(function, Mapping) and (function.get("name") or function.get("arguments"))
        ):
            return True
    return False


class UpstreamStream:
    """The caller-side half of a streamed attempt (the target actor owns its slot)."""

    def __init__(
        self,
        *,
        order: AttemptOrder,
        response: httpx.Response,
        decoder: StreamDecoder,
        started_at: float,
        first_token_deadline: float,
        idle_timeout_s: float,
        request_deadline: float,
        background: trio.Nursery | None = None,
        timings: ModelTimings | None = None,
        gap_deadline: Deadline | None = None,
        silence_deadline: Deadline | None = None,
    ) -> None:
        self.order = order
        self.started_at = started_at
        self._background = background  # where the body is drained after the end
        self._response = response
        self._decoder = decoder
        # oswitch asks for no content-encoding, so the body is normally read raw, skipping
        # httpx's per-chunk decoding layers; a compressed body still goes through them.
        self._bytes: AsyncIterator[bytes] = (
            response.aiter_bytes()
            if response.headers.get("content-encoding", "identity") != "identity"
            or not isinstance(response.stream, httpx.AsyncByteStream)
            else aiter(response.stream)
        )
        self._parser = SSEParser()
        self._ended = False
        self._refused: Classification | None = None  # the parser refused the stream
        self._first_token_deadline = first_token_deadline
        self._idle_timeout_s = idle_timeout_s
        self._request_deadline = request_deadline
        self._progressed = False
        # What this stream's first token and gaps teach the target (None: nothing).
        self._timings = timings
        self._gap_deadline = gap_deadline
        self._silence_deadline = silence_deadline
        # The provider's silence since the last progress: only time spent waiting on
        # it counts, never the caller's pauses between chunks (bytes buffer meanwhile).
        self._silent_s = 0.0
        self._finish_seen = False  # a second finish chunk is not progress
        self.closed = False
        self.reading = False  # inside a read: the read's own deadline covers the request's
        self.expired = False  # ended at the request deadline while the caller was away
        self.first_chunks: list[StreamedChunk] = []  # read before the caller took over
        # oswitch added stream_options.include_usage (the caller did not ask for it).
        self.usage_added = False

    @property
    def finished(self) -> bool:
        return self._decoder.finished

    async def next_chunks(self) -> list[StreamedChunk] | None:
        """The chunks completed by the next read (at least one), or None once the
        stream ended cleanly.

        Raises StreamInterrupted for anything else. Blocks at most until the
        first-token or idle deadline. Every wait on the provider runs inside the
        attempt's guard; this is the hot path of every stream (once per read).
        """
        while True:
            if self._decoder.finished:
                # Once per stream, after its last read. Stream paths yield with
                # cancel_shielded_checkpoint: a schedule point that never raises, so an
                # ending stream is settled whatever the caller's cancel scope says.
                await trio.lowlevel.cancel_shielded_checkpoint()
                return None
            if self.expired:
                raise StreamInterrupted(_fault("request deadline exceeded"), deadline_exceeded=True)
            if self._refused is not None:
                raise StreamInterrupted(self._refused)
            if self._ended:
                raise StreamInterrupted(_fault("stream ended without its terminator"))
            waited_from = trio.current_time()
            if self._progressed:
                deadline = min(
                    waited_from + self._idle_timeout_s - self._silent_s, self._request_deadline
                )
            else:
                deadline = self._first_token_deadline
            data: bytes | None = None
            self.reading = True
            with self.order.guard(deadline) as scope:
                try:
                    data = await self._bytes.__anext__()
                except StopAsyncIteration:
                    self._ended = True
                    await trio.lowlevel.cancel_shielded_checkpoint()  # the body's end
                except (httpx.HTTPError, OSError, trio.BrokenResourceError) as exc:
                    raise StreamInterrupted(_fault(f"stream broken: {type(exc).__name__}")) from exc
                finally:
                    self.reading = False
            if scope.cancelled_caught:
                self._raise_unanswered()
            try:
                events = self._parser.close() if data is None else self._parser.feed(data)
            except SSELimitExceeded as refused:
                # An event or line past its bound: a malformed stream. The events before
                # it are still the answer's; the refusal is raised once they are out.
                events = refused.events
                self._refused = _fault(
                    f"malformed stream: {refused}", ErrorClass.TRANSIENT_SERVER_FAILURE
                )
            chunks = self._decode(events) if events else []
            if chunks and any(chunk.progress for chunk in chunks):
                timings = self._timings
                if timings is not None:
                    now = trio.current_time()
                    if self._progressed:
                        gap = self._silent_s + (now - waited_from)
                        timings.chunk_gap.observe(gap, now=now)
                    else:
                        timings.first_token.observe(now - self.started_at, now=now)
                self._progressed = True
                self._silent_s = 0.0
            else:
                self._silent_s += trio.current_time() - waited_from
            if chunks:
                return chunks

    def _raise_unanswered(self) -> NoReturn:
        """The guard fired: cancelled from outside, the request's deadline, or a stall."""
        if self.order.cancel_reason is not None:
            raise StreamInterrupted(
                _fault(f"cancelled: {self.order.cancel_reason}"),
                cancel_reason=self.order.cancel_reason,
            )
        if trio.current_time() >= self._request_deadline:
            raise StreamInterrupted(_fault("request deadline exceeded"), deadline_exceeded=True)
        if self._progressed:
            waited, limit, which = "next chunk", self._idle_timeout_s, self._gap_deadline
            name = "chunk_gap"
        else:
            waited, limit = "first token", self._first_token_deadline - self.started_at
            which, name = self._silence_deadline, "first_token"
        raise StreamInterrupted(
            _fault(f"stalled: no {waited} within {limit:.3f}s"),
            silent=True,
            deadline="" if which is None else f"{name} {which.describe()}",
        )

    def _decode(self, events: list[SSEEvent]) -> list[StreamedChunk]:
        chunks: list[StreamedChunk] = []
        decoder = self._decoder
        for name, data in events:
            if decoder.finished:
                break  # anything after the terminator is not part of the answer
            try:
                decoded = decoder.feed("" if name == "message" else name, data)
            except StreamFault as fault:
                raise StreamInterrupted(fault.classification) from fault
            except Exception as exc:  # a decoder bug must not escape as a raw error
                raise StreamInterrupted(
                    _fault(
                        f"malformed stream chunk: {type(exc).__name__}: {exc}",
                        ErrorClass.TRANSIENT_SERVER_FAILURE,
                    )
                ) from exc
            for piece in decoded:
                streamed = streamed_chunk(piece)
                if streamed.finish_reason is not None:
                    if self._finish_seen:  # only the first finish moves the answer on
                        streamed = streamed._replace(
                            progress=bool(streamed.text)
                            or (streamed.tool_call and _tool_call_bytes(piece))
                        )
                    self._finish_seen = True
                chunks.append(streamed)
        return chunks

    async def finish(self) -> None:
        """The answer is complete: returns at once, so the caller has its end now.

        What is left of the body (the end of its chunked encoding, usually a few
        bytes, sometimes a provider that keeps the body open after its terminator)
        is read in the target's nursery, at most ``DRAIN_TIMEOUT_S`` and
        ``DRAIN_LIMIT_BYTES``, so the connection can go back to the pool; then it is
        closed. Without a nursery it is closed at once."""
        # The read that brought the terminator often brought the body's end too: the
        # connection is back in the pool, there is nothing to drain.
        if self.closed or self._ended or self._background is None or body_ended(self._response):
            await self.aclose()
            return
        self.closed = True
        # No cancellation point: this also runs while the caller is being cancelled,
        # and the attempt must be settled right after it.
        try:
            self._background.start_soon(self._drain_then_close)
        except RuntimeError:  # the target's nursery has closed (its switcher is gone)
            await self._close_response()
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def _drain_then_close(self) -> None:
        try:
            with trio.move_on_after(DRAIN_TIMEOUT_S):
                drained = 0
                async for piece in self._bytes:
                    drained += len(piece)
                    if drained > DRAIN_LIMIT_BYTES:
                        break
        except Exception:  # a body that ends badly after the answer changes nothing
            pass
        finally:
            await self._close_response()

    def expire(self) -> None:
        """The request deadline passed while no read was running: mark the stream so
        the caller's next read raises, and closed so the caller does not close it
        again. The target closes the response (:meth:`close_expired`)."""
        self.expired = True
        self.closed = True

    async def close_expired(self) -> None:
        """Close the response of an expired stream (shielded, bounded)."""
        await self._close_response()

    async def aclose(self) -> None:
        """Close the upstream connection (shielded, bounded). Idempotent."""
        if self.closed:
            await trio.lowlevel.cancel_shielded_checkpoint()  # never raises: a close path
            return
        self.closed = True
        await self._close_response()

    async def _close_response(self) -> None:
        if body_ended(self._response):
            # Read to its end: closing it does nothing, so no shielded, bounded scope.
            self._response.is_closed = True
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await self._response.aclose()
