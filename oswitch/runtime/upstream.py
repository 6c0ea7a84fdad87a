"""One open streamed reply from one target, read chunk by chunk in the caller's task.

Every wait on the provider runs inside the attempt's guard (its cancel scope), with
the deadline that applies: the first-token limit until content begins, then the
idle gap since the last progress. Pings, comments and role-only chunks are not
progress. Anything that ends the stream other than the provider's terminator is
raised as :class:`StreamInterrupted` carrying what it means for the target.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, NamedTuple, NoReturn

import httpx
import trio

from oswitch.core.classify import Classification
from oswitch.core.error_class import ErrorClass
from oswitch.providers.base import StreamDecoder, StreamFault, chunk_facts
from oswitch.providers.sse import SSEEvent, SSELimitExceeded, SSEParser
from oswitch.runtime.messages import AttemptOrder, CancelReason

# After the terminator, how long and how much is read to let the connection be reused.
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
    ) -> None:
        super().__init__(classification.message)
        self.classification = classification
        self.silent = silent
        self.cancel_reason = cancel_reason
        self.deadline_exceeded = deadline_exceeded


def _fault(message: str, error_class: ErrorClass = ErrorClass.TRANSPORT_FAILURE) -> Classification:
    return Classification(error_class=error_class, retry_after=None, message=message)


class StreamedChunk(NamedTuple):
    """A decoded chunk and what the engine needs to know of it, looked at once.

    ``progress``: the chunk moves the answer on (text, a tool call, or the finish).
    """

    chunk: dict[str, Any]
    text: str
    tool_call: bool
    finish_reason: str | None
    progress: bool


def streamed_chunk(chunk: dict[str, Any]) -> StreamedChunk:
    """Wrap a decoded chunk with its facts."""
    text, tool_call, finish_reason = chunk_facts(chunk)
    return StreamedChunk(
        chunk, text, tool_call, finish_reason, bool(text) or tool_call or finish_reason is not None
    )


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
    ) -> None:
        self.order = order
        self.started_at = started_at
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
        # The provider's silence since the last progress: only time spent waiting on
        # it counts, never the caller's pauses between chunks (bytes buffer meanwhile).
        self._silent_s = 0.0
        self.closed = False
        self.first_chunks: list[StreamedChunk] = []  # read before the caller took over

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
                return None
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
            with self.order.guard(deadline) as scope:
                try:
                    data = await self._bytes.__anext__()
                except StopAsyncIteration:
                    self._ended = True
                except (httpx.HTTPError, OSError, trio.BrokenResourceError) as exc:
                    raise StreamInterrupted(_fault(f"stream broken: {type(exc).__name__}")) from exc
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
            waited, limit = "next chunk", self._idle_timeout_s
        else:
            waited, limit = "first token", self._first_token_deadline - self.started_at
        raise StreamInterrupted(_fault(f"stalled: no {waited} within {limit:.3f}s"), silent=True)

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
            chunks.extend(map(streamed_chunk, decoded))
        return chunks

    async def finish(self) -> None:
        """The answer is complete: read what is left of the body (the end of its chunked
        encoding, usually a few bytes), so the connection goes back to the pool for the
        next stream instead of being dropped, then close. Bounded; shielded."""
        if not self.closed:
            with trio.CancelScope(shield=True), trio.move_on_after(DRAIN_TIMEOUT_S):
                drained = 0
                try:
                    async for piece in self._bytes:
                        drained += len(piece)
                        if drained > DRAIN_LIMIT_BYTES:
                            break
                except Exception:  # a body that ends badly after the answer changes nothing
                    pass
        await self.aclose()

    async def aclose(self) -> None:
        """Close the upstream connection (shielded, bounded). Idempotent."""
        if self.closed:
            return
        self.closed = True
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await self._response.aclose()
