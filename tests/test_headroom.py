"""Whether a key can take a request now: configured and learned limits, stricter wins."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from oswitch.core.bucket import TokenBucket
from oswitch.core.headroom import (
    MAX_LEARNED_HOLD_S,
    STALE_AFTER_S,
    ConfiguredBudget,
    ConfiguredLimits,
    Headroom,
    budget_of,
    headroom,
)
from oswitch.core.ratelimit_headers import LimitWindow, ProviderLimits, parse_limits
from oswitch.core.tokens import TokenEstimate

NOW = 1_700_000_000.0
SMALL = TokenEstimate(prompt_tokens=100, completion_tokens=100)


def _learned(**windows: LimitWindow) -> ProviderLimits:
    return ProviderLimits(observed_at=NOW, dialect="openai", **windows)  # type: ignore[arg-type]


def test_nothing_known_can_take() -> None:
    """With no configured and no learned limit the key can take anything at once."""
    assert headroom(estimate=SMALL, now=NOW) == Headroom(
        can_take=True, ready_at=NOW, too_large=False, binding=None, spare=1.0
    )


def test_learned_tokens_short_until_reset() -> None:
    """A key whose reported remaining tokens cannot cover the request is not ready until
    the reported reset, parsed from OpenAI-style headers."""
    learned = parse_limits(
        {
            "x-ratelimit-limit-tokens": "1000",
            "x-ratelimit-remaining-tokens": "150",
            "x-ratelimit-reset-tokens": "6m0s",
        },
        now=NOW,
    )
    verdict = headroom(estimate=SMALL, now=NOW + 1.0, learned=learned)
    assert verdict == Headroom(
        can_take=False,
        ready_at=NOW + 360.0,
        too_large=False,
        binding="learned.tokens",
        spare=0.0,
    )


def test_learned_window_past_its_reset_counts_as_refilled() -> None:
    """Once the reported reset has passed, the key is ready again without a new reply."""
    learned = _learned(tokens=LimitWindow(limit=1000, remaining=0, reset_at=NOW + 5.0))
    assert not headroom(estimate=SMALL, now=NOW + 4.0, learned=learned).can_take
    verdict = headroom(estimate=SMALL, now=NOW + 5.0, learned=learned)
    assert verdict.can_take
    assert verdict.spare == 0.8


def test_learned_remaining_without_reset_is_trusted_for_a_minute() -> None:
    """A remaining count with no reset time holds the key back for STALE_AFTER_S from
    when it was observed, never forever."""
    learned = _learned(requests=LimitWindow(remaining=0))
    verdict = headroom(estimate=SMALL, now=NOW + 10.0, learned=learned)
    assert verdict.ready_at == NOW + STALE_AFTER_S


def test_a_far_reset_holds_a_key_back_at_most_an_hour() -> None:
    """A reported reset days ahead (a daily window, or a reset read wrongly) holds the key
    back only MAX_LEARNED_HOLD_S after it was observed, so it is probed again."""
    learned = _learned(requests=LimitWindow(remaining=0, reset_at=NOW + 7 * 86_400.0))
    verdict = headroom(estimate=SMALL, now=NOW + 1.0, learned=learned)
    assert (verdict.can_take, verdict.ready_at) == (False, NOW + MAX_LEARNED_HOLD_S)
    assert headroom(estimate=SMALL, now=NOW + MAX_LEARNED_HOLD_S, learned=learned).can_take


def test_sent_since_the_view_is_taken_off_remaining() -> None:
    """Requests and tokens sent since the provider's view was observed count against
    its remaining, so in-flight attempts cannot overdraw a key."""
    learned = _learned(
        requests=LimitWindow(limit=10, remaining=3, reset_at=NOW + 2.0),
        tokens=LimitWindow(limit=10_000, remaining=5_000, reset_at=NOW + 2.0),
    )
    assert headroom(estimate=SMALL, now=NOW, learned=learned, sent_requests=2).can_take
    blocked = headroom(estimate=SMALL, now=NOW, learned=learned, sent_requests=3)
    assert (blocked.can_take, blocked.binding) == (False, "learned.requests")
    heavy = TokenEstimate(prompt_tokens=4_000, completion_tokens=801)
    spent = headroom(estimate=SMALL, now=NOW, learned=learned, sent_tokens=heavy)
    assert (spent.can_take, spent.binding) == (False, "learned.tokens")


def test_request_over_a_whole_limit_is_too_large() -> None:
    """A request bigger than a key's whole per-minute limit, configured or reported,
    is too large for that key: never ready, never to be sent there."""
    big = TokenEstimate(prompt_tokens=9_000, completion_tokens=2_000)
    learned = _learned(tokens=LimitWindow(limit=10_000, remaining=10_000))
    assert headroom(estimate=big, now=NOW, learned=learned) == Headroom(
        can_take=False, ready_at=None, too_large=True, binding="learned.tokens", spare=0.0
    )
    configured = ConfiguredLimits(
        tokens=ConfiguredBudget(capacity=10_000, available=10_000, refill_per_s=10_000 / 60)
    )
    verdict = headroom(estimate=big, now=NOW, configured=configured)
    assert (verdict.too_large, verdict.binding) == (True, "configured.tokens")


def test_anthropic_output_tokens_limit_counts_the_completion() -> None:
    """Anthropic's output-tokens window is checked against the completion reservation."""
    learned = _learned(output_tokens=LimitWindow(limit=16_000, remaining=50, reset_at=NOW + 3))
    verdict = headroom(estimate=SMALL, now=NOW, learned=learned)
    assert (verdict.ready_at, verdict.binding) == (NOW + 3, "learned.output_tokens")


