"""Health tracking, the score formula, and ranking candidates into a plan."""

from __future__ import annotations

import collections
import random

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oswitch.core.scoring import (
    Candidate,
    HealthStatistics,
    HealthTracker,
    Weights,
    choose,
    rank,
    score,
)

W = Weights()


def cand(
    target_id: str,
    *,
    tier: int = 0,
    health: float = 1.0,
    latency_s: float | None = 1.0,
    failure_rate: float = 0.0,
    in_flight: int = 0,
) -> Candidate:
    """A candidate with good defaults; priority mirrors tier as the runtime does."""
    return Candidate(
        target_id=target_id,
        tier=tier,
        health=health,
        latency_s=latency_s,
        failure_rate=failure_rate,
        priority=float(tier),
        in_flight=in_flight,
    )


def ids(plan: list[Candidate]) -> list[str]:
    return [c.target_id for c in plan]


def plan_of(candidates: list[Candidate], seed: int = 0, **kwargs: float) -> list[str]:
    return ids(rank(candidates, W, max_expected_latency_s=30.0, rng=random.Random(seed), **kwargs))


# --- HealthTracker ---------------------------------------------------------------------


def test_tracker_starts_healthy_and_unmeasured() -> None:
    """A new tracker has health 1.0, no latency and a 0.0 failure rate."""
    tracker = HealthTracker()
    assert tracker.statistics() == HealthStatistics(
        health=1.0, latency_s=None, failure_rate=0.0, successes=0, failures=0, window_outcomes=0
    )


def test_health_is_an_ewma_of_outcomes() -> None:
    """Each outcome moves health by alpha towards 1 (success) or 0 (failure)."""
    tracker = HealthTracker(alpha=0.5)
    tracker.record_failure()
    assert tracker.health == 0.5
    tracker.record_failure()
    assert tracker.health == 0.25
    tracker.record_success(1.0)
    assert tracker.health == 0.625


def test_latency_starts_at_the_first_sample_then_averages() -> None:
    """The first latency is taken as is; later ones move it by alpha."""
    tracker = HealthTracker(alpha=0.25)
    tracker.record_success(2.0)
    assert tracker.latency_s == 2.0
    tracker.record_success(6.0)
    assert tracker.latency_s == 3.0
    tracker.record_failure()
    assert tracker.latency_s == 3.0


def test_failure_rate_counts_the_last_window_only() -> None:
    """failure_rate is failures among the last `window` outcomes."""
    tracker = HealthTracker(window=4)
    for _ in range(4):
        tracker.record_failure()
    assert tracker.failure_rate == 1.0
    for _ in range(3):
        tracker.record_success(0.1)
    assert tracker.failure_rate == 0.25
    stats = tracker.statistics()
    assert (stats.successes, stats.failures, stats.window_outcomes) == (3, 4, 4)


def test_tracker_rejects_non_finite_latency() -> None:
    """A NaN or infinite latency raises ValueError and records nothing."""
    tracker = HealthTracker()
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="latency_s must be finite"):
            tracker.record_success(bad)
    assert tracker.statistics().successes == 0


def test_negative_latency_counts_as_zero() -> None:
    """A negative latency (clock oddity) is recorded as 0."""
    tracker = HealthTracker()
    tracker.record_success(-1.0)
    assert tracker.latency_s == 0.0


@pytest.mark.parametrize("kwargs", [{"alpha": 0.0}, {"alpha": 1.5}, {"window": 0}])
def test_tracker_settings_validated(kwargs: dict[str, float]) -> None:
    """Alpha outside (0, 1] or a window below 1 raises ValueError."""
    with pytest.raises(ValueError, match="must be"):
        HealthTracker(**kwargs)  # type: ignore[arg-type]


@given(st.lists(st.one_of(st.none(), st.floats(0.0, 100.0)), max_size=60))
def test_tracker_values_stay_in_range(outcomes: list[float | None]) -> None:
    """Health and failure rate stay in [0, 1], whatever the outcomes."""
    tracker = HealthTracker(alpha=0.3, window=7)
    for outcome in outcomes:
        if outcome is None:
            tracker.record_failure()
        else:
            tracker.record_success(outcome)
        assert 0.0 <= tracker.health <= 1.0
        assert 0.0 <= tracker.failure_rate <= 1.0


# --- score -----------------------------------------------------------------------------


def test_score_formula() -> None:
    """score = wh*health + wl*(1 - min(lat/max, 1)) - wf*failure + wp*priority_norm."""
    candidate = cand("a", health=0.8, latency_s=15.0, failure_rate=0.25)
    value = score(candidate, W, max_expected_latency_s=30.0, priority_norm=1.0)
    assert value == pytest.approx(1.0 * 0.8 + 0.5 * 0.5 - 0.8 * 0.25 + 0.3 * 1.0)


def test_latency_penalty_is_capped() -> None:
    """Latency beyond max_expected costs the whole latency weight, no more."""
    slow = score(cand("a", latency_s=300.0), W, max_expected_latency_s=30.0)
    at_max = score(cand("a", latency_s=30.0), W, max_expected_latency_s=30.0)
    assert slow == at_max == pytest.approx(1.0)


