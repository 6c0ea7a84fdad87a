"""Request traces: what happened to one request, attempt by attempt.

Traces keep sizes, offsets, targets, timings and classes — never prompt or
completion text, never a key — so they can be shown to any operator.
Times are seconds on the switcher's clock (trio's clock in the runtime).
"""

from __future__ import annotations

from collections import OrderedDict

import attrs

from oswitch.core.error_class import ErrorClass


@attrs.frozen(kw_only=True)
class AttemptRecord:
    """One attempt of a request on one target.

    ``decision`` says what the dispatcher did next (``"return"``, ``"retry"``,
    ``"failover"``, ``"fallback"``, ``"resume"``, ``"give_up"``, ``"cancelled"``).
    ``chars`` is how many characters of the answer this attempt contributed,
    ``offset`` where in the caller's text they start (streams only).
    """

    index: int
    target_id: str
    model: str
    started_at: float
    duration_s: float
    error_class: ErrorClass | None
    decision: str
    status: int | None = None
    retry_after: float | None = None
    note: str = ""
    hedge: bool = False
    offset: int = 0
    chars: int = 0


@attrs.frozen(kw_only=True)
class RequestTrace:
    """The frozen record of a request, as ``Switcher.inspect_request`` returns it.

    ``outcome`` is ``"ok"``, ``"in_progress"``, or the name of the error raised.
    """

    request_id: str
    model: str
    stream: bool
    started_at: float
    ended_at: float | None
    outcome: str
    served_by: str | None
    served_model: str | None
    attempts: tuple[AttemptRecord, ...]
    error_class: ErrorClass | None = None
    queue_wait_s: float = 0.0
    prompt_chars: int = 0

    @property
    def duration_s(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at


@attrs.define
class TraceBuilder:
    """The mutable trace of a request still running; ``freeze()`` snapshots it."""

    request_id: str
    model: str
    stream: bool
    started_at: float
    prompt_chars: int = 0
    queue_wait_s: float = 0.0
    attempts: list[AttemptRecord] = attrs.Factory(list)
    ended_at: float | None = None
    outcome: str = "in_progress"
    served_by: str | None = None
    served_model: str | None = None
    error_class: ErrorClass | None = None

    def add(self, record: AttemptRecord) -> None:
        self.attempts.append(record)

    def finish(
        self,
        now: float,
        outcome: str,
        *,
        served_by: str | None = None,
        served_model: str | None = None,
        error_class: ErrorClass | None = None,
    ) -> None:
        self.ended_at = now
        self.outcome = outcome
        self.served_by = served_by
        self.served_model = served_model
        self.error_class = error_class

    def freeze(self) -> RequestTrace:
        return RequestTrace(
            request_id=self.request_id,
            model=self.model,
            stream=self.stream,
            started_at=self.started_at,
            ended_at=self.ended_at,
            outcome=self.outcome,
            served_by=self.served_by,
            served_model=self.served_model,
            attempts=tuple(self.attempts),
            error_class=self.error_class,
            queue_wait_s=self.queue_wait_s,
            prompt_chars=self.prompt_chars,
        )


@attrs.define
class TraceStore:
    """A bounded ring of traces by request id: the oldest is evicted first."""

    capacity: int
    _traces: OrderedDict[str, TraceBuilder] = attrs.Factory(OrderedDict)

    def add(self, trace: TraceBuilder) -> None:
        self._traces[trace.request_id] = trace
        self._traces.move_to_end(trace.request_id)
        while len(self._traces) > self.capacity:
            self._traces.popitem(last=False)

    def get(self, request_id: str) -> RequestTrace | None:
        trace = self._traces.get(request_id)
        return None if trace is None else trace.freeze()

    def resize(self, capacity: int) -> None:
        self.capacity = capacity
        while len(self._traces) > self.capacity:
            self._traces.popitem(last=False)

    def __len__(self) -> int:
        return len(self._traces)
