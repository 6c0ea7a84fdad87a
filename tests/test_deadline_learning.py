"""The decaying latency histogram and the learned-deadline policy (pure core)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oswitch.core.deadline_learning import (
    BUCKETS,
    CHUNK_GAP,
    FIRST_TOKEN,
    HALF_LIFE_S,
    MAX_MODELS,
    RESPONSE_HEADERS,
    DeadlinePolicy,
    DeadlineSource,
    LatencyHistogram,
    TimingBook,
    bucket_of,
    chunk_gap_deadline,
    first_token_deadline,
    learned_deadline,
    upper_edge,
)

# Any float at all, garbage included.
anything = st.floats(allow_nan=True, allow_infinity=True)
durations = st.floats(min_value=0.0, max_value=2000.0, allow_nan=False)
times = st.floats(min_value=-1e6, max_value=1e7, allow_nan=False)
events = st.lists(
    st.tuples(st.booleans(), anything, anything) | st.tuples(st.booleans(), durations, times),
    max_size=60,
)
fractions = st.floats(min_value=0.01, max_value=1.0)


def _histogram() -> LatencyHistogram:
    return LatencyHistogram(half_life_s=HALF_LIFE_S)


def _feed(histogram: LatencyHistogram, feed: list[tuple[bool, float, float]]) -> None:
    for censored, value, now in feed:
        if censored:
            histogram.observe_longer_than(value, now=now)
        else:
            histogram.observe(value, now=now)


@given(events)
def test_memory_stays_bounded_and_finite_whatever_is_fed(
    feed: list[tuple[bool, float, float]],
) -> None:
    """Whatever values and times come in (NaN, inf, negative, clocks going back), the
    histogram keeps its fixed buckets, every weight stays finite and nothing raises."""
    histogram = _histogram()
    _feed(histogram, feed)
    weights = histogram._weights
    assert len(weights) == BUCKETS
    assert all(math.isfinite(w) and w >= 0.0 for w in weights)
    q = histogram.quantile(0.95)
    assert q is None or (math.isfinite(q) and q > 0.0)
    assert histogram.statistics(now=0.0).weight >= 0.0


@given(events, durations, times, fractions)
def test_a_sample_at_or_above_the_quantile_never_lowers_it(
    feed: list[tuple[bool, float, float]], extra: float, now: float, fraction: float
) -> None:
    """Adding a sample no smaller than the current quantile never lowers that quantile."""
    histogram = _histogram()
    _feed(histogram, feed)
    before = histogram.quantile(fraction)
    value = max(extra, before or 0.0)
    histogram.observe(value, now=now)
    after = histogram.quantile(fraction)
    assert after is not None
    assert before is None or after >= before


@given(events, durations, times, fractions)
def test_a_censored_sample_never_lowers_any_quantile(
    feed: list[tuple[bool, float, float]], elapsed: float, now: float, fraction: float
) -> None:
    """ "It took longer than t" never lowers a quantile, whatever t and the history."""
    histogram = _histogram()
    _feed(histogram, feed)
    before = histogram.quantile(fraction)
    histogram.observe_longer_than(elapsed, now=now)
    after = histogram.quantile(fraction)
    assert after is not None
    assert before is None or after >= before


@given(durations)
def test_a_censored_sample_alone_reads_at_least_its_time(elapsed: float) -> None:
    """A target seen only through lost hedges is estimated no faster than they were."""
    histogram = _histogram()
    histogram.observe_longer_than(elapsed, now=0.0)
    quantile = histogram.quantile(0.95)
    assert quantile is not None
    assert quantile >= min(elapsed, upper_edge(BUCKETS - 1))


@given(st.lists(st.tuples(durations, st.floats(0.0, 100.0)), max_size=40), durations, fractions)
def test_decay_moves_the_quantile_to_recent_data(
    old: list[tuple[float, float]], recent: float, fraction: float
) -> None:
    """Samples 64 half-lives older than a new one weigh (next to) nothing: every
    quantile reads the new sample's bucket."""
    histogram = _histogram()
    for value, now in old:
        histogram.observe(value, now=now)
    histogram.observe(recent, now=100.0 + 64 * HALF_LIFE_S)
    assert histogram.quantile(fraction) == upper_edge(bucket_of(recent))


