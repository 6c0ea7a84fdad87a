"""A circuit breaker per target, written as one ``(state, event) -> state`` table.

The breaker is pure bookkeeping: the target actor tells it when an attempt begins
and how it ended, passing the current time as ``now`` (seconds). Open becomes
HalfOpen by the clock alone, so :meth:`CircuitBreaker.state` computes it from
``half_open_at`` instead of needing a timer task to poke the breaker.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping
from types import MappingProxyType

import attrs


class BreakerState(enum.StrEnum):
    """Where a breaker stands; the values are the names listings show."""

    CLOSED = "Closed"
    OPEN = "Open"
    HALF_OPEN = "HalfOpen"


class BreakerEvent(enum.StrEnum):
    """What can move a breaker from one state to another."""

    TRIP = "Trip"
    COOL_OFF_ELAPSED = "CoolOffElapsed"
    PROBE_FAILED = "ProbeFailed"
    PROBES_SUCCEEDED = "ProbesSucceeded"
    RESET = "Reset"


TRANSITIONS: Mapping[tuple[BreakerState, BreakerEvent], BreakerState] = MappingProxyType(
    {
        (BreakerState.CLOSED, BreakerEvent.TRIP): BreakerState.OPEN,
        (BreakerState.OPEN, BreakerEvent.COOL_OFF_ELAPSED): BreakerState.HALF_OPEN,
        (BreakerState.HALF_OPEN, BreakerEvent.PROBE_FAILED): BreakerState.OPEN,
        (BreakerState.HALF_OPEN, BreakerEvent.PROBES_SUCCEEDED): BreakerState.CLOSED,
        (BreakerState.CLOSED, BreakerEvent.RESET): BreakerState.CLOSED,
        (BreakerState.OPEN, BreakerEvent.RESET): BreakerState.CLOSED,
        (BreakerState.HALF_OPEN, BreakerEvent.RESET): BreakerState.CLOSED,
    }
)
"""The only legal moves. Anything not listed raises :class:`IllegalTransition`."""


class IllegalTransition(ValueError):
    """An event that has no entry in :data:`TRANSITIONS` for the current state."""

    def __init__(self, state: BreakerState, event: BreakerEvent) -> None:
        super().__init__(f"event {event.value} is not allowed in state {state.value}")
        self.state = state
        self.event = event


class BreakerOpen(RuntimeError):
    """An attempt was refused: the breaker is open, or every half-open probe slot is taken.

    ``retry_at`` is when the breaker turns HalfOpen (None when it already is and
    only a probe slot is missing: that frees when a probe ends, not at a known time).
    """

    def __init__(self, state: BreakerState, retry_at: float | None) -> None:
        if retry_at is None:
            message = f"circuit breaker is {state.value}: no free probe slot"
        else:
            message = f"circuit breaker is {state.value} until {retry_at:.3f}"
        super().__init__(message)
        self.state = state
        self.retry_at = retry_at


def next_state(state: BreakerState, event: BreakerEvent) -> BreakerState:
    """Look ``(state, event)`` up in :data:`TRANSITIONS`.

    Raises :class:`IllegalTransition` when the table has no such move.
    """
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(state, event) from None


def _positive_int(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1 (got {value})")


def _rate(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{attribute.name} must be in (0, 1] (got {value})")


def _non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0.0:
        raise ValueError(f"{attribute.name} must be >= 0 (got {value})")


@attrs.frozen(kw_only=True)
class BreakerSettings:
    """When a breaker opens and how it closes again; defaults are o-switcher's.

    Raises ``ValueError`` on construction when a value is out of range.
    """

    failure_threshold: int = attrs.field(default=5, validator=_positive_int)
    failure_rate_threshold: float = attrs.field(default=0.5, validator=_rate)
    sliding_window_size: int = attrs.field(default=10, validator=_positive_int)
    half_open_after_s: float = attrs.field(default=30.0, validator=_non_negative)
    half_open_max_probes: int = attrs.field(default=1, validator=_positive_int)
    success_threshold: int = attrs.field(default=2, validator=_positive_int)


@attrs.frozen(kw_only=True)
class Transition:
    """One state change, for logs, traces and the target's listing."""

    from_state: BreakerState
    to_state: BreakerState
    at: float
    reason: str


