"""Circuit breaker: the transition table, each rule by example, and invariants by hypothesis."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from oswitch.core.breaker import (
    TRANSITIONS,
    BreakerEvent,
    BreakerOpen,
    BreakerSettings,
    BreakerState,
    CircuitBreaker,
    IllegalTransition,
    Transition,
    next_state,
)

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
LEGAL_MOVES = {(before, after) for (before, _), after in TRANSITIONS.items()}


def tripped(settings: BreakerSettings | None = None, now: float = 0.0) -> CircuitBreaker:
    """A breaker opened at ``now`` by consecutive failures."""
    breaker = CircuitBreaker(settings or BreakerSettings())
    for _ in range(breaker.settings.failure_threshold):
        breaker.begin_attempt(now)
        breaker.record_failure(now)
    assert breaker.state(now) is OPEN
    return breaker


def test_default_settings_match_o_switcher() -> None:
    """Defaults are 5 failures / 0.5 rate / window 10 / 30 s / 1 probe / 2 successes."""
    assert BreakerSettings() == BreakerSettings(
        failure_threshold=5,
        failure_rate_threshold=0.5,
        sliding_window_size=10,
        half_open_after_s=30.0,
        half_open_max_probes=1,
        success_threshold=2,
    )


@pytest.mark.parametrize(
    "field, value",
    [
        ("failure_threshold", 0),
        ("failure_rate_threshold", 0.0),
        ("failure_rate_threshold", 1.5),
        ("sliding_window_size", 0),
        ("half_open_after_s", -1.0),
        ("half_open_max_probes", 0),
        ("success_threshold", 0),
    ],
)
def test_settings_out_of_range_raise(field: str, value: float) -> None:
    """An out-of-range setting raises ValueError naming the field."""
    with pytest.raises(ValueError, match=field):
        BreakerSettings(**{field: value})  # type: ignore[arg-type]


def test_table_states_values_are_listing_names() -> None:
    """State values are spelled as listings show them."""
    assert [s.value for s in BreakerState] == ["Closed", "Open", "HalfOpen"]


def test_every_pair_outside_the_table_is_illegal() -> None:
    """next_state raises IllegalTransition (a ValueError) for every pair the table lacks."""
    for state, event in itertools.product(BreakerState, BreakerEvent):
        if (state, event) in TRANSITIONS:
            assert next_state(state, event) is TRANSITIONS[(state, event)]
        else:
            with pytest.raises(IllegalTransition) as info:
                next_state(state, event)
            assert isinstance(info.value, ValueError)
            assert (info.value.state, info.value.event) == (state, event)


def test_table_has_the_documented_moves() -> None:
    """The table trips, cools off, closes on probes, reopens on a probe failure, resets."""
    table = dict(TRANSITIONS)
    assert table == {
        (CLOSED, BreakerEvent.TRIP): OPEN,
        (OPEN, BreakerEvent.COOL_OFF_ELAPSED): HALF_OPEN,
        (HALF_OPEN, BreakerEvent.PROBES_SUCCEEDED): CLOSED,
        (HALF_OPEN, BreakerEvent.PROBE_FAILED): OPEN,
        (CLOSED, BreakerEvent.RESET): CLOSED,
        (OPEN, BreakerEvent.RESET): CLOSED,
        (HALF_OPEN, BreakerEvent.RESET): CLOSED,
    }


def test_consecutive_failures_open_it() -> None:
    """The failure_threshold-th consecutive failure opens the breaker with a reason."""
    breaker = CircuitBreaker(BreakerSettings(failure_threshold=3, sliding_window_size=100))
    for _ in range(2):
        breaker.begin_attempt(0.0)
        assert breaker.record_failure(0.0) is None
    breaker.begin_attempt(0.0)
    transition = breaker.record_failure(7.0)
    assert transition == Transition(
        from_state=CLOSED, to_state=OPEN, at=7.0, reason="3 consecutive failures"
    )
    assert breaker.half_open_at == 37.0
    assert breaker.statistics(7.0).trips == 1


def test_a_success_breaks_the_run_of_failures() -> None:
    """A success in between resets the consecutive count, so the breaker stays closed."""
    breaker = CircuitBreaker(BreakerSettings(failure_threshold=3, sliding_window_size=100))
    for outcome in "FFSFF":
        breaker.begin_attempt(0.0)
        if outcome == "F":
            breaker.record_failure(0.0)
        else:
            breaker.record_success(0.0)
    assert breaker.state(0.0) is CLOSED
    assert breaker.statistics(0.0).consecutive_failures == 2


def test_failure_rate_opens_only_once_window_is_full() -> None:
    """The rate rule waits for a full window, then trips when failures reach the rate."""
    settings = BreakerSettings(
        failure_threshold=100, sliding_window_size=4, failure_rate_threshold=0.5
    )
    breaker = CircuitBreaker(settings)
    for outcome in "FSF":
        breaker.begin_attempt(0.0)
        getattr(breaker, "record_failure" if outcome == "F" else "record_success")(0.0)
    assert breaker.state(0.0) is CLOSED  # 2/3 failures, but only 3 of 4 outcomes seen
    breaker.begin_attempt(0.0)
    breaker.record_success(0.0)
    breaker.begin_attempt(0.0)
    transition = breaker.record_failure(1.0)  # window now S F S F: 2/4
    assert transition is not None
    assert transition.to_state is OPEN
    assert transition.reason == "2 failures in the last 4 outcomes"


def test_window_keeps_only_the_last_outcomes() -> None:
    """Old outcomes fall out of the sliding window."""
    breaker = CircuitBreaker(BreakerSettings(failure_threshold=100, sliding_window_size=3))
    for outcome in "FSSS":
        breaker.begin_attempt(0.0)
        getattr(breaker, "record_failure" if outcome == "F" else "record_success")(0.0)
    stats = breaker.statistics(0.0)
    assert (stats.window_outcomes, stats.window_failures) == (3, 0)


def test_open_refuses_attempts_without_changing_state() -> None:
    """While open, can_attempt is False and begin_attempt raises BreakerOpen with retry_at."""
    breaker = tripped(now=10.0)
    before = breaker.statistics(20.0)
    assert not breaker.can_attempt(20.0)
    with pytest.raises(BreakerOpen) as info:
        breaker.begin_attempt(20.0)
    assert isinstance(info.value, RuntimeError)
    assert info.value.retry_at == 40.0
    assert info.value.state is OPEN
    assert breaker.statistics(20.0) == before


def test_state_turns_half_open_by_the_clock_alone() -> None:
    """state(now) reports HalfOpen from half_open_at on, without mutating the breaker."""
    breaker = tripped(now=0.0)
    epoch = breaker.epoch
    assert breaker.state(29.999) is OPEN
    assert breaker.state(30.0) is HALF_OPEN
    assert breaker.can_attempt(30.0)
    assert breaker.statistics(30.0).state is HALF_OPEN
    assert breaker.epoch == epoch
    assert breaker.half_open_at == 30.0


def test_begin_attempt_applies_the_cool_off_and_takes_the_probe_slot() -> None:
    """The first attempt after the cool-off returns Open→HalfOpen; the single slot is then taken."""
    breaker = tripped(now=0.0)
    transition = breaker.begin_attempt(31.0)
    assert transition == Transition(
        from_state=OPEN, to_state=HALF_OPEN, at=31.0, reason="cool-off elapsed"
    )
    assert breaker.half_open_at is None
    assert breaker.statistics(31.0).probes_in_flight == 1
    assert not breaker.can_attempt(31.0)
    with pytest.raises(BreakerOpen) as info:
        breaker.begin_attempt(31.0)
    assert info.value.retry_at is None
    assert info.value.state is HALF_OPEN


def test_several_probe_slots() -> None:
    """half_open_max_probes attempts may probe at once, and no more."""
    breaker = tripped(BreakerSettings(half_open_max_probes=3), now=0.0)
    for _ in range(3):
        breaker.begin_attempt(30.0)
    assert not breaker.can_attempt(30.0)
    assert breaker.statistics(30.0).probes_in_flight == 3


def test_enough_probe_successes_close_and_clear() -> None:
    """success_threshold probe successes close the breaker with window and counters cleared."""
    breaker = tripped(now=0.0)
    breaker.begin_attempt(30.0)
    assert breaker.record_success(30.5) is None
    assert breaker.state(30.5) is HALF_OPEN
    breaker.begin_attempt(31.0)
    transition = breaker.record_success(32.0)
    assert transition == Transition(
        from_state=HALF_OPEN, to_state=CLOSED, at=32.0, reason="2 probe successes"
    )
    stats = breaker.statistics(32.0)
    assert (stats.consecutive_failures, stats.window_outcomes, stats.probes_in_flight) == (0, 0, 0)
    assert stats.half_open_successes == 0
    assert stats.half_open_at is None
    assert stats.trips == 1


def test_a_probe_failure_reopens_with_a_fresh_timer() -> None:
    """Any failure in HalfOpen reopens the breaker until now + half_open_after_s."""
    breaker = tripped(now=0.0)
    breaker.begin_attempt(30.0)
    breaker.record_success(30.0)
    breaker.begin_attempt(40.0)
    transition = breaker.record_failure(41.0)
    assert transition == Transition(
        from_state=HALF_OPEN, to_state=OPEN, at=41.0, reason="probe failed"
    )
    assert breaker.half_open_at == 71.0
    stats = breaker.statistics(41.0)
    assert (stats.trips, stats.half_open_successes, stats.probes_in_flight) == (2, 0, 0)


def test_release_frees_the_slot_and_records_nothing() -> None:
    """release() gives the probe slot back without counting a success or a failure."""
    breaker = tripped(now=0.0)
    breaker.begin_attempt(30.0)
    before = breaker.statistics(30.0)
    breaker.release(30.0)
    after = breaker.statistics(30.0)
    assert after.probes_in_flight == 0
    assert after.half_open_successes == before.half_open_successes
    assert after.state is HALF_OPEN
    assert breaker.can_attempt(30.0)


def test_release_in_closed_changes_nothing() -> None:
    """A released attempt in Closed leaves window and counters as they were."""
    breaker = CircuitBreaker(BreakerSettings())
    breaker.begin_attempt(0.0)
    breaker.record_failure(0.0)
    breaker.begin_attempt(0.0)
    before = breaker.statistics(0.0)
    breaker.release(0.0)
    assert breaker.statistics(0.0) == before


def test_reset_closes_an_open_breaker() -> None:
    """reset() moves Open to Closed and clears the counters."""
    breaker = tripped(now=0.0)
    transition = breaker.reset(5.0)
    assert transition == Transition(from_state=OPEN, to_state=CLOSED, at=5.0, reason="reset")
    stats = breaker.statistics(5.0)
    assert (stats.state, stats.consecutive_failures, stats.window_outcomes) == (CLOSED, 0, 0)


def test_reset_reports_the_observed_half_open_state() -> None:
    """A reset after the cool-off elapsed reports HalfOpen as where it came from."""
    breaker = tripped(now=0.0)
    transition = breaker.reset(45.0)
    assert transition is not None
    assert transition.from_state is HALF_OPEN


def test_reset_when_closed_clears_counters_without_a_transition() -> None:
    """reset() on a closed breaker returns None and forgets its failures."""
    breaker = CircuitBreaker(BreakerSettings())
    breaker.begin_attempt(0.0)
    breaker.record_failure(0.0)
    epoch = breaker.epoch
    assert breaker.reset(1.0) is None
    assert breaker.statistics(1.0).consecutive_failures == 0
    assert breaker.epoch == epoch


def test_outcomes_while_open_are_ignored() -> None:
    """An attempt begun before the trip that ends while open changes nothing."""
    breaker = CircuitBreaker(BreakerSettings(failure_threshold=2))
    breaker.begin_attempt(0.0)  # a slow attempt
    for _ in range(2):
        breaker.begin_attempt(0.0)
        breaker.record_failure(0.0)
    before = breaker.statistics(1.0)
    assert breaker.record_failure(1.0) is None
    assert breaker.record_success(1.0) is None
    assert breaker.statistics(1.0) == before


def test_stale_epoch_cannot_take_a_probes_place() -> None:
    """An outcome tagged with an older epoch neither frees a probe slot nor counts."""
    breaker = CircuitBreaker(BreakerSettings(failure_threshold=1, success_threshold=1))
    breaker.begin_attempt(0.0)
    slow_epoch = breaker.epoch
    breaker.begin_attempt(0.0)
    breaker.record_failure(0.0, epoch=breaker.epoch)
    breaker.begin_attempt(30.0)
    probe_epoch = breaker.epoch
    assert breaker.record_success(31.0, epoch=slow_epoch) is None
    breaker.release(31.0, epoch=slow_epoch)
    assert breaker.statistics(31.0).probes_in_flight == 1
    assert breaker.state(31.0) is HALF_OPEN
    transition = breaker.record_success(32.0, epoch=probe_epoch)
    assert transition is not None
    assert transition.to_state is CLOSED


def test_without_epoch_an_outcome_with_no_probe_in_flight_is_ignored() -> None:
    """In HalfOpen with no probe running, an untagged outcome is a leftover and changes nothing."""
    breaker = tripped(now=0.0)
    breaker.begin_attempt(30.0)
    breaker.release(30.0)
    before = breaker.statistics(30.0)
    assert breaker.record_failure(30.0) is None
    assert breaker.statistics(30.0) == before


class BreakerMachine(RuleBasedStateMachine):
    """Random attempts, outcomes, resets and clock steps against the invariants."""

    def __init__(self) -> None:
        super().__init__()
        self.settings = BreakerSettings(
            failure_threshold=3,
            failure_rate_threshold=0.5,
            sliding_window_size=4,
            half_open_after_s=10.0,
            half_open_max_probes=2,
            success_threshold=2,
        )
        self.breaker = CircuitBreaker(self.settings)
        self.now = 0.0
        self.in_flight: list[int] = []  # the epoch each running attempt began in
        self.observed = CLOSED
        self.trips = 0

    def _check(self, transition: Transition | None) -> None:
        after = self.breaker.state(self.now)
        if transition is None:
            assert after is self.observed
        else:
            # The cool-off is applied by the first attempt after it; the transition then
            # names the stored Open, though state(now) has been HalfOpen since.
            cool_off = (transition.from_state, after) == (OPEN, HALF_OPEN)
            assert transition.from_state is self.observed or cool_off
            assert transition.to_state is after
            assert transition.at == self.now
            assert (transition.from_state, transition.to_state) in LEGAL_MOVES
            if after is OPEN:
                self.trips += 1
                assert self.breaker.half_open_at == self.now + self.settings.half_open_after_s
        self.observed = after

    @rule(dt=st.one_of(st.sampled_from([1.0, 10.0]), st.floats(min_value=0.0, max_value=15.0)))
    def advance(self, dt: float) -> None:
        self.now += dt
        after = self.breaker.state(self.now)
        assert after is self.observed or (self.observed, after) == (OPEN, HALF_OPEN)
        self.observed = after

    @rule()
    def begin(self) -> None:
        if self.breaker.can_attempt(self.now):
            transition = self.breaker.begin_attempt(self.now)
            self._check(transition)
            self.in_flight.append(self.breaker.epoch)
        else:
            before = self.breaker.statistics(self.now)
            with pytest.raises(BreakerOpen):
                self.breaker.begin_attempt(self.now)
            assert self.breaker.statistics(self.now) == before

    @rule(
        data=st.data(),
        outcome=st.sampled_from(["success", "failure", "release"]),
        tagged=st.booleans(),
    )
    def finish(self, data: st.DataObject, outcome: str, tagged: bool) -> None:
        if not self.in_flight:
            return
        index = data.draw(st.integers(0, len(self.in_flight) - 1))
        began = self.in_flight.pop(index)
        epoch = began if tagged else None
        if outcome == "release":
            self.breaker.release(self.now, epoch=epoch)
            self._check(None)
        elif outcome == "success":
            self._check(self.breaker.record_success(self.now, epoch=epoch))
        else:
            self._check(self.breaker.record_failure(self.now, epoch=epoch))

    @rule(outcome=st.sampled_from(["success", "failure"]))
    def attempt(self, outcome: str) -> None:
        if not self.breaker.can_attempt(self.now):
            return
        self._check(self.breaker.begin_attempt(self.now))
        epoch = self.breaker.epoch
        if outcome == "success":
            self._check(self.breaker.record_success(self.now, epoch=epoch))
        else:
            self._check(self.breaker.record_failure(self.now, epoch=epoch))

    @rule(really=st.integers(0, 4))
    def reset(self, really: int) -> None:
        if really:  # resets are rare, so runs get deep enough to half-open and close
            return
        self._check(self.breaker.reset(self.now))
        assert self.breaker.statistics(self.now).consecutive_failures == 0

    @invariant()
    def probes_bounded(self) -> None:
        probes = self.breaker.statistics(self.now).probes_in_flight
        assert 0 <= probes <= self.settings.half_open_max_probes
        if self.breaker.state(self.now) is not HALF_OPEN:
            assert probes == 0

    @invariant()
    def closed_below_threshold(self) -> None:
        stats = self.breaker.statistics(self.now)
        if stats.state is CLOSED:
            assert stats.consecutive_failures < self.settings.failure_threshold

    @invariant()
    def window_bounded(self) -> None:
        stats = self.breaker.statistics(self.now)
        assert 0 <= stats.window_failures <= stats.window_outcomes
        assert stats.window_outcomes <= self.settings.sliding_window_size

    @invariant()
    def trips_counted(self) -> None:
        assert self.breaker.statistics(self.now).trips == self.trips

    @invariant()
    def half_open_at_matches_state(self) -> None:
        half_open_at = self.breaker.half_open_at
        state = self.breaker.state(self.now)
        if state is OPEN:
            assert half_open_at is not None
            assert half_open_at > self.now
        elif state is CLOSED:
            assert half_open_at is None
        else:
            assert half_open_at is None or half_open_at <= self.now


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = hyp_settings(max_examples=150, stateful_step_count=40, deadline=None)
