"""``Switcher.stream``: one continuous answer, even when a provider's stream dies.

Entering the context returns once the first content chunk is in hand, so every
failure before content is an ordinary failover and raises at ``async with``. After
that, chunks flow in the caller's task. A stream cut, stalled, malformed, missing
its terminator or failing with an error event is InterruptedExecution: the text
the caller already has is kept, another target is asked to continue it, the seam
is reconciled (repeated text dropped) and the continuation is streamed on.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, NoReturn

import attrs
import trio

from oswitch.core.error_class import ErrorClass
from oswitch.core.ledger import Decision
from oswitch.core.resume import SeamReconciler
from oswitch.core.stream_chunks import finish_chunk, text_chunk, with_text, without_role
from oswitch.core.tokens import Usage, read_usage
from oswitch.core.trace import AttemptRecord, TraceBuilder
from oswitch.errors import AllTargetsFailed, RequestFailed
from oswitch.runtime.dispatcher import RequestRun
from oswitch.runtime.exchange import Answer
from oswitch.runtime.messages import AttemptOutcome, CancelReason, OutcomeKind
from oswitch.runtime.recording import usage_fields
from oswitch.runtime.upstream import StreamedChunk, StreamInterrupted, UpstreamStream


def is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is trio cancelling the caller (alone or in a group of them):
    its own cancel scope, a sidecar client that went away, a shutdown."""
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[1] is None
    return False


