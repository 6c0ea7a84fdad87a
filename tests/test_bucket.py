"""Token bucket: examples, and its bounds and rate as hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oswitch.core.bucket import BucketStatistics, TokenBucket

rates = st.floats(min_value=0.01, max_value=10_000.0)
bursts = st.floats(min_value=1.0, max_value=1_000.0)
starts = st.floats(min_value=0.0, max_value=1e7)
steps = st.lists(
    st.tuples(
        st.floats(min_value=-5.0, max_value=50.0),  # clock step; negative = clock went back
        st.floats(min_value=0.0, max_value=1.0),  # tokens wanted, as a share of burst
    ),
    max_size=40,
)


def test_starts_full_and_takes() -> None:
    """A new bucket holds burst tokens; a take that fits returns 0.0 and removes them."""
    bucket = TokenBucket(2.0, 5.0, 100.0)
    assert bucket.available(100.0) == 5.0
    assert bucket.try_take(100.0, 3.0) == 0.0
    assert bucket.available(100.0) == 2.0


def test_refused_take_reports_the_wait_and_takes_nothing() -> None:
    """A take that does not fit returns the seconds until it would, and leaves the tokens."""
    bucket = TokenBucket(2.0, 5.0, 0.0)
    bucket.try_take(0.0, 5.0)
    assert bucket.try_take(0.5, 3.0) == pytest.approx(1.0)
    assert bucket.available(0.5) == pytest.approx(1.0)
    assert bucket.try_take(1.5, 3.0) == 0.0


def test_wait_time_does_not_take() -> None:
    """wait_time answers like try_take but never removes tokens."""
    bucket = TokenBucket(1.0, 2.0, 0.0)
    assert bucket.wait_time(0.0, 2.0) == 0.0
    assert bucket.wait_time(0.0, 2.0) == 0.0
    assert bucket.available(0.0) == 2.0
    bucket.try_take(0.0, 2.0)
    assert bucket.wait_time(0.0) == pytest.approx(1.0)
    assert bucket.wait_time(0.25) == pytest.approx(0.75)


def test_refill_stops_at_burst() -> None:
    """Idle time never fills the bucket past burst."""
    bucket = TokenBucket(10.0, 3.0, 0.0)
    bucket.try_take(0.0, 3.0)
    assert bucket.available(1000.0) == 3.0


def test_clock_going_back_counts_as_no_time() -> None:
    """An earlier now neither refills nor drains, and its wait runs from the latest time seen."""
    bucket = TokenBucket(1.0, 1.0, 10.0)
    bucket.try_take(10.0)
    assert bucket.available(5.0) == 0.0
    assert bucket.wait_time(5.0) == pytest.approx(6.0)
    assert bucket.try_take(5.0) > 0.0
    assert bucket.try_take(11.0) == 0.0


@pytest.mark.parametrize("tokens", [-1.0, 5.5])
def test_impossible_take_raises(tokens: float) -> None:
    """Asking for a negative amount or more than burst raises ValueError."""
    bucket = TokenBucket(1.0, 5.0, 0.0)
    with pytest.raises(ValueError, match="tokens must be between 0 and burst"):
        bucket.try_take(0.0, tokens)
    with pytest.raises(ValueError, match="tokens must be between 0 and burst"):
        bucket.wait_time(0.0, tokens)


@pytest.mark.parametrize("rate, burst", [(0.0, 1.0), (1.0, 0.0), (-1.0, 1.0), (float("inf"), 1.0)])
def test_bad_settings_raise(rate: float, burst: float) -> None:
    """A rate or burst that is not a finite positive number raises ValueError."""
    with pytest.raises(ValueError, match="must be a finite number > 0"):
        TokenBucket(rate, burst, 0.0)


def test_statistics_count_takes() -> None:
    """statistics() reports the settings, tokens now, and granted/refused counts."""
    bucket = TokenBucket(1.0, 2.0, 0.0)
    bucket.try_take(0.0, 2.0)
    bucket.try_take(0.0)
    bucket.try_take(1.0)
    assert bucket.statistics(1.5) == BucketStatistics(
        rate_per_s=1.0,
        burst=2.0,
        available=0.5,
        tokens_taken=3.0,
        takes_granted=2,
        takes_refused=1,
    )


def test_reconfigure_keeps_earned_tokens_within_the_new_burst() -> None:
    """A reload changes rate and burst, clamping the tokens held to the new burst."""
    bucket = TokenBucket(1.0, 10.0, 0.0)
    bucket.reconfigure(0.0, rate_per_s=5.0, burst=4.0)
    assert bucket.available(0.0) == 4.0
    bucket.try_take(0.0, 4.0)
    assert bucket.wait_time(0.0, 1.0) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="burst"):
        bucket.reconfigure(0.0, rate_per_s=1.0, burst=0.0)
    assert (bucket.rate_per_s, bucket.burst) == (5.0, 4.0)


@given(rate=rates, burst=bursts, start=starts, plan=steps)
def test_tokens_and_waits_stay_in_bounds(
    rate: float, burst: float, start: float, plan: list[tuple[float, float]]
) -> None:
    """Tokens stay within [0, burst] and waits are never negative, whatever the calls."""
    bucket = TokenBucket(rate, burst, start)
    now = start
    for step, share in plan:
        now += step
        wait = bucket.try_take(now, share * burst)
        assert wait >= 0.0
        assert 0.0 <= bucket.available(now) <= burst
        assert bucket.wait_time(now, share * burst) >= 0.0


@given(rate=rates, burst=bursts, start=starts, plan=steps, share=st.floats(0.0, 1.0))
def test_waiting_the_returned_time_then_taking_succeeds(
    rate: float, burst: float, start: float, plan: list[tuple[float, float]], share: float
) -> None:
    """After sleeping exactly the wait try_take returned, the same take succeeds."""
    bucket = TokenBucket(rate, burst, start)
    now = start
    for step, drain in plan:
        now += step
        bucket.try_take(now, drain * burst)
    wanted = share * burst
    wait = bucket.try_take(now, wanted)
    if wait > 0.0:
        assert bucket.try_take(now + wait, wanted) == 0.0


@given(
    rate=rates,
    burst=bursts,
    start=starts,
    plan=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=5.0), st.floats(0.0, 1.0)), max_size=60
    ),
)
def test_long_run_rate_is_respected(
    rate: float, burst: float, start: float, plan: list[tuple[float, float]]
) -> None:
    """Over any span, takes granted add up to at most burst + rate * elapsed."""
    bucket = TokenBucket(rate, burst, start)
    now = start
    granted = 0.0
    for step, share in plan:
        now += step
        if bucket.try_take(now, share * burst) == 0.0:
            granted += share * burst
    allowed = burst + rate * (now - start)
    # Each take may land a few float ulps of the clock early; nothing more.
    rounding = len(plan) * (1e-9 * burst + rate * 1e-14 * max(now, 1.0))
    assert granted <= allowed * (1 + 1e-12) + rounding
