"""The ``store`` section and the token budget keys: defaults, path-named errors, and
a store URL (which may hold a password) that is never echoed."""

from __future__ import annotations

from typing import Any

import pytest

from oswitch import ConfigError, parse_config
from oswitch.config import StoreConfig, validate_config
from oswitch.core.secret import Secret
from support import config, target

TARGET = {
    "target_id": "a",
    "provider_id": "openai",
    "api_key": "sk-test-0000000000",
    "model": "m",
}


def _problems(store: Any) -> tuple[tuple[str, str], ...]:
    with pytest.raises(ConfigError) as raised:
        parse_config({"targets": [TARGET], "store": store})
    return tuple(raised.value.problems)


def test_store_defaults() -> None:
    """A store needs only its URL; the rest defaults to 50 ms, local, one replica."""
    parsed = parse_config({"targets": [TARGET], "store": {"url": "redis://127.0.0.1:6379"}})
    assert parsed.store == StoreConfig(url=Secret("redis://127.0.0.1:6379"))
    assert (parsed.store.timeout_ms, parsed.store.on_store_error) == (50.0, "local")
    assert (parsed.store.key_prefix, parsed.store.expected_replicas) == ("osw", 1)
    assert parse_config({"targets": [TARGET]}).store is None


def test_store_errors_are_named_by_path() -> None:
    """Each bad store key is reported at its path, with exact reasons."""
    assert _problems({}) == (("$.store", "give exactly one of url, url_env"),)
    assert _problems({"url": "redis://x", "url_env": "STORE"}) == (
        ("$.store", "give exactly one of url, url_env"),
    )
    assert _problems(
        {
            "url": "redis://x",
            "key_prefix": "a{b",
            "timeout_ms": 0,
            "on_store_error": "maybe",
            "expected_replicas": 0,
        }
    ) == (
        ("$.store.key_prefix", 'must be non-empty, without braces or whitespace (got "a{b")'),
        ("$.store.timeout_ms", "must be > 0 (got 0)"),
        ("$.store.on_store_error", 'must be one of local, open, closed (got "maybe")'),
        ("$.store.expected_replicas", "must be >= 1 (got 0)"),
    )
    assert _problems({"url_env": "not a name"}) == (
        (
            "$.store.url_env",
            "must be the name of an environment variable, like OPENAI_API_KEY",
        ),
    )


def test_a_store_url_is_a_secret_and_never_echoed() -> None:
    """A wrong URL is named by its scheme only; a right one is kept redacted."""
    problems = _problems({"url": "http://user:hunter2@cache:6379"})
    assert problems == (("$.store.url", "must be a redis://, rediss:// or unix:// URL"),)
    assert "hunter2" not in repr(problems)
    parsed = parse_config({"targets": [TARGET], "store": {"url": "rediss://:hunter2@cache:1"}})
    assert parsed.store is not None and "hunter2" not in repr(parsed.store)


def test_token_budget_keys_and_their_default_burst() -> None:
    """tokens_per_minute is optional; its burst defaults to a minute's worth."""
    limited = dict(TARGET, rate_limit={"requests_per_minute": 60, "tokens_per_minute": 9000})
    limit = parse_config({"targets": [limited]}).targets[0].rate_limit
    assert limit is not None and (limit.tokens_per_minute, limit.burst_tokens) == (9000.0, 9000.0)
    bad = dict(TARGET, rate_limit={"requests_per_minute": 60, "tokens_per_minute": 0})
    with pytest.raises(ConfigError) as raised:
        parse_config({"targets": [bad]})
    assert raised.value.problems == (
        ("$.targets[0].rate_limit.tokens_per_minute", "must be > 0 (got 0)"),
    )


def test_a_store_built_in_code_validates() -> None:
    """validate_config takes a SwitcherConfig with a store built in code."""
    validate_config(config(target("a"), store=StoreConfig(url_env="OSWITCH_STORE_URL")))


def test_check_config_warns_of_a_fleet_sized_for_one() -> None:
    """A store with the default expected_replicas under local is warned about."""
    from oswitch.config.advice import advise

    warned = advise(config(target("a"), store=StoreConfig(url=Secret("redis://x"))))
    assert warned == [
        (
            ("store", "expected_replicas"),
            "is 1: while the store is unreachable every replica enforces each whole limit, "
            "so a fleet of N sends up to N times it; set it to the number of replicas",
        )
    ]
    sized = StoreConfig(url=Secret("redis://x"), expected_replicas=3)
    assert advise(config(target("a"), store=sized)) == []
