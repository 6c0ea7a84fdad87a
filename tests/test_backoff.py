"""Backoff delays and the choice between backoff and a provider's delay."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oswitch.core.backoff import BackoffSettings, RetryDelay, backoff_delay, retry_delay

NO_JITTER = BackoffSettings(jitter="none")


def test_defaults_match_o_switcher() -> None:
    """Defaults are 1 s base, ×2, 30 s cap, full jitter."""
    assert BackoffSettings() == BackoffSettings(
        base_s=1.0, multiplier=2.0, max_s=30.0, jitter="full"
    )


def test_cap_doubles_up_to_max() -> None:
    """Without jitter the delay is base * multiplier ** attempt, capped at max_s."""
    rng = random.Random(0)
    delays = [backoff_delay(NO_JITTER, attempt, rng) for attempt in range(7)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


@pytest.mark.parametrize("attempt", [1_000, 10**6, 10**18])
def test_huge_attempts_do_not_overflow(attempt: int) -> None:
    """A huge attempt number gives max_s rather than an OverflowError."""
    assert backoff_delay(NO_JITTER, attempt, random.Random(0)) == 30.0


def test_zero_base_means_no_delay_even_for_huge_attempts() -> None:
    """base_s = 0 gives 0 for any attempt (no 0 × inf = NaN)."""
    settings = BackoffSettings(base_s=0.0, jitter="none")
    assert backoff_delay(settings, 10**6, random.Random(0)) == 0.0


def test_negative_attempt_raises() -> None:
    """A negative attempt number is a caller bug and raises ValueError."""
    with pytest.raises(ValueError, match="attempt must be >= 0"):
        backoff_delay(BackoffSettings(), -1, random.Random(0))
    with pytest.raises(ValueError, match="attempt must be >= 0"):
        retry_delay(BackoffSettings(), -1, random.Random(0), provider_delay=1.0, quota_cap_s=9.0)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"base_s": -1.0}, "base_s"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"max_s": float("inf")}, "max_s"),
        ({"jitter": "some"}, "jitter"),
    ],
)
def test_bad_settings_raise(kwargs: dict[str, object], field: str) -> None:
    """Out-of-range settings raise ValueError naming the field."""
    with pytest.raises(ValueError, match=field):
        BackoffSettings(**kwargs)  # type: ignore[arg-type]


@given(attempt=st.integers(0, 200), seed=st.integers(0, 2**32))
def test_full_jitter_is_within_zero_and_cap(attempt: int, seed: int) -> None:
    """Full jitter draws from [0, cap]."""
    cap = backoff_delay(NO_JITTER, attempt, random.Random(0))
    delay = backoff_delay(BackoffSettings(jitter="full"), attempt, random.Random(seed))
    assert 0.0 <= delay <= cap


@given(attempt=st.integers(0, 200), seed=st.integers(0, 2**32))
def test_equal_jitter_is_within_half_cap_and_cap(attempt: int, seed: int) -> None:
    """Equal jitter draws from [cap/2, cap]."""
    cap = backoff_delay(NO_JITTER, attempt, random.Random(0))
    delay = backoff_delay(BackoffSettings(jitter="equal"), attempt, random.Random(seed))
    assert cap / 2 <= delay <= cap


def test_full_jitter_spreads_over_the_whole_range() -> None:
    """Full jitter uses the whole [0, cap] range, with a mean near cap/2."""
    rng = random.Random(1)
    delays = [backoff_delay(BackoffSettings(), 3, rng) for _ in range(2000)]
    assert min(delays) < 0.5
    assert max(delays) > 7.5
    assert 3.6 < sum(delays) / len(delays) < 4.4


def test_same_seed_same_delays() -> None:
    """Delays depend only on the injected rng, so a seed reproduces them."""
    first = [backoff_delay(BackoffSettings(), a, random.Random(7)) for a in range(5)]
    again = [backoff_delay(BackoffSettings(), a, random.Random(7)) for a in range(5)]
    assert first == again


def test_provider_delay_wins_exactly() -> None:
    """A provider delay is used as is, with no jitter, and no random draw."""
    rng = random.Random(3)
    state = rng.getstate()
    delay = retry_delay(BackoffSettings(), 5, rng, provider_delay=0.644, quota_cap_s=3600.0)
    assert delay == RetryDelay(wait_s=0.644, from_provider=True, quota_exhausted=False)
    assert rng.getstate() == state


def test_without_provider_delay_backoff_is_used() -> None:
    """No provider delay means the backoff delay for that attempt."""
    delay = retry_delay(NO_JITTER, 2, random.Random(0), provider_delay=None, quota_cap_s=3600.0)
    assert delay == RetryDelay(wait_s=4.0, from_provider=False, quota_exhausted=False)


def test_nan_provider_delay_counts_as_none() -> None:
    """A NaN provider delay is ignored in favour of backoff."""
    delay = retry_delay(NO_JITTER, 0, random.Random(0), provider_delay=float("nan"), quota_cap_s=1)
    assert delay == RetryDelay(wait_s=1.0, from_provider=False, quota_exhausted=False)


@pytest.mark.parametrize("provider_delay", [3600.0, 86400.0, float("inf")])
def test_delay_at_or_past_the_cap_is_quota_exhausted(provider_delay: float) -> None:
    """A provider delay at or beyond quota_cap_s marks the quota exhausted, not a pause."""
    delay = retry_delay(
        BackoffSettings(), 0, random.Random(0), provider_delay=provider_delay, quota_cap_s=3600.0
    )
    assert delay == RetryDelay(wait_s=provider_delay, from_provider=True, quota_exhausted=True)


def test_negative_provider_delay_is_no_wait() -> None:
    """A provider delay in the past (e.g. an old HTTP date) means retry now."""
    delay = retry_delay(BackoffSettings(), 0, random.Random(0), provider_delay=-2.0, quota_cap_s=60)
    assert delay == RetryDelay(wait_s=0.0, from_provider=True, quota_exhausted=False)
