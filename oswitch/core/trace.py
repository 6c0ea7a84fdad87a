"""Request traces: what happened to one request, attempt by attempt.

Traces keep sizes, offsets, targets, timings and classes — never prompt or
completion text, never a key — so they can be shown to any operator.
Times are seconds on the switcher's clock (trio's clock in the runtime).

Every string a trace keeps is clipped (:mod:`oswitch.core.clip`): request ids and
model names are the callers' choice, notes may quote a provider. The store is
bounded by count and by an estimate of the bytes its traces hold.
"""

from __future__ import annotations

import sys
from collections import OrderedDict

import attrs

from oswitch.core.clip import MAX_TEXT_CHARS, clip
from oswitch.core.error_class import ErrorClass

# The bytes of a trace and of one attempt record besides their strings (the objects,
# their fields, the store's dict slot): measured on CPython 3.11 (about 360 and 180)
# and rounded up. Strings are counted whole even when shared, so the estimate errs
# high: a typical trace of three attempts is estimated at 2 KB and holds 1.2 KB.
TRACE_BYTES = 512
ATTEMPT_BYTES = 256
DEFAULT_STORE_BYTES = 16 * 1024 * 1024


def _clip_note(note: str) -> str:
    return clip(note, MAX_TEXT_CHARS)


@attrs.frozen(kw_only=True)
class AttemptRecord:
    """One attempt of a request on one target.

    ``decision`` says what the dispatcher did next (``"return"``, ``"retry"``,
    ``"failover"``, ``"fallback"``, ``"resume"``, ``"give_up"``, ``"cancelled"``).
    ``chars`` is how many characters of the answer this attempt contributed,
    ``offset`` where in the caller's text they start (streams only). ``deadline``
    says which deadline ended the attempt (or was the hedge point), its value and
    why it has it (e.g. ``"first_token 10.000s cold_start (0 observations)"``). The token
    counts are what the provider reported the attempt used (None: nothing reported;
    ``cached_tokens`` are among ``prompt_tokens``), ``cost`` their price at the
    target's prices (None: no prices).
    """

    index: int
    target_id: str
    model: str = attrs.field(converter=clip)
    started_at: float
    duration_s: float
    error_class: ErrorClass | None
    decision: str
    status: int | None = None
    retry_after: float | None = None
    note: str = attrs.field(default="", converter=_clip_note)
    hedge: bool = False
    offset: int = 0
    chars: int = 0
    deadline: str = attrs.field(default="", converter=_clip_note)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    cost: float | None = None


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


# Converted (clipped) on construction only: a field set afterwards goes straight in,
# without attrs' per-assignment hook (a request sets several); finish() clips its own.
@attrs.define(on_setattr=attrs.setters.NO_OP)
class TraceBuilder:
    """The mutable trace of a request still running; ``freeze()`` snapshots it.

    ``size`` is the estimate of the bytes it holds, kept up to date as attempts are
    added, so the store it is in stays within its byte budget.
    """

    request_id: str = attrs.field(converter=clip)
    model: str = attrs.field(converter=clip)
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
    size: int = attrs.field(init=False, default=0, eq=False)
    _store: TraceStore | None = attrs.field(init=False, default=None, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.size = TRACE_BYTES + sys.getsizeof(self.request_id) + sys.getsizeof(self.model)
        self.size += sum(_record_bytes(record) for record in self.attempts)

    def add(self, record: AttemptRecord) -> None:
        self.attempts.append(record)
        grown = _record_bytes(record)
        self.size += grown
        if self._store is not None:
            self._store.grew(grown)

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
        # The served model is a caller's name on a passthrough target (room for it,
        # clipped, is part of TRACE_BYTES).
        self.served_model = None if served_model is None else clip(served_model)
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


def _record_bytes(record: AttemptRecord) -> int:
    return (
        ATTEMPT_BYTES
        + sys.getsizeof(record.model)
        + sys.getsizeof(record.note)
        + sys.getsizeof(record.target_id)
        + (sys.getsizeof(record.deadline) if record.deadline else 0)
    )


@attrs.define
class TraceStore:
    """A bounded ring of traces by request id: the oldest is evicted first, while
    there are more than ``capacity`` or their estimated bytes exceed ``max_bytes``
    (the newest trace is always kept, whatever its size)."""

    capacity: int
    max_bytes: int = DEFAULT_STORE_BYTES
    _traces: OrderedDict[str, TraceBuilder] = attrs.Factory(OrderedDict)
    _bytes: int = 0

    def add(self, trace: TraceBuilder) -> None:
        replaced = self._traces.pop(trace.request_id, None)
        if replaced is not None:
            self._forget(replaced)
        self._traces[trace.request_id] = trace
        trace._store = self
        self._bytes += trace.size
        self._evict()

    def grew(self, grown: int) -> None:
        """A trace in the store grew by ``grown`` bytes (called by the trace)."""
        self._bytes += grown
        self._evict()

    def get(self, request_id: str) -> RequestTrace | None:
        trace = self._traces.get(request_id)
        return None if trace is None else trace.freeze()

    def resize(self, capacity: int, *, max_bytes: int | None = None) -> None:
        self.capacity = capacity
        if max_bytes is not None:
            self.max_bytes = max_bytes
        self._evict()

    @property
    def bytes_kept(self) -> int:
        """The estimated bytes of the traces kept."""
        return self._bytes

    def _evict(self) -> None:
        traces = self._traces
        while len(traces) > self.capacity or (self._bytes > self.max_bytes and len(traces) > 1):
            _, oldest = traces.popitem(last=False)
            self._forget(oldest)

    def _forget(self, trace: TraceBuilder) -> None:
        trace._store = None
        self._bytes -= trace.size

    def __len__(self) -> int:
        return len(self._traces)