def test_unknown_latency_is_optimistic() -> None:
    """A target with no latency yet scores as if it answered instantly."""
    new = score(cand("a", latency_s=None), W, max_expected_latency_s=30.0)
    instant = score(cand("a", latency_s=0.0), W, max_expected_latency_s=30.0)
    assert new == instant == pytest.approx(1.5)


def test_score_rejects_non_positive_max_latency() -> None:
    """max_expected_latency_s must be > 0."""
    with pytest.raises(ValueError, match="max_expected_latency_s must be > 0"):
        score(cand("a"), W, max_expected_latency_s=0.0)


# --- rank ------------------------------------------------------------------------------


def test_higher_tier_first_whatever_the_score() -> None:
    """A healthy-looking backup never outranks a poorer primary."""
    primary = cand("primary", tier=1, health=0.3, failure_rate=0.5, latency_s=29.0)
    backup = cand("backup", tier=0)
    assert plan_of([backup, primary]) == ["primary", "backup"]


def test_within_a_tier_score_decides() -> None:
    """Within one tier the better score goes first."""
    plan = plan_of([cand("sick", health=0.2), cand("well", health=1.0), cand("mid", health=0.6)])
    assert plan == ["well", "mid", "sick"]


def test_weights_change_the_order() -> None:
    """With latency weighted heavily, a fast target beats a healthier slow one."""
    fast = cand("fast", health=0.6, latency_s=1.0)
    slow = cand("slow", health=1.0, latency_s=20.0)
    default = ids(rank([fast, slow], W, max_expected_latency_s=30.0, rng=random.Random(0)))
    latency_first = Weights(health=1.0, latency=5.0, failure=0.8, priority=0.3)
    tuned = ids(
        rank([fast, slow], latency_first, max_expected_latency_s=30.0, rng=random.Random(0))
    )
    assert default == ["slow", "fast"]
    assert tuned == ["fast", "slow"]


def test_failure_weight_penalises_recent_failures() -> None:
    """The failure term pushes a target with recent failures behind an equal one without."""
    assert plan_of([cand("flaky", failure_rate=0.5), cand("steady")]) == ["steady", "flaky"]


def test_priority_weight_orders_within_a_tier() -> None:
    """Priority, normalised over the set, breaks ties between targets of one tier."""
    low = attrs.evolve(cand("low"), priority=0.0)
    high = attrs.evolve(cand("high"), priority=2.0)
    assert plan_of([low, high]) == ["high", "low"]


def test_fewest_in_flight_first_among_equals() -> None:
    """Among equally good targets the least loaded goes first, every time."""
    busy, idle, mid = cand("busy", in_flight=5), cand("idle"), cand("mid", in_flight=2)
    for seed in range(50):
        assert plan_of([busy, idle, mid], seed=seed) == ["idle", "mid", "busy"]


def test_equal_candidates_share_first_place() -> None:
    """Over 1000 plans, each of three equal keys goes first roughly a third of the time."""
    keys = [cand(f"key{i}") for i in range(3)]
    rng = random.Random(42)
    firsts = collections.Counter(
        rank(keys, W, max_expected_latency_s=30.0, rng=rng)[0].target_id for _ in range(1000)
    )
    assert set(firsts) == {"key0", "key1", "key2"}
    assert all(270 <= n <= 400 for n in firsts.values()), firsts


def test_noise_within_margin_does_not_pin_one_key() -> None:
    """Keys whose scores differ by less than the margin all get to go first."""
    keys = [
        cand("a", health=1.0),
        cand("b", health=0.98),
        cand("c", latency_s=1.5),
    ]
    rng = random.Random(5)
    firsts = collections.Counter(
        rank(keys, W, max_expected_latency_s=30.0, rng=rng)[0].target_id for _ in range(600)
    )
    assert all(firsts[k] >= 120 for k in "abc"), firsts


def test_beyond_the_margin_the_better_wins() -> None:
    """A score more than the margin better always goes first, even with more in flight."""
    better = cand("better", health=1.0, in_flight=3)
    worse = cand("worse", health=0.9)
    for seed in range(50):
        assert plan_of([worse, better], seed=seed) == ["better", "worse"]


def test_band_is_measured_from_the_best_remaining() -> None:
    """A chain of small gaps does not merge into one band: each band is margin-wide."""
    a, b, c = cand("a", health=1.0), cand("b", health=0.96), cand("c", health=0.92)
    plans = {tuple(plan_of([a, b, c], seed=s, margin=0.05)) for s in range(50)}
    assert plans == {("a", "b", "c"), ("b", "a", "c")}


def test_zero_margin_is_strict_order_with_ties_shared() -> None:
    """With margin 0 only exact ties are shuffled."""
    plans = {
        tuple(plan_of([cand("a"), cand("b"), cand("c", health=0.5)], s, margin=0.0))
        for s in range(50)
    }
    assert plans == {("a", "b", "c"), ("b", "a", "c")}


