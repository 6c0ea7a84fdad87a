"""``oswitch ctl list-targets`` shows tokens per minute, headroom and cost."""

from __future__ import annotations

from oswitch.control.ctl import format_targets

BASE = {
    "target_id": "a",
    "state": "Active",
    "condition": "Healthy",
    "breaker_state": "Closed",
    "health": 1.0,
    "in_flight": 0,
    "concurrency_limit": 10,
    "cooldown_remaining_s": None,
}


def test_listing_shows_reported_headroom_and_cost() -> None:
    """A target with reported limits and prices gets TOKENS/MIN, HEADROOM and COST."""
    view = {
        **BASE,
        "tokens_per_minute": 1200,
        "cost": 0.25,
        "token_budget_available": None,
        "provider_limits": {
            "tokens": {"limit": 10000, "remaining": 900, "reset_in_s": 1.0},
            "requests": {"limit": 100, "remaining": 5, "reset_in_s": 1.0},
        },
    }
    header, row = format_targets([view])
    assert header.split() == [
        "TARGET", "STATE", "CONDITION", "BREAKER", "HEALTH", "IN-FLIGHT", "COOLDOWN",
        "ATTEMPTS", "OK", "LATENCY", "LAST-ERROR", "TOKENS/MIN", "HEADROOM", "COST",
    ]  # fmt: skip
    assert row.split()[11:] == ["1200", "tok", "900/10000", "req", "5/100", "0.2500"]


def test_listing_shows_a_configured_budget_and_hides_tokens_when_nothing_is_known() -> None:
    """A configured token budget shows as what is left of it; with no target limited by
    tokens the table keeps its usual columns unless --tokens asks for them."""
    budget = {**BASE, "tokens_per_minute": 6, "token_budget_available": 594.4}
    assert format_targets([budget])[1].split()[11:] == ["6", "budget", "594"]
    plain = {**BASE, "tokens_per_minute": 6, "token_budget_available": None}
    assert "TOKENS/MIN" not in format_targets([plain])[0]
    assert format_targets([plain], tokens=True)[1].split()[11:] == ["6", "-"]