@attrs.frozen(kw_only=True)
class BreakerStatistics:
    """A snapshot of a breaker at one moment."""

    state: BreakerState
    consecutive_failures: int
    window_outcomes: int
    window_failures: int
    probes_in_flight: int
    half_open_successes: int
    half_open_at: float | None
    trips: int
    epoch: int


@attrs.define
class CircuitBreaker:
    """Closed → Open on too many failures, Open → HalfOpen after a cool-off,
    HalfOpen → Closed after enough probe successes or back to Open on a failure.

    Use it as: ``can_attempt(now)`` to filter, ``begin_attempt(now)`` when an attempt
    starts, then exactly one of ``record_success``, ``record_failure`` or ``release``
    when it ends. Every outcome method accepts the ``epoch`` read just after
    ``begin_attempt``; an outcome from an older epoch (the breaker changed state while
    the attempt ran) is ignored, so a slow attempt started while Closed can neither
    take a probe's slot nor close the breaker. Without ``epoch`` an outcome in
    HalfOpen is counted as a probe's if a probe is in flight, else ignored.
    """

    settings: BreakerSettings = attrs.field(factory=BreakerSettings)
    _state: BreakerState = attrs.field(init=False, default=BreakerState.CLOSED)
    _half_open_at: float | None = attrs.field(init=False, default=None)
    _consecutive_failures: int = attrs.field(init=False, default=0)
    # True marks a failure; maxlen makes old outcomes fall out on their own.
    _window: deque[bool] = attrs.field(init=False)
    _probes_in_flight: int = attrs.field(init=False, default=0)
    _half_open_successes: int = attrs.field(init=False, default=0)
    _trips: int = attrs.field(init=False, default=0)
    _epoch: int = attrs.field(init=False, default=0)

    @_window.default
    def _new_window(self) -> deque[bool]:
        return deque(maxlen=self.settings.sliding_window_size)

    @property
    def half_open_at(self) -> float | None:
        """When Open, the moment it becomes HalfOpen (kept, though past, until an attempt
        applies it); otherwise None."""
        return self._half_open_at

    @property
    def epoch(self) -> int:
        """A counter bumped by every state change; see the class docstring."""
        return self._epoch

    def state(self, now: float) -> BreakerState:
        """The state at ``now``, counting an elapsed cool-off as HalfOpen. Never raises."""
        if self._state is BreakerState.OPEN and self._cool_off_elapsed(now):
            return BreakerState.HALF_OPEN
        return self._state

    def can_attempt(self, now: float) -> bool:
        """Whether :meth:`begin_attempt` would succeed at ``now``. Never raises."""
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        probes = 0 if self._state is BreakerState.OPEN else self._probes_in_flight
        return probes < self.settings.half_open_max_probes

    def begin_attempt(self, now: float) -> Transition | None:
        """Start an attempt: apply an elapsed cool-off, and in HalfOpen take a probe slot.

        Returns the Open → HalfOpen transition when this call applied it.
        Raises :class:`BreakerOpen` (changing nothing) when no attempt is allowed.
        """
        if not self.can_attempt(now):
            state = self.state(now)
            retry_at = self._half_open_at if state is BreakerState.OPEN else None
            raise BreakerOpen(state, retry_at)
        transition = None
        if self._state is BreakerState.OPEN:
            transition = self._fire(BreakerEvent.COOL_OFF_ELAPSED, now, "cool-off elapsed")
        if self._state is BreakerState.HALF_OPEN:
            self._probes_in_flight += 1
        return transition

    def record_success(self, now: float, *, epoch: int | None = None) -> Transition | None:
        """Count a successful attempt; returns HalfOpen → Closed when it closes. Never raises."""
        if not self._counts(epoch):
            return None
        if self._state is BreakerState.CLOSED:
            self._consecutive_failures = 0
            self._window.append(False)
            return None
        # HalfOpen with a probe in flight (_counts rules out every other case).
        self._probes_in_flight -= 1
        self._half_open_successes += 1
        if self._half_open_successes >= self.settings.success_threshold:
            reason = f"{self._half_open_successes} probe successes"
            return self._fire(BreakerEvent.PROBES_SUCCEEDED, now, reason)
        return None

    def record_failure(self, now: float, *, epoch: int | None = None) -> Transition | None:
        """Count a failed attempt; returns the transition to Open when it opens.

        In Closed it opens on ``failure_threshold`` consecutive failures, or when the
        window is full and its failure share reaches ``failure_rate_threshold`` (checked
        here, on a failure, so a success never trips it). In HalfOpen any counted
        failure reopens it. Never raises.
        """
        if not self._counts(epoch):
            return None
        if self._state is BreakerState.HALF_OPEN:
            self._probes_in_flight -= 1
            return self._fire(BreakerEvent.PROBE_FAILED, now, "probe failed")
        self._consecutive_failures += 1
        self._window.append(True)
        settings = self.settings
        if self._consecutive_failures >= settings.failure_threshold:
            reason = f"{self._consecutive_failures} consecutive failures"
            return self._fire(BreakerEvent.TRIP, now, reason)
        if len(self._window) == settings.sliding_window_size:
            failures = sum(self._window)
            if failures / len(self._window) >= settings.failure_rate_threshold:
                reason = f"{failures} failures in the last {len(self._window)} outcomes"
                return self._fire(BreakerEvent.TRIP, now, reason)
        return None

    def release(self, now: float, *, epoch: int | None = None) -> None:
        """End an attempt with no verdict on the target (cancelled, or the request's fault).

        Frees its probe slot and records nothing. Never raises.
        """
        if self._counts(epoch) and self._state is BreakerState.HALF_OPEN:
            self._probes_in_flight -= 1

    def reset(self, now: float) -> Transition | None:
        """Close the breaker and clear its counters (an operator's resume or a reload).

        Returns the transition, or None when it was already Closed. Never raises.
        """
        state = self.state(now)
        if state is BreakerState.CLOSED:
            self._clear_counters()
            return None
        return self._fire(BreakerEvent.RESET, now, "reset", from_state=state)

    def statistics(self, now: float) -> BreakerStatistics:
        """A snapshot at ``now``; ``half_open_at`` stays set until HalfOpen is applied.

        Never raises.
        """
        return BreakerStatistics(
            state=self.state(now),
            consecutive_failures=self._consecutive_failures,
            window_outcomes=len(self._window),
            window_failures=sum(self._window),
            probes_in_flight=self._probes_in_flight,
            half_open_successes=self._half_open_successes,
            half_open_at=self._half_open_at,
            trips=self._trips,
            epoch=self._epoch,
        )

    def _cool_off_elapsed(self, now: float) -> bool:
        return self._half_open_at is not None and now >= self._half_open_at

    def _counts(self, epoch: int | None) -> bool:
        # An outcome belongs to the current state only if nothing changed since it
        # began; in (stored) Open every attempt in flight predates the trip.
        if epoch is not None and epoch != self._epoch:
            return False
        if self._state is BreakerState.OPEN:
            return False
        return self._state is BreakerState.CLOSED or self._probes_in_flight > 0

    def _clear_counters(self) -> None:
        self._consecutive_failures = 0
        self._window.clear()
        self._half_open_successes = 0

    def _fire(
        self,
        event: BreakerEvent,
        now: float,
        reason: str,
        *,
        from_state: BreakerState | None = None,
    ) -> Transition:
        before = self._state if from_state is None else from_state
        after = next_state(before, event)
        self._state = after
        self._epoch += 1
        # Probe slots belong to the state they were taken in; outcomes of attempts
        # from an older epoch are ignored, so nobody gives these slots back.
        self._probes_in_flight = 0
        self._half_open_successes = 0
        if after is BreakerState.OPEN:
            self._half_open_at = now + self.settings.half_open_after_s
            self._trips += 1
        else:
            self._half_open_at = None
        if after is BreakerState.CLOSED:
            self._clear_counters()
        return Transition(from_state=before, to_state=after, at=now, reason=reason)