def test_configured_bucket_ready_when_refilled() -> None:
    """A configured bucket short of the need is ready once it has refilled enough."""
    bucket = TokenBucket(rate_per_s=1.0, burst=2.0, now=0.0)
    bucket.try_take(0.0, 2.0)
    configured = ConfiguredLimits(requests=budget_of(bucket, 0.5))
    verdict = headroom(estimate=SMALL, now=NOW, configured=configured)
    assert (verdict.ready_at, verdict.binding) == (NOW + 0.5, "configured.requests")


def test_spare_prefers_the_key_with_more_headroom() -> None:
    """Of two keys that can both take the request, the one with more left reports the
    larger spare fraction."""
    roomy = _learned(tokens=LimitWindow(limit=10_000, remaining=9_000, reset_at=NOW + 30))
    tight = _learned(tokens=LimitWindow(limit=10_000, remaining=1_000, reset_at=NOW + 30))
    a = headroom(estimate=SMALL, now=NOW, learned=roomy)
    b = headroom(estimate=SMALL, now=NOW, learned=tight)
    assert a.can_take and b.can_take
    assert (a.spare, b.spare) == (0.88, 0.08)


_COUNTS = st.integers(0, 5_000)
_OFFSETS = st.floats(-100.0, 100.0, allow_nan=False)


@st.composite
def _windows(draw: st.DrawFn) -> LimitWindow:
    limit = draw(st.none() | _COUNTS)
    remaining = draw(st.none() | _COUNTS)
    offset = draw(st.none() | _OFFSETS)
    return LimitWindow(
        limit=limit, remaining=remaining, reset_at=None if offset is None else NOW + offset
    )


@st.composite
def _budgets(draw: st.DrawFn) -> ConfiguredBudget | None:
    if draw(st.booleans()):
        return None
    capacity = draw(st.floats(1.0, 5_000.0))
    return ConfiguredBudget(
        capacity=capacity,
        available=draw(st.floats(0.0, 1.0)) * capacity,
        refill_per_s=draw(st.floats(0.01, 1_000.0)),
    )


_ESTIMATES = st.builds(TokenEstimate, prompt_tokens=_COUNTS, completion_tokens=_COUNTS)


@given(
    estimate=_ESTIMATES,
    requests=_windows(),
    tokens=_windows(),
    inputs=_windows(),
    outputs=_windows(),
    configured_requests=_budgets(),
    configured_tokens=_budgets(),
    elapsed=st.floats(0.0, 120.0),
)
def test_the_stricter_always_wins(
    estimate: TokenEstimate,
    requests: LimitWindow,
    tokens: LimitWindow,
    inputs: LimitWindow,
    outputs: LimitWindow,
    configured_requests: ConfiguredBudget | None,
    configured_tokens: ConfiguredBudget | None,
    elapsed: float,
) -> None:
    """Combined, configured and learned limits give the later readiness of the two,
    too-large if either is, and the smaller spare."""
    now = NOW + elapsed
    learned = _learned(requests=requests, tokens=tokens, input_tokens=inputs, output_tokens=outputs)
    configured = ConfiguredLimits(requests=configured_requests, tokens=configured_tokens)
    both = headroom(estimate=estimate, now=now, learned=learned, configured=configured)
    only_learned = headroom(estimate=estimate, now=now, learned=learned)
    only_configured = headroom(estimate=estimate, now=now, configured=configured)
    assert both.can_take == (only_learned.can_take and only_configured.can_take)
    assert both.too_large == (only_learned.too_large or only_configured.too_large)
    if not both.too_large:
        assert only_learned.ready_at is not None and only_configured.ready_at is not None
        assert both.ready_at == max(only_learned.ready_at, only_configured.ready_at)
        assert both.spare == min(only_learned.spare, only_configured.spare)
        assert both.ready_at is not None and both.ready_at >= now
    else:
        assert both.ready_at is None


@given(
    estimate=_ESTIMATES,
    remaining=_COUNTS,
    sent=st.integers(0, 100),
    reset_in=st.floats(0.001, 600.0),
    dimension=st.sampled_from(["requests", "tokens", "input_tokens", "output_tokens"]),
)
def test_never_can_take_when_remaining_is_short(
    estimate: TokenEstimate, remaining: int, sent: int, reset_in: float, dimension: str
) -> None:
    """While a window's reset is ahead, a key whose remaining (less what was sent since)
    is below the need is never reported as able to take the request."""
    learned = _learned(**{dimension: LimitWindow(remaining=remaining, reset_at=NOW + reset_in)})
    need = {
        "requests": 1,
        "tokens": estimate.total_tokens,
        "input_tokens": estimate.prompt_tokens,
        "output_tokens": estimate.completion_tokens,
    }[dimension]
    sent_estimate = TokenEstimate(prompt_tokens=sent, completion_tokens=0)
    verdict = headroom(
        estimate=estimate,
        now=NOW,
        learned=learned,
        sent_requests=sent,
        sent_tokens=sent_estimate,
    )
    sent_need = {
        "requests": sent,
        "tokens": sent,
        "input_tokens": sent,
        "output_tokens": 0,
    }[dimension]
    if remaining - sent_need < need:
        assert not verdict.can_take
        assert verdict.ready_at == NOW + reset_in
    else:
        assert verdict.can_take