def test_rank_of_nothing_is_empty() -> None:
    """No candidates, no plan."""
    assert plan_of([]) == []


def test_rank_validates_its_options() -> None:
    """A negative margin or a non-positive max latency raises ValueError."""
    with pytest.raises(ValueError, match="margin"):
        rank([cand("a")], W, max_expected_latency_s=30.0, rng=random.Random(0), margin=-0.1)
    with pytest.raises(ValueError, match="max_expected_latency_s"):
        rank([cand("a")], W, max_expected_latency_s=-1.0, rng=random.Random(0))


candidates = st.lists(
    st.builds(
        Candidate,
        target_id=st.uuids().map(str),
        tier=st.integers(0, 3),
        health=st.floats(0.0, 1.0),
        latency_s=st.one_of(st.none(), st.floats(0.0, 100.0)),
        failure_rate=st.floats(0.0, 1.0),
        priority=st.floats(0.0, 3.0),
        in_flight=st.integers(0, 5),
    ),
    max_size=30,
)


@given(candidates, st.integers(0, 2**32), st.floats(0.0, 0.5))
def test_plan_is_a_tier_ordered_permutation(
    pool: list[Candidate], seed: int, margin: float
) -> None:
    """The plan holds every candidate exactly once, with tiers in descending order."""
    plan = rank(pool, W, max_expected_latency_s=30.0, rng=random.Random(seed), margin=margin)
    assert sorted(map(id, plan)) == sorted(map(id, pool))
    tiers = [c.tier for c in plan]
    assert tiers == sorted(tiers, reverse=True)


@given(candidates, st.integers(0, 2**32))
def test_the_best_in_the_top_tier_is_near_the_front(pool: list[Candidate], seed: int) -> None:
    """The first candidate of the plan scores within margin of the best in the top tier."""
    if not pool:
        return
    margin = 0.05
    plan = rank(pool, W, max_expected_latency_s=30.0, rng=random.Random(seed), margin=margin)
    top = max(c.tier for c in pool)
    low = min(c.priority for c in pool)
    spread = max(c.priority for c in pool) - low

    def value(c: Candidate) -> float:
        norm = (c.priority - low) / spread if spread > 0 else 0.0
        return score(c, W, max_expected_latency_s=30.0, priority_norm=norm)

    best = max(value(c) for c in pool if c.tier == top)
    assert plan[0].tier == top
    assert value(plan[0]) >= best - margin


def test_old_outcomes_fade_with_the_half_life() -> None:
    """A failing record fades towards a clean one as time passes without news."""
    tracker = HealthTracker(alpha=0.5, forget_half_life_s=10.0)
    tracker.record_success(2.0, now=0.0)
    tracker.record_failure(now=0.0)
    tracker.record_failure(now=0.0)
    assert tracker.health_at(0.0) == 0.25
    assert tracker.failure_rate_at(0.0) == 2 / 3
    assert tracker.health_at(10.0) == 0.625  # half of what was lost comes back
    assert tracker.failure_rate_at(10.0) == 1 / 3
    assert tracker.latency_at(10.0) == 1.0
    assert tracker.health_at(1000.0) > 0.999


def test_fading_is_folded_in_before_a_new_outcome() -> None:
    """A new outcome after a quiet spell lands on the faded record, not the stale one."""
    tracker = HealthTracker(alpha=0.5, forget_half_life_s=10.0)
    tracker.record_failure(now=0.0)  # health 0.5
    tracker.record_success(1.0, now=10.0)  # faded to 0.75, then the success
    assert tracker.health == 0.875
    assert tracker.health_at(10.0) == 0.875


def test_choose_gives_a_slightly_worse_target_a_trickle_and_a_bad_one_none() -> None:
    """choose() mostly takes the band, sometimes a slightly worse target, never a bad one."""
    good = Candidate(
        target_id="good",
        tier=0,
        health=1.0,
        latency_s=None,
        failure_rate=0.0,
        priority=0.0,
        in_flight=0,
    )
    shaky = attrs.evolve(good, target_id="shaky", health=0.8, failure_rate=0.05)
    broken = attrs.evolve(good, target_id="broken", health=0.1, failure_rate=0.9)
    rng = random.Random(1)
    picks = collections.Counter(
        choose([good, shaky, broken], Weights(), max_expected_latency_s=30.0, rng=rng).target_id
        for _ in range(5000)
    )
    assert 0.15 < picks["shaky"] / 5000 < 0.30
    assert picks["broken"] == 0
    assert picks["good"] > picks["shaky"]


def test_choose_among_equals_is_rank_head() -> None:
    """With nothing outside the band, choose() is exactly the plan's head (least busy)."""
    a = Candidate(
        target_id="a",
        tier=0,
        health=1.0,
        latency_s=None,
        failure_rate=0.0,
        priority=0.0,
        in_flight=2,
    )
    b = attrs.evolve(a, target_id="b", in_flight=0)
    rng = random.Random(3)
    assert {
        choose([a, b], Weights(), max_expected_latency_s=30.0, rng=rng).target_id for _ in range(50)
    } == {"b"}
