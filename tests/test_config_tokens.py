"""The token keys of the config: rate_limit's token budget, prices, stream usage,
header learning; each checked with a path-named message."""

from __future__ import annotations

import pytest

from oswitch import ConfigError, parse_config
from oswitch.config import RateLimitConfig


def one(**fields: object) -> dict[str, object]:
    return {"targets": [{"target_id": "a", "provider_id": "openai", "model": "m", **fields}]}


def problems(section: dict[str, object]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(section)
    return list(caught.value.problems)


def test_token_budget_alone_and_its_default_burst() -> None:
    """tokens_per_minute may stand alone; burst_tokens defaults to the whole minute."""
    config = parse_config(one(rate_limit={"tokens_per_minute": 1500.5}))
    assert config.targets[0].rate_limit == RateLimitConfig(
        tokens_per_minute=1500.5, burst_tokens=1501
    )
    assert config.learn_rate_limits is True


def test_token_keys_are_checked() -> None:
    """Each new key enforces its range, and a burst without its rate is refused."""
    assert problems(one(rate_limit={"tokens_per_minute": 0})) == [
        ("$.targets[0].rate_limit.tokens_per_minute", "must be > 0 (got 0)")
    ]
    assert problems(one(rate_limit={"requests_per_minute": 5, "burst_tokens": 10})) == [
        ("$.targets[0].rate_limit.burst_tokens", "has no effect without tokens_per_minute")
    ]
    assert problems(one(price_per_million_input=-1)) == [
        ("$.targets[0].price_per_million_input", "must be >= 0 (got -1)")
    ]
    assert problems({**one(), "learn_rate_limits": "yes"})[0][0] == "$.learn_rate_limits"


def test_prices_and_stream_usage_are_read() -> None:
    """Prices and stream_usage land on the target."""
    target = parse_config(
        one(price_per_million_input=2.5, price_per_million_output=10, stream_usage=False)
    ).targets[0]
    assert (target.price_per_million_input, target.price_per_million_output) == (2.5, 10.0)
    assert target.stream_usage is False
