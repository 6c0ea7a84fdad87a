"""A key's learned limits: merged across replies that report only some of them, and
moved from the wall clock onto the engine's clock once, at the edge."""

from __future__ import annotations

from oswitch.core.headroom import headroom
from oswitch.core.learned_limits import LearnedLimits, merge_limits, on_engine_clock
from oswitch.core.ratelimit_headers import LimitWindow, ProviderLimits, parse_limits
from oswitch.core.tokens import TokenEstimate

WALL = 1_700_000_000.0
SMALL = TokenEstimate(prompt_tokens=100, completion_tokens=100)


def test_resets_move_onto_the_engine_clock() -> None:
    """An RFC 3339 reset read at a wall-clock moment lands as far ahead on the engine's
    clock, and the view is observed at the engine's reading."""
    parsed = parse_limits(
        {
            "anthropic-ratelimit-tokens-remaining": "10",
            "anthropic-ratelimit-tokens-reset": "2023-11-14T22:13:30Z",
        },
        now=WALL,
    )
    moved = on_engine_clock(parsed, wall_now=WALL, engine_now=5.0)
    assert moved.observed_at == 5.0
    assert moved.tokens.reset_at == 5.0 + (parsed.tokens.reset_at or 0.0) - WALL


def test_a_reply_with_only_some_headers_keeps_the_rest() -> None:
    """A field a reply leaves out is kept from the earlier view, less what was sent
    since; a field it reports replaces the old one."""
    old = ProviderLimits(
        requests=LimitWindow(limit=100, remaining=50, reset_at=30.0),
        tokens=LimitWindow(limit=10_000, remaining=8_000, reset_at=30.0),
        observed_at=0.0,
        dialect="openai",
    )
    new = ProviderLimits(tokens=LimitWindow(remaining=7_000), observed_at=1.0, dialect="openai")
    merged = merge_limits(old, new, sent_requests=3, sent_tokens=SMALL)
    assert merged.requests == LimitWindow(limit=100, remaining=47, reset_at=30.0)
    assert merged.tokens == LimitWindow(limit=10_000, remaining=7_000, reset_at=30.0)
    assert merged.observed_at == 1.0


def test_a_window_past_its_reset_is_forgotten_but_its_limit_kept() -> None:
    """A kept window whose reset has passed by the new reply counts as refilled."""
    old = ProviderLimits(requests=LimitWindow(limit=100, remaining=0, reset_at=5.0))
    new = ProviderLimits(tokens=LimitWindow(remaining=1), observed_at=6.0, dialect="openai")
    assert merge_limits(old, new).requests == LimitWindow(limit=100)


def test_learned_limits_count_what_was_sent_since_the_view() -> None:
    """Attempts sent after a view was observed are taken off its remaining, and a
    new view starts the count afresh; a reply with no limits changes nothing."""
    learned = LearnedLimits()
    learned.record_sent(SMALL)  # nothing known yet: nothing to count against
    learned.observe(
        ProviderLimits(
            tokens=LimitWindow(limit=1000, remaining=300, reset_at=60.0),
            observed_at=0.0,
            dialect="openai",
        )
    )
    learned.record_sent(SMALL)
    assert (learned.sent_requests, learned.sent_tokens.total_tokens) == (1, 200)
    verdict = headroom(
        estimate=SMALL,
        now=0.0,
        learned=learned.view,
        sent_tokens=learned.sent_tokens,
        sent_requests=learned.sent_requests,
    )
    assert not verdict.can_take
    learned.observe(ProviderLimits(observed_at=1.0))
    assert learned.sent_requests == 1
    learned.observe(ProviderLimits(tokens=LimitWindow(remaining=900), observed_at=2.0))
    assert learned.sent_requests == 0
    assert learned.view is not None and learned.view.tokens.remaining == 900
    assert learned.continuous  # the dialect is kept from the first view


def test_continuous_refill_is_ready_before_the_reset() -> None:
    """For a provider that refills continuously, a short window is ready once enough
    has refilled at the rate from remaining to limit by the reset."""
    view = ProviderLimits(
        tokens=LimitWindow(limit=1000, remaining=0, reset_at=60.0), observed_at=0.0
    )
    fixed = headroom(estimate=SMALL, now=0.0, learned=view)
    refilling = headroom(estimate=SMALL, now=0.0, learned=view, continuous=True)
    assert fixed.ready_at == 60.0
    assert refilling.ready_at == 200 / (1000 / 60)
    assert headroom(estimate=SMALL, now=12.0, learned=view, continuous=True).can_take