@given(events, st.none() | anything)
def test_a_deadline_that_is_not_an_override_lies_within_floor_and_cap(
    feed: list[tuple[bool, float, float]], override: float | None
) -> None:
    """Every policy's deadline is the override as given, or within [floor, cap]."""
    histogram = _histogram()
    _feed(histogram, feed)
    for policy in (FIRST_TOKEN, CHUNK_GAP, RESPONSE_HEADERS):
        deadline = learned_deadline(histogram, policy, override_s=override)
        if deadline.source is DeadlineSource.OVERRIDE:
            assert deadline.seconds == override
        else:
            assert policy.floor_s <= deadline.seconds <= policy.cap_s


@settings(max_examples=50)
@given(st.floats(min_value=1e-3, max_value=1e3))
def test_a_value_is_read_back_within_nine_percent_above_it(value: float) -> None:
    """A single sample reads back no lower than itself and at most one bucket (9 %) above."""
    histogram = _histogram()
    histogram.observe(value, now=0.0)
    quantile = histogram.quantile(0.5)
    assert quantile is not None
    assert value <= quantile <= value * 2 ** (1 / 8) * (1 + 1e-9)


def test_cold_target_gets_the_cold_start_deadlines() -> None:
    """A target with no observations gets 10 s to first token, 10 s between chunks and
    30 s to response headers, the values that rescue the issue's three rows."""
    histogram = _histogram()
    first = first_token_deadline(histogram)
    assert (first.seconds, first.source, first.quantile_s) == (
        10.0,
        DeadlineSource.COLD_START,
        None,
    )
    assert chunk_gap_deadline(histogram).seconds == 10.0
    assert learned_deadline(histogram, RESPONSE_HEADERS).seconds == 30.0


def test_nineteen_observations_are_still_cold() -> None:
    """Until 20 first tokens are in, the cold-start deadline holds even when they are fast."""
    histogram = _histogram()
    for i in range(19):
        histogram.observe(0.5, now=float(i))
    deadline = first_token_deadline(histogram)
    assert (deadline.seconds, deadline.source) == (10.0, DeadlineSource.COLD_START)
    histogram.observe(0.5, now=19.0)
    assert first_token_deadline(histogram).source is DeadlineSource.FLOOR


def test_reasoning_model_learns_a_deadline_above_45_s_after_20_first_tokens() -> None:
    """Twenty first tokens of 25-45 s give a first-token deadline above 45 s, and gaps
    pausing up to 8 s keep the stall deadline above 8 s."""
    rng = random.Random(13)
    histogram = _histogram()
    for i in range(20):
        histogram.observe(rng.uniform(25.0, 45.0), now=60.0 * i)
    deadline = first_token_deadline(histogram)
    assert deadline.source is DeadlineSource.LEARNED
    assert deadline.seconds > 45.0
    # The worst case: every one of them at 25 s still gives 2 × 25 = 50 s.
    slowest_fast = _histogram()
    for i in range(20):
        slowest_fast.observe(25.0, now=float(i))
    assert first_token_deadline(slowest_fast).seconds > 45.0

    gaps = _histogram()
    for i in range(2000):
        gaps.observe(8.0 if i % 100 == 0 else 0.03, now=i * 0.1)
    gap_deadline = chunk_gap_deadline(gaps)
    assert gap_deadline.source is DeadlineSource.LEARNED
    assert gap_deadline.seconds > 8.0


def test_reasoning_model_seen_only_through_lost_hedges_warms_up_after_21() -> None:
    """A slow model whose fast fallback wins every hedge (lost at deadline + 0.9 s)
    gets a first-token deadline above 45 s after 21 requests: 20 hedged at the 10 s
    cold start, one at the learned 23 s."""
    histogram = _histogram()
    hedged_at = []
    for i in range(40):
        deadline = first_token_deadline(histogram)
        if deadline.seconds > 45.0:
            break
        hedged_at.append(deadline.seconds)
        histogram.observe_longer_than(deadline.seconds + 0.9, now=30.0 * i)
    assert len(hedged_at) == 21
    assert hedged_at[:20] == [10.0] * 20
    assert 20.0 < hedged_at[20] < 25.0


