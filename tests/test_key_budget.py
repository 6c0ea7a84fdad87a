"""A key's token budget: reserve before, settle after, account for the usage."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from oswitch.core.bucket import TokenBucket
from oswitch.core.key_budget import KeyBudget, Reservation
from oswitch.core.ratelimit_headers import LimitWindow, ProviderLimits
from oswitch.core.target_health import RateLimit
from oswitch.core.tokens import TokenEstimate, Usage, cost_of

ESTIMATE = TokenEstimate(prompt_tokens=200, completion_tokens=300)


def usage(prompt: int, completion: int) -> Usage:
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, counted_tokens=prompt + completion
    )


def test_reserve_then_settle_refunds_the_unused_part() -> None:
    """The estimate is taken at reserve and the difference to the usage refunded."""
    budget = KeyBudget(tokens=RateLimit(rate_per_s=10.0, burst=1000), learn=True, now=0.0)
    reservation = budget.reserve(ESTIMATE, 0.0)
    assert reservation is not None and reservation.tokens == 500
    assert budget.snapshot(0.0).configured_available == 500
    settlement = budget.settle(reservation, usage(150, 50), 0.0, consumed=True)
    assert settlement.difference == -300
    assert budget.snapshot(0.0).configured_available == 800


def test_a_refusal_with_a_status_refunds_everything() -> None:
    """A reply the provider refused (no usage, not consumed) gives the whole reservation back."""
    budget = KeyBudget(tokens=RateLimit(rate_per_s=10.0, burst=1000), learn=True, now=0.0)
    reservation = budget.reserve(ESTIMATE, 0.0)
    assert reservation is not None
    assert budget.settle(reservation, None, 0.0, consumed=False).used == 0
    assert budget.snapshot(0.0).configured_available == 1000


def test_a_charge_past_the_budget_leaves_a_debt_to_wait_out() -> None:
    """Usage above the reservation is charged, into debt, and the next take waits."""
    budget = KeyBudget(tokens=RateLimit(rate_per_s=10.0, burst=1000), learn=True, now=0.0)
    reservation = budget.reserve(ESTIMATE, 0.0)
    assert reservation is not None
    budget.settle(reservation, usage(800, 900), 0.0, consumed=True)
    assert budget.snapshot(0.0).configured_available == -700
    assert budget.check(ESTIMATE, 0.0).ready_at == 120.0  # 1,200 short at 10 a second


def test_learned_limits_hold_reservations_and_turn_off() -> None:
    """A learned view counts what is reserved; with learning off it is never taken."""
    view = ProviderLimits(
        tokens=LimitWindow(limit=2000, remaining=900, reset_at=100.0),
        observed_at=0.0,
        dialect="plain",
    )
    budget = KeyBudget(tokens=None, learn=True, now=0.0)
    budget.learn(view)
    assert budget.reserve(ESTIMATE, 0.0) is not None
    assert budget.reserve(ESTIMATE, 0.0) is None  # 400 left after the first
    off = KeyBudget(tokens=None, learn=False, now=0.0)
    off.learn(view)
    assert not off.limited


def test_tokens_per_minute_counts_the_last_minute() -> None:
    """The listing's tokens per minute counts usage of the last 60 whole seconds."""
    budget = KeyBudget(tokens=None, learn=True, now=0.0)
    budget.count(usage(10, 5), 0.5)
    budget.count(usage(1, 1), 59.0)
    assert budget.tokens_per_minute(59.5) == 17
    assert budget.tokens_per_minute(60.0) == 2
    assert budget.snapshot(60.0).totals.prompt_tokens == 11


def test_cost_uses_both_prices() -> None:
    """Cost is prompt and completion tokens at their prices per million; none without prices."""
    assert cost_of(usage(1_000_000, 500_000), per_million_input=2.0, per_million_output=8.0) == 6.0
    assert cost_of(usage(5, 5), per_million_input=None, per_million_output=None) is None


def test_bucket_adjust_is_bounded() -> None:
    """A refund never fills a bucket past burst; a charge never sinks it below -burst."""
    bucket = TokenBucket(rate_per_s=1.0, burst=10.0, now=0.0)
    bucket.adjust(0.0, -50.0)
    assert bucket.available(0.0) == 10.0
    bucket.adjust(0.0, 100.0)
    assert bucket.available(0.0) == -10.0
    assert bucket.wait_time(0.0, 1.0) == 11.0