class ChatStream:
    """The caller's iterator over ``chat.completion.chunk`` dicts of one request.

    ``request_id`` names the request (for ``inspect_request``). Iterating blocks
    while the current provider is silent (at most the idle limit) and while a
    resume finds the next target. Raises ``RequestFailed`` (InterruptedExecution)
    when the answer cannot be finished honestly, ``AllTargetsFailed`` when no
    target can continue it or the request deadline passed (also while the caller
    was not pulling: the upstream attempt was then ended at the deadline, and the
    next pull raises); never ends cleanly on a partial answer.
    """

    def __init__(
        self,
        *,
        run: RequestRun,
        first: Answer,
        trace: TraceBuilder,
        resume_strategy: str,
        on_finish: Callable[[ChatStream, BaseException | None], None],
    ) -> None:
        self.request_id = run.request_id
        self._run = run
        self._trace = trace
        self._strategy = resume_strategy
        self._on_finish = on_finish
        self._pending: list[dict[str, Any]] = []
        self._pieces: list[str] = []  # the text the caller has been given, in pieces
        self._chars = 0  # its length
        self._segment_start = 0  # where the current segment's text starts
        self._tool_call_started = False
        self._thinking_open = False  # a thinking block began and has no signature yet
        self._reconciler: SeamReconciler | None = None
        self._chunk_id: str | None = None
        self._done = False
        self._saw_finish = False
        self._finished_reported = False
        self._begin_segment(first)

    # ---- segments ----------------------------------------------------------------

    def _begin_segment(self, answer: Answer) -> None:
        outcome = answer.outcome
        assert answer.stream is not None
        self._segment_ended = False
        self._outcome = outcome
        self._upstream: UpstreamStream = answer.stream
        self._actor = self._run.router.actors[outcome.target_id]
        self._segment_start = self._chars
        self._segment_started_at = outcome.started_at
        self._segment_usage: Usage | None = None  # what the provider said it used
        self.target_id = outcome.target_id
        self.model = outcome.served_model
        for chunk in self._upstream.first_chunks:
            self._accept(chunk)

    def _end_segment(
        self,
        result: AttemptOutcome,
        *,
        decision: Decision,
        error_class: ErrorClass | None = None,
        note: str = "",
        deadline: str = "",
    ) -> None:
        self._segment_ended = True
        if self._segment_usage is not None:
            result = attrs.evolve(result, usage=self._segment_usage)
        settled = self._actor.end_attempt(
            self._upstream.order, result, started=self._segment_started_at
        )
        classification = settled.classification
        # An expired segment ended at the deadline, not when the caller came back.
        duration = (
            settled.duration_s
            if self._upstream.expired
            else trio.current_time() - self._segment_started_at
        )
        self._run.log.add(
            AttemptRecord(
                index=len(self._trace.attempts),
                target_id=self.target_id,
                model=self.model,
                started_at=self._segment_started_at,
                duration_s=duration,
                error_class=error_class,
                decision=decision.value,
                status=None if classification is None else classification.status,
                note=note,
                hedge=self._upstream.order.hedge,
                offset=self._segment_start,
                chars=self._chars - self._segment_start,
                deadline=deadline,
                **usage_fields(settled.usage, settled.cost),
            )
        )

    # ---- chunks ------------------------------------------------------------------

    def _text(self) -> str:
        """Everything the caller has been given (joined only when a resume needs it)."""
        if len(self._pieces) > 1:
            self._pieces = ["".join(self._pieces)]
        return self._pieces[0] if self._pieces else ""

    def _add_text(self, text: str) -> None:
        self._pieces.append(text)
        self._chars += len(text)

    def _accept(self, streamed: StreamedChunk) -> None:
        """Pass one upstream chunk on to the caller, sewing the seam if resuming."""
        chunk = streamed.chunk  # decoded from the provider's bytes: ours to change
        if "usage" in chunk:
            usage = chunk["usage"]
            if usage is not None:
                self._segment_usage = read_usage(usage) or self._segment_usage
            if self._upstream.usage_added:
                # oswitch asked for usage, the caller did not: the usage chunk (no
                # choices) and the usage key every chunk then carries are ours alone.
                if not chunk.get("choices"):
                    return
                del chunk["usage"]
        if self._chunk_id is None:
            self._chunk_id = str(chunk.get("id") or f"chatcmpl-{self.request_id}")
        chunk["id"] = self._chunk_id
        text = streamed.text
        finish_reason = streamed.finish_reason
        beyond_openai = False  # thinking or a block carried as sent
        if streamed.tool_call:
            self._tool_call_started = True
        elif streamed.progress and not text and finish_reason is None:
            beyond_openai = True
            # Thinking (see upstream.streamed_chunk): a block cut before its signature
            # cannot be sent back to Anthropic, so such a cut is not resumed.
            delta = chunk["choices"][0].get("delta") or {}
            if delta.get("thinking"):
                self._thinking_open = True
            if delta.get("signature"):
                self._thinking_open = False
            if delta.get("anthropic_block"):
                # A server tool's use or result: a tool call for resume's purposes.
                self._tool_call_started = True
        if finish_reason is not None:
            self._saw_finish = True
            chunk["oswitch"] = self._summary(finishing=True)
        if self._reconciler is not None:
            passed = self._reconciler.feed(text) if text else ""
            if finish_reason is not None:
                passed += self._reconciler.finish()
            if passed != text:
                chunk = with_text(chunk, passed)
            text = passed
            if (
                not text
                and not streamed.tool_call
                and finish_reason is None
                and not chunk.get("usage")
                and not beyond_openai
            ):
                return  # a role chunk or a held-back repeat: nothing new for the caller
            if self._chars:
                chunk = without_role(chunk)
        if text:
            self._add_text(text)
        self._pending.append(chunk)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._upstream.expired and not self._segment_ended:
            # The request deadline passed while the caller was away; the target has
            # already ended the attempt. Chunks not yet taken are not delivered.
            if not self._saw_finish:
                self._deadline_passed()
            await self._complete()  # the finish reached the caller: the answer is whole
        while not self._pending:
            if self._done:
                raise StopAsyncIteration
            try:
                chunks = await self._upstream.next_chunks()
            except StreamInterrupted as interrupted:
                if self._saw_finish and interrupted.cancel_reason is None:
                    # The finish already reached the caller: only the terminator is
                    # missing, the answer is whole.
                    await self._complete()
                    continue
                await self._resume_after(interrupted)
                continue
            except BaseException as exc:
                # Cancelled (the caller went away) or a bug: give the slot back first.
                await self._abandon(note=f"caller gone: {type(exc).__name__}")
                self._finish(exc)
                raise
            if chunks is None:
                await self._complete()
                continue
            for chunk in chunks:
                self._accept(chunk)
        # The chunks one read decoded are handed out one per call: the read checkpointed,
        # and a checkpoint per chunk would cost ~5.5 us, ~9% of a 16-chunk stream's CPU.
        return self._pending.pop(0)  # noqa: ASYNC910

    def take_ready(self) -> list[dict[str, Any]]:
        """The chunks already in hand (decoded from the last read), taken without
        waiting; empty when the next one needs a read, or must raise. Never blocks.

        A server relaying the stream sends these with the chunk just taken, in one
        write, rather than one write per chunk."""
        if self._upstream.expired and not self._segment_ended:
            return []  # the next __anext__ ends the segment at the deadline
        ready, self._pending = self._pending, []
        return ready

    @property
    def ending(self) -> bool:
        """Whether the rest of the answer is in hand: the provider's terminator has been
        read, so what is left comes without waiting on anyone (a relay may keep its
        last chunks back and send them with the end of its reply)."""
        return self._done or (self._upstream.finished and not self._upstream.expired)

    def _summary(self, *, finishing: bool) -> dict[str, Any]:
        """The reply's ``"oswitch"`` key; the segment still running counts as one attempt."""
        return {
            "request_id": self.request_id,
            "target_id": self.target_id,
            "attempts": len(self._trace.attempts) + (1 if finishing else 0),
        }

    async def _complete(self) -> None:
        await self._upstream.finish()
        self._done = True
        if self._reconciler is not None:
            rest = self._reconciler.finish()
            if rest:
                self._add_text(rest)
                self._pending.append(text_chunk(self._chunk_id, self.model, rest))
        if not self._saw_finish:
            # Some providers end with [DONE] and no finish chunk: give the caller one.
            self._pending.append(
                finish_chunk(self._chunk_id, self.model, self._summary(finishing=True))
            )
        self._end_segment(
            attrs.evolve(
                self._outcome,
                duration_s=trio.current_time() - self._segment_started_at,
            ),
            decision=Decision.RETURN,
        )
        self._trace.finish(
            trio.current_time(), "ok", served_by=self.target_id, served_model=self.model
        )
        self._finish(None)

    async def _resume_after(self, interrupted: StreamInterrupted) -> None:
        """The current segment broke after content: settle it and continue elsewhere."""
        await self._upstream.aclose()
        underlying = interrupted.classification.error_class
        if interrupted.deadline_exceeded:
            self._deadline_passed()
        if interrupted.cancel_reason is not None:
            result = attrs.evolve(
                self._outcome,
                kind=OutcomeKind.CANCELLED,
                cancel_reason=interrupted.cancel_reason,
            )
            note = f"cancelled: {interrupted.cancel_reason}"
        else:
            result = attrs.evolve(
                self._outcome,
                kind=OutcomeKind.FAILED,
                classification=interrupted.classification,
                silent=interrupted.silent,
            )
            note = f"{underlying}: {interrupted.classification.message}"
        resumable = (
            not self._tool_call_started and not self._thinking_open and self._strategy == "continue"
        )
        self._end_segment(
            result,
            decision=Decision.RESUME if resumable else Decision.GIVE_UP,
            error_class=ErrorClass.INTERRUPTED_EXECUTION,
            note=note,
            deadline=interrupted.deadline,
        )
        # An operator's cancel costs the request nothing: the continuation is free.
        # Never twice: a stalled target is left out; a cut one may continue it once.
        self._run.stream_interrupted(
            self.target_id,
            forgiven=interrupted.cancel_reason is CancelReason.OPERATOR,
            stalled=interrupted.silent,
        )
        if self._tool_call_started:
            self._fail(
                "the stream was cut in the middle of a tool call, which cannot be resumed "
                "safely; no result was invented"
            )
        if self._thinking_open:
            self._fail(
                "the stream was cut in the middle of a thinking block, which cannot be "
                "resumed: a thinking block without its signature cannot be sent back"
            )
        if self._strategy != "continue":
            self._fail(
                f"the stream was interrupted after content and stream_resume is {self._strategy!r}"
            )
        try:
            answer = await self._run.resume(self._text())
        except BaseException as exc:  # AllTargetsFailed, or the caller went away
            self._finish(exc)
            raise
        self._reconciler = SeamReconciler(self._text())
        self._begin_segment(answer)

    def _deadline_passed(self) -> NoReturn:
        """End the segment at the request deadline and raise AllTargetsFailed."""
        self._pending.clear()
        result = attrs.evolve(self._outcome, kind=OutcomeKind.CANCELLED)
        self._end_segment(result, decision=Decision.GIVE_UP, note="request deadline")
        error = AllTargetsFailed(
            "deadline exceeded while streaming",
            request_id=self.request_id,
            error_class=ErrorClass.INTERRUPTED_EXECUTION,
            attempts=self._run.ledger.attempts,
            deadline_exceeded=True,
        )
        self._finish(error)
        raise error

    def _fail(self, message: str) -> None:
        error = RequestFailed(
            message,
            request_id=self.request_id,
            error_class=ErrorClass.INTERRUPTED_EXECUTION,
        )
        self._finish(error)
        raise error

    def _finish(self, error: BaseException | None) -> None:
        if self._finished_reported:
            return
        self._finished_reported = True
        self._done = True
        self._on_finish(self, error)

    async def aclose(self) -> None:
        """Stop early: cancel the upstream attempt and close its connection.

        A caller that stops right after the finish chunk got the whole answer: that
        counts as a success, only the terminator is left unread.
        """
        # Close paths yield with cancel_shielded_checkpoint, which never raises: the
        # segment must be settled whatever the caller's cancel scope says.
        if self._finished_reported:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        if self._saw_finish:
            await self._complete()
            return
        if self._upstream.expired and not self._segment_ended:
            # Leaving after the deadline ended it: the request failed at its deadline.
            with contextlib.suppress(AllTargetsFailed):
                self._deadline_passed()
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        await self._abandon(note="caller left early")
        self._finish(None)

    async def _leave(self, exc: BaseException | None) -> None:
        """The caller's block ended, with ``exc`` if it raised. A caller cancelled
        (its cancel scope, a sidecar client gone) before the answer was whole is
        ``client_cancelled``; any other early exit is leaving early (``cancelled``)."""
        if (
            exc is None
            or self._finished_reported
            or self._saw_finish
            or self._upstream.expired
            or not is_cancellation(exc)
        ):
            await self.aclose()
            return
        await self._abandon(note="caller cancelled")
        self._finish(exc)

    async def _abandon(self, *, note: str) -> None:
        """End the running segment as cancelled by the caller (no cost to the target)."""
        if self._segment_ended:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        self._upstream.order.cancel(CancelReason.CALLER)
        await self._upstream.aclose()
        result = attrs.evolve(
            self._outcome,
            kind=OutcomeKind.CANCELLED,
            cancel_reason=CancelReason.CALLER,
        )
        self._end_segment(result, decision=Decision.CANCELLED, note=note)


class StreamContext:
    """What ``Switcher.stream`` returns: ``async with`` it to get a :class:`ChatStream`."""

    def __init__(self, start: Callable[[AsyncExitStack], Any]) -> None:
        self._start = start
        self._stack: AsyncExitStack | None = None
        self._stream: ChatStream | None = None

    async def __aenter__(self) -> ChatStream:
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            stream: ChatStream = await self._start(stack)
        except BaseException as exc:
            await stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._stack = stack
        self._stream = stream
        return stream

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._stack is not None and self._stream is not None
        try:
            await self._stream._leave(exc)
        finally:
            await self._stack.__aexit__(exc_type, exc, tb)