def test_fast_model_gets_the_floor() -> None:
    """A model whose first token comes in 0.5 s is hedged after the 2 s floor, not 30 s."""
    histogram = _histogram()
    for i in range(50):
        histogram.observe(0.5, now=float(i))
    deadline = first_token_deadline(histogram)
    assert (deadline.seconds, deadline.source) == (2.0, DeadlineSource.FLOOR)
    assert deadline.quantile_s == upper_edge(bucket_of(0.5))


def test_fast_stream_gaps_keep_the_ten_second_stall_floor() -> None:
    """Gaps of 30 ms never bring the stall deadline under 10 s (learning only lengthens it)."""
    histogram = _histogram()
    for i in range(1000):
        histogram.observe(0.03, now=i * 0.03)
    assert chunk_gap_deadline(histogram).seconds == 10.0


def test_explicit_override_wins_over_cold_and_learned() -> None:
    """An explicit timeout is used as it is; a non-positive or non-finite one counts as unset."""
    histogram = _histogram()
    assert first_token_deadline(histogram, override_s=30.0).seconds == 30.0
    for i in range(50):
        histogram.observe(0.5, now=float(i))
    overridden = first_token_deadline(histogram, override_s=0.25)
    assert (overridden.seconds, overridden.source) == (0.25, DeadlineSource.OVERRIDE)
    for junk in (0.0, -1.0, math.nan, math.inf):
        assert first_token_deadline(histogram, override_s=junk).source is DeadlineSource.FLOOR


def test_a_long_first_token_is_capped() -> None:
    """A model whose first token takes 100 s gets the 120 s cap, not 200 s."""
    histogram = _histogram()
    for i in range(20):
        histogram.observe(100.0, now=float(i))
    deadline = first_token_deadline(histogram)
    assert (deadline.seconds, deadline.source) == (120.0, DeadlineSource.CAP)


def test_a_slowdown_is_learned_in_seconds_and_forgotten_in_minutes() -> None:
    """After an hour of 0.5 s first tokens at one request a second, 8 s first tokens
    raise the learned deadline above 8 s within 9 s, and it falls back to the floor
    514 s (4.3 half-lives) after the model is fast again."""
    histogram = _histogram()
    now = 0.0
    for _ in range(3600):
        histogram.observe(0.5, now=now)
        now += 1.0
    slow_since = now
    while first_token_deadline(histogram).seconds <= 8.0:
        histogram.observe(8.0, now=now)
        now += 1.0
    assert now - slow_since == 9.0
    for _ in range(600):
        histogram.observe(8.0, now=now)
        now += 1.0
    fast_since = now
    while first_token_deadline(histogram).source is not DeadlineSource.FLOOR:
        histogram.observe(0.5, now=now)
        now += 1.0
    assert now - fast_since == 514.0


def test_after_a_long_silence_the_newest_sample_rules() -> None:
    """A day without traffic leaves the learned quantile as it was until a new sample
    comes in, which then outweighs the day-old history."""
    histogram = _histogram()
    for i in range(30):
        histogram.observe(30.0, now=float(i))
    assert histogram.statistics(now=86400.0).weight < 1e-100
    assert histogram.quantile(0.95) == upper_edge(bucket_of(30.0))
    histogram.observe(1.0, now=86400.0)
    assert histogram.quantile(0.95) == upper_edge(bucket_of(1.0))
    assert first_token_deadline(histogram).observations == 31


def test_garbage_is_ignored() -> None:
    """NaN, negative and infinite values or times are not observations."""
    histogram = _histogram()
    for value, now in ((math.nan, 0.0), (-1.0, 0.0), (math.inf, 0.0), (1.0, math.nan)):
        histogram.observe(value, now=now)
        histogram.observe_longer_than(value, now=now)
    assert histogram.observations == 0
    assert histogram.quantile(0.95) is None
    assert histogram.statistics(now=0.0).weight == 0.0