# ---- the kept verdict and the unlimited reserve are the slow path's answers ----------

_ESTIMATES = (
    ESTIMATE,
    TokenEstimate(prompt_tokens=10, completion_tokens=0),
    TokenEstimate(prompt_tokens=3000, completion_tokens=2500),
)

_window = st.builds(
    LimitWindow,
    limit=st.none() | st.integers(0, 6000),
    remaining=st.none() | st.integers(0, 6000),
    reset_at=st.none() | st.floats(0.0, 200.0),
)
_operation = st.one_of(
    st.tuples(st.just("check"), st.integers(0, 2), st.floats(0.0, 5.0)),
    st.tuples(st.just("reserve"), st.integers(0, 2), st.floats(0.0, 5.0)),
    st.tuples(st.just("settle"), st.integers(0, 5), st.booleans(), st.booleans()),
    st.tuples(st.just("learn"), _window, _window, st.sampled_from(("openai", "plain"))),
    st.tuples(st.just("reconfigure"), st.booleans(), st.booleans()),
)
_TOKENS = RateLimit(rate_per_s=50.0, burst=4000)


def _slow_reserve(budget: KeyBudget, estimate: TokenEstimate, now: float) -> object:
    """reserve() as it was before its kept verdict and its unlimited fast path."""
    if not budget.judge(estimate, now).can_take:
        return None
    taken = 0
    bucket = budget._bucket
    if bucket is not None:
        taken = min(estimate.total_tokens, math.floor(bucket.burst))
        bucket.try_take(now, taken)
    budget.learned.record_sent(estimate)
    budget.version += 1
    return Reservation(estimate=estimate, tokens=taken)


@given(
    configured=st.booleans(),
    operations=st.lists(_operation, max_size=30),
)
def test_kept_verdicts_and_the_unlimited_reserve_answer_as_the_slow_path(
    configured: bool, operations: list[tuple[object, ...]]
) -> None:
    """A budget that keeps its last verdict (and reserves without judging when nothing
    limits it) gives, after any sequence of reserves, settles, learned reports and
    reloads, the same verdicts and reservations as one judging afresh every time."""
    tokens = _TOKENS if configured else None
    fast = KeyBudget(tokens=tokens, learn=True, now=0.0)
    slow = KeyBudget(tokens=tokens, learn=True, now=0.0)
    now = 0.0
    reservations: list[tuple[Reservation, Reservation]] = []
    for operation in operations:
        kind = operation[0]
        if kind in ("check", "reserve"):
            estimate = _ESTIMATES[operation[1]]  # type: ignore[index]
            now += operation[2]  # type: ignore[operator]
            if kind == "check":
                assert fast.check(estimate, now) == slow.judge(estimate, now)
                assert fast.check(estimate, now) == slow.judge(estimate, now)  # kept
            else:
                got, expected = fast.reserve(estimate, now), _slow_reserve(slow, estimate, now)
                assert got == expected
                if got is not None:
                    assert isinstance(expected, Reservation)
                    reservations.append((got, expected))
        elif kind == "settle" and reservations:
            index, consumed, sent = operation[1:]
            got, expected = reservations.pop(index % len(reservations))  # type: ignore[operator]
            spent = usage(5, 7)
            assert fast.settle(got, spent, now, consumed=bool(consumed), sent=bool(sent)) == (
                slow.settle(expected, spent, now, consumed=bool(consumed), sent=bool(sent))
            )
        elif kind == "learn":
            requests, window, dialect = operation[1:]
            limits = ProviderLimits(
                requests=requests,  # type: ignore[arg-type]
                tokens=window,  # type: ignore[arg-type]
                observed_at=now,
                dialect=dialect,  # type: ignore[arg-type]
            )
            fast.learn(limits)
            slow.learn(limits)
        elif kind == "reconfigure":
            bucket, learn = operation[1:]
            setting = _TOKENS if bucket else None
            fast.reconfigure(tokens=setting, learn=bool(learn), now=now)
            slow.reconfigure(tokens=setting, learn=bool(learn), now=now)
        # The last estimate asked about first: its verdict was kept before this step.
        for estimate in (*reversed(_ESTIMATES), *_ESTIMATES):
            assert fast.check(estimate, now) == slow.judge(estimate, now)
