"""What the dispatcher and the target actors say to each other."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

import attrs
import trio

from oswitch.core.classify import Classification
from oswitch.core.deadline_learning import Deadline, ModelTimings
from oswitch.core.error_class import ErrorClass
from oswitch.core.immutable import immutable
from oswitch.core.key_budget import Reservation
from oswitch.core.target_health import AttemptEnd
from oswitch.core.tokens import TokenEstimate, Usage

T = TypeVar("T")


class OneShot(Generic[T]):
    """A value delivered once from one task to another (a reply slot). The event a
    waiter parks on is made only when someone waits before the value is in: most
    slots (an attempt started from the request's own task) are never waited on."""

    __slots__ = ("_event", "_set", "_value")

    def __init__(self) -> None:
        self._event: trio.Event | None = None
        self._set = False
        self._value: T | None = None

    def set(self, value: T) -> None:
        """Deliver ``value``; later calls are ignored (the first answer wins)."""
        if not self._set:
            self._value = value
            self._set = True
            if self._event is not None:
                self._event.set()

    @property
    def is_set(self) -> bool:
        return self._set

    def peek(self) -> T | None:
        """The value if delivered, else None; never waits."""
        return self._value

    async def wait(self) -> T:
        """Block until the value is delivered, then return it (a checkpoint when it
        is already in)."""
        if self._set:
            await trio.lowlevel.checkpoint()
        else:
            if self._event is None:
                self._event = trio.Event()
            await self._event.wait()
        return self._value  # type: ignore[return-value]


class CancelReason(enum.StrEnum):
    """Why an attempt's cancel scope was cancelled from outside the attempt."""

    OPERATOR = "operator"  # disable_target, or a removed target: costs the request nothing
    HEDGE_LOST = "hedge_lost"  # another attempt of the same request answered first
    CALLER = "caller"  # the caller went away or its own deadline fired


class OutcomeKind(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REFUSED = "refused"
    GRANTED = "granted"  # the attempt may start: the caller's task does its I/O


@immutable(kw_only=True)
class AttemptOutcome:
    """How one attempt ended, as the target actor reports it to the dispatcher: plain
    data (a streamed attempt's open stream travels beside it, in an ``Answer``).

    ``FAILED`` carries the classification; ``silent`` marks an attempt abandoned
    at its time limit (never retried on that target). ``REFUSED`` means the target
    was not eligible when the order arrived: nothing was sent, nothing is spent.
    ``retry_same`` marks an AuthFailure after which the credential was refreshed.
    ``usage`` is what the provider reported the attempt used (None: nothing
    reported), ``cost`` its price at the target's prices (None: no prices).
    """

    kind: OutcomeKind
    target_id: str
    served_model: str
    started_at: float
    duration_s: float = 0.0
    reply: dict[str, Any] | None = None
    classification: Classification | None = None
    silent: bool = False
    cancel_reason: CancelReason | None = None
    retry_same: bool = False
    note: str = ""
    hedge: bool = False  # the attempt was a hedge (started while another still ran)
    deadline: str = ""  # the deadline that ended the attempt and why (traces)
    usage: Usage | None = None
    cost: float | None = None

    @property
    def error_class(self) -> ErrorClass | None:
        if self.silent:
            return ErrorClass.TRANSPORT_FAILURE
        return None if self.classification is None else self.classification.error_class

    def ending(self, epoch: int) -> AttemptEnd:
        """This outcome as the target's health rules read it (``epoch``: the breaker's
        when the attempt began). Only a classified FAILED outcome is a failure."""
        failure = self.classification if self.kind is OutcomeKind.FAILED else None
        return AttemptEnd(
            epoch=epoch,
            served_model=self.served_model,
            duration_s=self.duration_s,
            succeeded=self.kind is OutcomeKind.OK,
            error_class=None if failure is None else self.error_class,
            retry_after=None if failure is None else failure.retry_after,
            local_fault=failure is not None and failure.local_fault,
        )


# A passthrough target serves any model name: its grants are kept for this many.
MAX_KEPT_GRANTS = 256


class Grants:
    """A target's GRANTED outcomes, one per served model, each made once: the only
    fact of a grant anyone reads is its kind (the attempt's facts are its order's, and
    its clock starts when the caller's task runs it)."""

    __slots__ = ("_by_model", "_target_id")

    def __init__(self, target_id: str) -> None:
        self._target_id = target_id
        self._by_model: dict[str, AttemptOutcome] = {}

    def __call__(self, served_model: str) -> AttemptOutcome:
        grant = self._by_model.get(served_model)
        if grant is None:
            if len(self._by_model) >= MAX_KEPT_GRANTS:
                self._by_model.clear()
            grant = self._by_model[served_model] = AttemptOutcome(
                kind=OutcomeKind.GRANTED,
                target_id=self._target_id,
                served_model=served_model,
                started_at=0.0,
            )
        return grant


@attrs.define(eq=False)
class AttemptOrder:
    """One attempt of one request, sent to a target actor's inbox.

    Every wait of the attempt on its upstream runs inside :meth:`guard`, a cancel
    scope owned by the attempt; anyone may :meth:`cancel` it to fail it over. A
    streamed attempt uses one guard per read (its chunks are read in the caller's
    task, between the caller's own waits), a non-streamed one a single guard.

    ``expires_at`` is when the target ends a streamed attempt whose caller is not
    reading (the request's own deadline, ``request_timeout_ms``); ``settled`` is the
    outcome the target settled the attempt with, once it has ended. ``timings`` are
    the histograms of the served model the attempt feeds (set by the target);
    ``limit`` the deadline bounding a non-streamed attempt (set by the dispatcher).
    ``estimate`` is
    the request's token estimate; ``reservation`` what the target reserved for it.
    """

    request: Mapping[str, Any]
    model: str
    stream: bool
    deadline: float
    request_id: str
    hedge: bool = False
    expires_at: float = math.inf
    reply: OneShot[AttemptOutcome] = attrs.Factory(OneShot)
    # The guard of the wait in progress (None until the first): cancel() cancels it.
    scope: trio.CancelScope | None = None
    cancel_reason: CancelReason | None = None
    epoch: int = 0  # the target's breaker epoch when the attempt began
    settled: AttemptOutcome | None = None
    timings: ModelTimings | None = None
    limit: Deadline | None = None
    estimate: TokenEstimate | None = None
    reservation: Reservation | None = None

    def cancel(self, reason: CancelReason) -> None:
        """Cancel the attempt; the first reason given is the one reported."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
        if self.scope is not None:
            self.scope.cancel()

    @property
    def cancelled(self) -> bool:
        return self.cancel_reason is not None

    def guard(self, deadline: float) -> trio.CancelScope:
        """A cancel scope for one wait of this attempt, which :meth:`cancel` cancels
        (already cancelled if the attempt was). Use it as ``with order.guard(t):``."""
        scope = trio.CancelScope(deadline=deadline)
        self.scope = scope
        if self.cancel_reason is not None:
            scope.cancel()
        return scope


class CommandKind(enum.StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    DRAIN = "drain"
    DISABLE = "disable"
    RECONFIGURE = "reconfigure"
    RETIRE = "retire"  # removed by a reload: drain, then stop the actor


@attrs.define(eq=False)
class Command:
    """An operator command for one target; ``done`` is set once it is applied."""

    kind: CommandKind
    payload: object = None
    done: OneShot[None] = attrs.Factory(OneShot)