def test_statistics_count_censored_samples_and_decay_the_weight() -> None:
    """Statistics count every observation and censored ones apart, and the weight
    halves per half-life."""
    histogram = _histogram()
    histogram.observe(1.0, now=0.0)
    histogram.observe_longer_than(2.0, now=0.0)
    stats = histogram.statistics(now=HALF_LIFE_S)
    assert (stats.observations, stats.censored) == (2, 1)
    assert stats.weight == pytest.approx(1.0)


def test_bad_settings_raise() -> None:
    """A half-life or policy that makes no sense is refused when built."""
    with pytest.raises(ValueError, match="half_life_s"):
        LatencyHistogram(half_life_s=0.0)
    with pytest.raises(ValueError, match="floor_s <= cold_start_s <= cap_s"):
        DeadlinePolicy(
            fraction=0.95, k=2.0, floor_s=5.0, cap_s=10.0, cold_start_s=20.0, min_observations=1
        )
    with pytest.raises(ValueError, match="max_models"):
        TimingBook(max_models=0)


def test_timing_book_forgets_the_least_recently_used_model() -> None:
    """A target keeps timings for at most MAX_MODELS models, dropping the least recently used."""
    book = TimingBook()
    first = book.for_model("m0")
    for i in range(1, MAX_MODELS):
        book.for_model(f"m{i}")
    assert book.for_model("m0") is first  # now the most recently used
    book.for_model("new")
    assert len(book) == MAX_MODELS
    assert "m1" not in book.models()
    assert book.models()[-2:] == ("m0", "new")


def test_scaled_policies_scale_every_duration_and_keep_k_and_fractions() -> None:
    """DeadlinePolicies.scaled(f) multiplies floors, caps, cold starts and the half-life
    by f (the bench's compressed runs), keeps k and the quantiles, refuses f <= 0."""
    from oswitch.core.deadline_learning import DeadlinePolicies

    scaled = DeadlinePolicies().scaled(0.01)
    assert (scaled.first_token.floor_s, scaled.first_token.cold_start_s) == (0.02, 0.1)
    assert scaled.chunk_gap.cap_s == pytest.approx(0.6)
    assert scaled.half_life_s == pytest.approx(1.2)
    assert (scaled.first_token.k, scaled.first_token.fraction) == (2.0, 0.95)
    with pytest.raises(ValueError):
        DeadlinePolicies().scaled(0.0)


def test_a_bounded_policy_only_ever_shortens_the_limit() -> None:
    """bounded_by(policy, limit) makes limit the cold start and the cap: learned values
    lie in [min(floor, limit), limit]."""
    from oswitch.core.deadline_learning import RESPONSE_HEADERS, bounded_by

    policy = bounded_by(RESPONSE_HEADERS, 2.0)
    assert (policy.floor_s, policy.cold_start_s, policy.cap_s) == (2.0, 2.0, 2.0)
    slow = LatencyHistogram(half_life_s=HALF_LIFE_S)
    for i in range(30):
        slow.observe(50.0, now=float(i))
    assert learned_deadline(slow, bounded_by(RESPONSE_HEADERS, 30.0)).seconds == 30.0


def test_a_deadline_describes_its_value_and_why() -> None:
    """Deadline.describe() is what traces and listings print: value, source, and the
    quantile and observations behind it."""
    histogram = LatencyHistogram(half_life_s=HALF_LIFE_S)
    assert first_token_deadline(histogram).describe() == "10.000s cold_start (0 observations)"
    assert first_token_deadline(histogram, override_s=3.0).describe() == (
        "3.000s override (explicit setting)"
    )
    for i in range(20):
        histogram.observe(0.5, now=float(i))
    text = first_token_deadline(histogram).describe()
    assert text.startswith("2.000s floor (quantile 0.5") and text.endswith("20 observations)")
