"""Config loading: schema, defaults, resolution rules and path-precise problems."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oswitch.config import (
    AuditConfig,
    BackoffConfig,
    CircuitBreakerConfig,
    ControlConfig,
    OtelConfig,
    RateLimitConfig,
    RoutingWeights,
    ServerConfig,
    StoreConfig,
    SwitcherConfig,
    TargetConfig,
    describe_target,
    describe_targets,
    load_config,
    parse_config,
    validate_config,
)
from oswitch.core.secret import Secret
from oswitch.errors import ConfigError
from oswitch.known_providers import KNOWN_PROVIDERS

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FAKE_KEY = "sk-test-OSWITCH-FAKE-KEY-7f3a9c"


def target(**fields: Any) -> dict[str, Any]:
    return {"target_id": "t", "provider_id": "openai", **fields}


def one_target(**fields: Any) -> dict[str, Any]:
    return {"targets": [target(**fields)]}


def problems_of(mapping: Any) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(mapping)
    return list(info.value.problems)


def problem_of(mapping: Any) -> tuple[str, str]:
    problems = problems_of(mapping)
    assert len(problems) == 1, problems
    return problems[0]


# --- defaults -------------------------------------------------------------------------


def test_minimal_config_gets_every_documented_default() -> None:
    """A config with one bare target resolves to o-switcher's defaults everywhere."""
    config = parse_config({"targets": [{"target_id": "a", "provider_id": "openai"}]})
    assert config.retry_budget == 3
    assert config.failover_budget == 2
    assert config.backoff == BackoffConfig(
        base_ms=1000.0, multiplier=2.0, max_ms=30000.0, jitter="full"
    )
    assert config.routing_weights == RoutingWeights(
        health=1.0, latency=0.5, failure=0.8, priority=0.3
    )
    assert config.circuit_breaker == CircuitBreakerConfig(
        failure_threshold=5,
        failure_rate_threshold=0.5,
        sliding_window_size=10,
        half_open_after_ms=30000.0,
        half_open_max_probes=1,
        success_threshold=2,
    )
    assert (config.queue_limit, config.concurrency_limit, config.backpressure_threshold) == (
        100,
        10,
        50,
    )
    assert config.max_expected_latency_ms == 30000.0
    assert config.deployment_mode_hint == "auto"
    assert config.request_timeout_ms == 120000.0
    assert config.first_token_timeout_ms is None
    assert config.stream_idle_timeout_ms is None  # learned (issue 13)
    assert config.max_wait_ms == 10000.0
    assert config.quota_cooldown_ms == 3_600_000.0
    assert config.quota_delay_cap_ms == 3_600_000.0
    assert config.hedge_after_ms is None
    assert config.fallbacks == {}
    assert config.stream_resume == "continue"
    assert config.trace_capacity == 1000
    assert config.server == ServerConfig()
    assert config.control == ControlConfig()
    assert config.targets == (
        TargetConfig(
            target_id="a",
            provider_id="openai",
            api="openai",
            base_url="https://api.openai.com/v1",
            api_key_env="OPENAI_API_KEY",
            serves=("*",),
        ),
    )


def test_plugin_full_example_validates_as_written() -> None:
    """o-switcher's full example (targets without api/base_url/model) loads unchanged."""
    config = load_config(EXAMPLES / "o-switcher-full.json")
    primary, backup = config.targets
    assert (primary.target_id, primary.api, primary.base_url, primary.api_key_env) == (
        "anthropic-primary",
        "anthropic",
        "https://api.anthropic.com/v1",
        "ANTHROPIC_API_KEY",
    )
    assert primary.capabilities == ("chat", "tools", "vision")
    assert primary.policy_tags == ("primary",)
    assert primary.operator_priority == 1
    assert primary.circuit_breaker == CircuitBreakerConfig()
    assert backup.circuit_breaker == CircuitBreakerConfig(
        failure_threshold=3, half_open_after_ms=60000.0
    )
    assert backup.concurrency_limit == 5
    assert config.deployment_mode_hint == "auto"


def test_toml_and_json_spellings_load_the_same_config(tmp_path: Path) -> None:
    """The same document loads identically from TOML and from JSON."""
    toml_config = load_config(EXAMPLES / "oswitch.toml")
    import tomllib

    document = tomllib.loads((EXAMPLES / "oswitch.toml").read_text())
    json_path = tmp_path / "oswitch.json"
    json_path.write_text(json.dumps(document))
    assert load_config(json_path) == toml_config
    assert [t.target_id for t in toml_config.targets] == [
        "openai-direct",
        "openrouter-backup",
        "anthropic-haiku",
    ]
    assert toml_config.fallbacks == {"gpt-4.1-mini": ("claude-3-5-haiku-latest",)}
    assert toml_config.targets[0].rate_limit == RateLimitConfig(requests_per_minute=500.0, burst=9)
    assert toml_config.targets[1].serves == ("gpt-4.1-mini",)
    assert toml_config.targets[2].circuit_breaker == CircuitBreakerConfig(
        failure_threshold=3, half_open_after_ms=60000.0
    )


def test_every_field_is_parsed_from_its_snake_case_name() -> None:
    """Each key of every section lands in the field of the same name."""
    config = parse_config(
        {
            "targets": [
                {
                    "target_id": "x",
                    "provider_id": "custom",
                    "api": "anthropic",
                    "base_url": "https://llm.internal.example/v1",
                    "api_key_env": "CUSTOM_KEY",
                    "model": "m1",
                    "serves": ["m1", "alias"],
                    "capabilities": ["chat"],
                    "enabled": False,
                    "operator_priority": -1,
                    "policy_tags": ["eu"],
                    "concurrency_limit": 3,
                    "circuit_breaker": {"failure_threshold": 2},
                    "rate_limit": {"requests_per_minute": 30, "burst": 4},
                    "first_token_timeout_ms": 5000,
                    "stream_idle_timeout_ms": 7000,
                    "context_window": 8192,
                }
            ],
            "retry_budget": 0,
            "failover_budget": 5,
            "backoff": {"base_ms": 0, "multiplier": 1, "max_ms": 10, "jitter": "equal"},
            "routing_weights": {"health": 2, "latency": 0, "failure": 1, "priority": 0.1},
            "queue_limit": 7,
            "concurrency_limit": 3,
            "backpressure_threshold": 7,
            "circuit_breaker": {"success_threshold": 1},
            "max_expected_latency_ms": 1500,
            "deployment_mode_hint": "sdk-control",
            "request_timeout_ms": 9000,
            "first_token_timeout_ms": 800,
            "stream_idle_timeout_ms": 900,
            "max_wait_ms": 0,
            "quota_cooldown_ms": 60000,
            "quota_delay_cap_ms": 120000,
            "hedge_after_ms": 2500,
            "fallbacks": {"m1": ["m2", "m3"], "*": ["m1"]},
            "stream_resume": "restart",
            "trace_capacity": 5,
            "server": {
                "host": "0.0.0.0",
                "port": 0,
                "api_keys": ["k1", "k2"],
                "max_body_bytes": 100,
                "header_timeout_ms": 1,
                "shutdown_grace_ms": 0,
            },
            "control": {
                "host": "::1",
                "port": 9000,
                "token": "tok",
                "token_env": "MY_TOKEN",
                "max_message_bytes": 10,
            },
        }
    )
    assert config == SwitcherConfig(
        targets=(
            TargetConfig(
                target_id="x",
                provider_id="custom",
                api="anthropic",
                base_url="https://llm.internal.example/v1",
                api_key_env="CUSTOM_KEY",
                model="m1",
                serves=("m1", "alias"),
                capabilities=("chat",),
                enabled=False,
                operator_priority=-1,
                policy_tags=("eu",),
                concurrency_limit=3,
                circuit_breaker=CircuitBreakerConfig(failure_threshold=2, success_threshold=1),
                rate_limit=RateLimitConfig(requests_per_minute=30.0, burst=4),
                first_token_timeout_ms=5000.0,
                stream_idle_timeout_ms=7000.0,
                context_window=8192,
            ),
        ),
        retry_budget=0,
        failover_budget=5,
        backoff=BackoffConfig(base_ms=0.0, multiplier=1.0, max_ms=10.0, jitter="equal"),
        routing_weights=RoutingWeights(health=2.0, latency=0.0, failure=1.0, priority=0.1),
        queue_limit=7,
        concurrency_limit=3,
        backpressure_threshold=7,
        circuit_breaker=CircuitBreakerConfig(success_threshold=1),
        max_expected_latency_ms=1500.0,
        deployment_mode_hint="sdk-control",
        request_timeout_ms=9000.0,
        first_token_timeout_ms=800.0,
        stream_idle_timeout_ms=900.0,
        max_wait_ms=0.0,
        quota_cooldown_ms=60000.0,
        quota_delay_cap_ms=120000.0,
        hedge_after_ms=2500.0,
        fallbacks={"m1": ("m2", "m3"), "*": ("m1",)},
        stream_resume="restart",
        trace_capacity=5,
        server=ServerConfig(
            host="0.0.0.0",
            port=0,
            api_keys=(Secret("k1"), Secret("k2")),
            max_body_bytes=100,
            header_timeout_ms=1.0,
            shutdown_grace_ms=0.0,
        ),
        control=ControlConfig(
            host="::1", port=9000, token=Secret("tok"), token_env="MY_TOKEN", max_message_bytes=10
        ),
    )


def test_json_null_means_off_for_optional_fields() -> None:
    """null is accepted where a field is optional (hedging off, no control port)."""
    config = parse_config(
        {
            **one_target(model=None, capabilities=None, context_window=None),
            "hedge_after_ms": None,
            "control": {"port": None},
        }
    )
    assert config.hedge_after_ms is None
    assert config.control.port is None
    assert config.targets[0].capabilities is None


# --- the broken example: every problem at once ------------------------------------------


def test_broken_example_reports_every_problem_with_its_path() -> None:
    """examples/broken.toml yields the full, exact problem list, in a stable order."""
    with pytest.raises(ConfigError) as info:
        load_config(EXAMPLES / "broken.toml")
    assert info.value.problems == (
        ("$.retry", "conflicts with retry_budget (2 vs 4): give only one of them"),
        ("$.retry_budgett", "unknown key 'retry_budgett' (did you mean 'retry_budget'?)"),
        ("$.targets[0].concurrency_limit", 'expected an integer (got "three")'),
        ("$.targets[0].api_key", "give api_key or api_key_env, not both"),
        ("$.targets[1].api", 'must be one of openai, anthropic (got "gemini")'),
        ("$.targets[1].enabled", 'expected true or false (got "yes")'),
        ("$.targets[1].rate_limit.requests_per_minute", "must be > 0 (got -3)"),
        (
            "$.targets[1].base_url",
            'missing: required, as "acme-llm" is not a well-known provider',
        ),
        ("$.targets[2].target_id", "missing required key"),
        ("$.targets[2].first_token_timeout_ms", "must be > 0 (got 0)"),
        ("$.backoff.jitter", 'must be one of full, equal, none (got "fulll")'),
        ("$.backoff.max_ms", "must be >= base_ms (got 500 < 2000)"),
        ("$.circuit_breaker.failure_rate_threshold", "must be in (0, 1] (got 1.5)"),
        ("$.server.port", "must be a port number, 0 to 65535 (got 80800)"),
        ("$.backpressure_threshold", "must be <= queue_limit (got 40 > 20)"),
        ("$.targets[1].target_id", 'duplicate target_id "primary" (first used by targets[0])'),
    )
    assert "sk-demo" not in str(info.value)
    assert info.value.__notes__ == [f"in {EXAMPLES / 'broken.toml'}"]


def test_config_error_renders_reason_at_path_per_line() -> None:
    """str(ConfigError) lists each problem as 'reason @ path' on its own line."""
    with pytest.raises(ConfigError) as info:
        parse_config({"retry_budget": -1, "targets": []})
    assert str(info.value) == (
        "invalid configuration:\n"
        "must be >= 0 (got -1) @ $.retry_budget\n"
        "must list at least one target @ $.targets"
    )


# --- unknown keys, types, ranges ------------------------------------------------------


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        (
            {**one_target(), "retry_budgett": 3},
            ("$.retry_budgett", "unknown key 'retry_budgett' (did you mean 'retry_budget'?)"),
        ),
        (
            {**one_target(), "retyr": 3},
            ("$.retyr", "unknown key 'retyr' (did you mean 'retry'?)"),
        ),
        ({**one_target(), "colour": "blue"}, ("$.colour", "unknown key 'colour'")),
        (
            one_target(modle="gpt-4o"),
            ("$.targets[0].modle", "unknown key 'modle' (did you mean 'model'?)"),
        ),
        (
            {**one_target(), "backoff": {"max": 5}},
            ("$.backoff.max", "unknown key 'max' (did you mean 'max_ms'?)"),
        ),
        (
            one_target(rate_limit={"rpm": 60}),
            ("$.targets[0].rate_limit.rpm", "unknown key 'rpm'"),
        ),
    ],
)
def test_unknown_keys_are_rejected_with_the_closest_name(
    mapping: dict[str, Any], expected: tuple[str, str]
) -> None:
    """An unknown key in an oswitch section is an error, suggesting the nearest valid key."""
    problems = problems_of(mapping)
    assert expected in problems


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        ({**one_target(), "retry_budget": "three"}, 'expected an integer (got "three")'),
        ({**one_target(), "retry_budget": True}, "expected an integer (got true)"),
        ({**one_target(), "retry_budget": 2.5}, "expected an integer (got 2.5)"),
        ({**one_target(), "max_wait_ms": False}, "expected a number (got false)"),
        ({**one_target(), "max_wait_ms": "10s"}, 'expected a number (got "10s")'),
        ({**one_target(), "max_wait_ms": math.inf}, "must be a finite number (got inf)"),
        ({**one_target(), "max_wait_ms": None}, "expected a number (got null)"),
        ({**one_target(), "max_wait_ms": [1]}, "expected a number (got a list)"),
        ({**one_target(), "backoff": 5}, "expected a mapping (got 5)"),
        (
            {**one_target(), "fallbacks": ["a"]},
            "expected a mapping of model names to lists (got a list)",
        ),
        ({"targets": "a,b"}, 'expected a list (got "a,b")'),
    ],
)
def test_wrong_types_are_named_with_the_value_given(mapping: dict[str, Any], expected: str) -> None:
    """A value of the wrong type says what was expected and what was given."""
    _, reason = problem_of(mapping)
    assert reason == expected


def test_ints_are_accepted_where_floats_are_expected() -> None:
    """An integer is a valid number of milliseconds and is stored as a float."""
    config = parse_config({**one_target(), "max_wait_ms": 2500})
    assert config.max_wait_ms == 2500.0
    assert isinstance(config.max_wait_ms, float)


def test_a_string_is_not_taken_as_a_list_of_characters() -> None:
    """capabilities = "chat" is an error, not ("c", "h", "a", "t")."""
    assert problem_of(one_target(capabilities="chat")) == (
        "$.targets[0].capabilities",
        'expected a list (got "chat")',
    )


def test_list_elements_are_checked_one_by_one() -> None:
    """Every bad element of a list is reported at its own index."""
    assert problems_of(one_target(policy_tags=["ok", 3, ""], serves=[None])) == [
        ("$.targets[0].serves[0]", "expected a string (got null)"),
        ("$.targets[0].policy_tags[1]", "expected a string (got 3)"),
        ("$.targets[0].policy_tags[2]", "must not be empty"),
    ]


RANGE_CASES = [
    ("retry_budget", -1, "must be >= 0 (got -1)"),
    ("failover_budget", -2, "must be >= 0 (got -2)"),
    ("queue_limit", 0, "must be >= 1 (got 0)"),
    ("concurrency_limit", 0, "must be >= 1 (got 0)"),
    ("backpressure_threshold", 0, "must be >= 1 (got 0)"),
    ("max_expected_latency_ms", 0, "must be > 0 (got 0)"),
    ("request_timeout_ms", -5, "must be > 0 (got -5)"),
    ("first_token_timeout_ms", 0, "must be > 0 (got 0)"),
    ("stream_idle_timeout_ms", 0, "must be > 0 (got 0)"),
    ("max_wait_ms", -1, "must be >= 0 (got -1)"),
    ("quota_cooldown_ms", 0, "must be > 0 (got 0)"),
    ("quota_delay_cap_ms", 0, "must be > 0 (got 0)"),
    ("hedge_after_ms", 0, "must be > 0 (got 0)"),
    ("trace_capacity", 0, "must be >= 1 (got 0)"),
    ("backoff.base_ms", -1, "must be >= 0 (got -1)"),
    ("backoff.multiplier", 0.5, "must be >= 1 (got 0.5)"),
    ("backoff.max_ms", 0, "must be > 0 (got 0)"),
    ("routing_weights.health", -0.1, "must be >= 0 (got -0.1)"),
    ("routing_weights.latency", -1, "must be >= 0 (got -1)"),
    ("routing_weights.failure", -1, "must be >= 0 (got -1)"),
    ("routing_weights.priority", -1, "must be >= 0 (got -1)"),
    ("circuit_breaker.failure_threshold", 0, "must be >= 1 (got 0)"),
    ("circuit_breaker.failure_rate_threshold", 0, "must be in (0, 1] (got 0)"),
    ("circuit_breaker.failure_rate_threshold", 1.01, "must be in (0, 1] (got 1.01)"),
    ("circuit_breaker.sliding_window_size", 0, "must be >= 1 (got 0)"),
    ("circuit_breaker.half_open_after_ms", 0, "must be > 0 (got 0)"),
    ("circuit_breaker.half_open_max_probes", 0, "must be >= 1 (got 0)"),
    ("circuit_breaker.success_threshold", 0, "must be >= 1 (got 0)"),
    ("server.host", " ", "must not be empty"),
    ("server.port", -1, "must be a port number, 0 to 65535 (got -1)"),
    ("server.port", 65536, "must be a port number, 0 to 65535 (got 65536)"),
    ("server.max_body_bytes", 0, "must be >= 1 (got 0)"),
    ("server.header_timeout_ms", 0, "must be > 0 (got 0)"),
    ("server.shutdown_grace_ms", -1, "must be >= 0 (got -1)"),
    ("control.host", "", "must not be empty"),
    ("control.port", 70000, "must be a port number, 0 to 65535 (got 70000)"),
    (
        "control.token_env",
        "not a name",
        "must be the name of an environment variable, like OPENAI_API_KEY",
    ),
    ("control.max_message_bytes", 0, "must be >= 1 (got 0)"),
]


@pytest.mark.parametrize(("dotted", "value", "reason"), RANGE_CASES)
def test_global_values_out_of_range_are_rejected(dotted: str, value: Any, reason: str) -> None:
    """Each global setting enforces its range, reported at its own path."""
    mapping: dict[str, Any] = one_target()
    *sections, key = dotted.split(".")
    node = mapping
    for section in sections:
        node = node.setdefault(section, {})
    node[key] = value
    assert problem_of(mapping) == (f"$.{dotted}", reason)


TARGET_RANGE_CASES = [
    ("target_id", "", "must not be empty"),
    ("provider_id", " ", "must not be empty"),
    ("model", "", "must not be empty"),
    (
        "base_url",
        "api.openai.com/v1",
        'must be an http:// or https:// URL (got "api.openai.com/v1")',
    ),
    (
        "api_key_env",
        "OPENAI-KEY",
        "must be the name of an environment variable, like OPENAI_API_KEY",
    ),
    ("api_key", "", "must not be empty"),
    ("concurrency_limit", 0, "must be >= 1 (got 0)"),
    ("first_token_timeout_ms", -1, "must be > 0 (got -1)"),
    ("stream_idle_timeout_ms", 0, "must be > 0 (got 0)"),
    ("context_window", 0, "must be >= 1 (got 0)"),
    ("operator_priority", 1.5, "expected an integer (got 1.5)"),
    ("api", "bedrock", 'must be one of openai, anthropic (got "bedrock")'),
    ("rate_limit", {"requests_per_minute": 0}, "must be > 0 (got 0)"),
    ("rate_limit", {"requests_per_minute": 60, "burst": 0}, "must be >= 1 (got 0)"),
    ("rate_limit", {}, "missing required key"),
    ("circuit_breaker", {"failure_rate_threshold": 2}, "must be in (0, 1] (got 2)"),
]


@pytest.mark.parametrize(("key", "value", "reason"), TARGET_RANGE_CASES)
def test_target_values_out_of_range_are_rejected(key: str, value: Any, reason: str) -> None:
    """Each target setting enforces its range, reported under $.targets[i]."""
    second = {**target(target_id="u"), key: value}
    path, problem = problem_of({"targets": [target(), second]})
    assert path.startswith(f"$.targets[1].{key}")
    assert problem == reason


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (
            "deployment_mode_hint",
            "cloud",
            'must be one of auto, plugin-only, server-companion, sdk-control (got "cloud")',
        ),
        ("stream_resume", "resume", 'must be one of continue, restart, off (got "resume")'),
        ("backoff", {"jitter": "half"}, 'must be one of full, equal, none (got "half")'),
    ],
)
def test_unknown_choices_list_the_valid_values(key: str, value: Any, reason: str) -> None:
    """An unknown choice for an enumerated key lists every valid value."""
    assert problem_of({**one_target(), key: value})[1] == reason


def test_max_ms_below_base_ms_is_rejected_even_against_a_default() -> None:
    """backoff.base_ms above the default max_ms is caught at max_ms."""
    assert problem_of({**one_target(), "backoff": {"base_ms": 40000}}) == (
        "$.backoff.max_ms",
        "must be >= base_ms (got 30000 < 40000)",
    )


def test_duplicate_target_ids_point_at_the_repeat() -> None:
    """A repeated target_id is reported at the second occurrence, naming the first."""
    problems = problems_of({"targets": [target(), target(target_id="u"), target(), target()]})
    assert problems == [
        ("$.targets[2].target_id", 'duplicate target_id "t" (first used by targets[0])'),
        ("$.targets[3].target_id", 'duplicate target_id "t" (first used by targets[0])'),
    ]


def test_empty_and_missing_targets_are_errors() -> None:
    """A config must route somewhere: no targets key, or an empty list, is an error."""
    assert problem_of({}) == ("$.targets", "missing required key")
    assert problem_of({"targets": []}) == ("$.targets", "must list at least one target")


def test_missing_required_target_fields_are_each_reported() -> None:
    """A target without target_id and provider_id gets one problem per missing key."""
    assert problems_of({"targets": [{}]}) == [
        ("$.targets[0].target_id", "missing required key"),
        ("$.targets[0].provider_id", "missing required key"),
    ]


def test_top_level_must_be_a_mapping() -> None:
    """A document that is not a mapping is rejected at $."""
    assert problem_of([1, 2]) == ("$", "expected a mapping at the top level (got a list)")


def test_fallback_keys_with_punctuation_are_quoted_in_paths() -> None:
    """Model names that are not plain identifiers appear bracketed and quoted."""
    assert problems_of({**one_target(), "fallbacks": {"*": "x", "gpt-4.1": [1], "": []}}) == [
        ('$.fallbacks["*"]', 'expected a list (got "x")'),
        ('$.fallbacks["gpt-4.1"][0]', "expected a string (got 1)"),
        ('$.fallbacks[""]', "model name must not be empty"),
    ]


# --- shorthands ------------------------------------------------------------------------


def test_shorthands_set_their_long_names() -> None:
    """retry is retry_budget and timeout is max_expected_latency_ms."""
    config = parse_config({**one_target(), "retry": 5, "timeout": 12000})
    assert (config.retry_budget, config.max_expected_latency_ms) == (5, 12000.0)


def test_shorthand_and_long_name_agreeing_is_fine() -> None:
    """Giving both spellings with equal values is accepted."""
    config = parse_config({**one_target(), "timeout": 20000, "max_expected_latency_ms": 20000.0})
    assert config.max_expected_latency_ms == 20000.0


def test_shorthand_and_long_name_disagreeing_is_an_error() -> None:
    """Giving both spellings with different values is reported at the shorthand."""
    assert problem_of({**one_target(), "timeout": 1000, "max_expected_latency_ms": 2000}) == (
        "$.timeout",
        "conflicts with max_expected_latency_ms (1000 vs 2000): give only one of them",
    )
    assert problem_of({**one_target(), "retry": True, "retry_budget": 1}) == (
        "$.retry",
        "conflicts with retry_budget (true vs 1): give only one of them",
    )


def test_bad_shorthand_value_is_reported_at_the_shorthand() -> None:
    """A wrong value given through a shorthand is reported under the name the user wrote."""
    assert problem_of({**one_target(), "retry": -1}) == ("$.retry", "must be >= 0 (got -1)")


# --- resolution rules ------------------------------------------------------------------


def test_serves_defaults_to_the_model() -> None:
    """A target with a model serves exactly that model name."""
    assert parse_config(one_target(model="gpt-4o")).targets[0].serves == ("gpt-4o",)


def test_serves_defaults_to_any_for_passthrough_targets() -> None:
    """A target without a model serves any requested model."""
    assert parse_config(one_target()).targets[0].serves == ("*",)
    assert parse_config(one_target(serves=[])).targets[0].serves == ("*",)


def test_explicit_serves_is_kept() -> None:
    """serves given explicitly wins over the model default."""
    config = parse_config(one_target(model="openai/gpt-4o", serves=["gpt-4o"]))
    assert (config.targets[0].model, config.targets[0].serves) == ("openai/gpt-4o", ("gpt-4o",))


@pytest.mark.parametrize(
    "provider_id", [p for p, entry in KNOWN_PROVIDERS.items() if entry.base_url is not None]
)
def test_known_providers_fill_api_base_url_and_key_variable(provider_id: str) -> None:
    """A well-known provider_id supplies api, base_url and the key variable."""
    entry = KNOWN_PROVIDERS[provider_id]
    resolved = parse_config(one_target(provider_id=provider_id)).targets[0]
    assert (resolved.api, resolved.base_url, resolved.api_key_env, resolved.api_key) == (
        entry.api,
        entry.base_url,
        entry.key_env,
        None,
    )


def test_known_provider_table_spells_the_expected_endpoints() -> None:
    """The table holds the real endpoints and key variables of the main providers."""
    assert {p: (e.api, e.base_url, e.key_env) for p, e in KNOWN_PROVIDERS.items()} == {
        "openai": ("openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
        "anthropic": ("anthropic", "https://api.anthropic.com/v1", "ANTHROPIC_API_KEY"),
        "azure": ("openai", None, "AZURE_OPENAI_API_KEY"),
        "gemini": (
            "openai",
            "https://generativelanguage.googleapis.com/v1beta/openai",
            "GEMINI_API_KEY",
        ),
        "google": (
            "openai",
            "https://generativelanguage.googleapis.com/v1beta/openai",
            "GOOGLE_GENERATIVE_AI_API_KEY",
        ),
        "groq": ("openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
        "mistral": ("openai", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
        "openrouter": ("openai", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
        "deepseek": ("openai", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
        "together": ("openai", "https://api.together.xyz/v1", "TOGETHER_API_KEY"),
        "fireworks": ("openai", "https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY"),
        "xai": ("openai", "https://api.x.ai/v1", "XAI_API_KEY"),
        "cerebras": ("openai", "https://api.cerebras.ai/v1", "CEREBRAS_API_KEY"),
        "ollama": ("openai", "http://127.0.0.1:11434/v1", None),
        "lmstudio": ("openai", "http://127.0.0.1:1234/v1", None),
        "vllm": ("openai", "http://127.0.0.1:8000/v1", None),
        "llamacpp": ("openai", "http://127.0.0.1:8080/v1", None),
    }


def test_explicit_values_override_the_provider_table() -> None:
    """api, base_url and api_key_env given on the target win over the table."""
    resolved = parse_config(
        one_target(
            provider_id="anthropic",
            api="openai",
            base_url="https://proxy.example/v1",
            api_key_env="PROXY_KEY",
        )
    ).targets[0]
    assert (resolved.api, resolved.base_url, resolved.api_key_env) == (
        "openai",
        "https://proxy.example/v1",
        "PROXY_KEY",
    )


def test_inline_key_means_no_key_variable() -> None:
    """A target with api_key inline gets no api_key_env from the table."""
    resolved = parse_config(one_target(api_key=FAKE_KEY)).targets[0]
    assert resolved.api_key == Secret(FAKE_KEY)
    assert resolved.api_key_env is None


def test_local_servers_need_no_key() -> None:
    """ollama resolves to its local URL with no key at all."""
    resolved = parse_config(one_target(provider_id="ollama")).targets[0]
    assert (resolved.base_url, resolved.api_key_env, resolved.api_key) == (
        "http://127.0.0.1:11434/v1",
        None,
        None,
    )


def test_unknown_provider_with_base_url_is_fine() -> None:
    """Any OpenAI-compatible server works given its base_url; it gets no key by default."""
    resolved = parse_config(
        one_target(provider_id="my-vllm", base_url="http://10.0.0.5:8000/v1")
    ).targets[0]
    assert (resolved.api, resolved.base_url, resolved.api_key_env) == (
        "openai",
        "http://10.0.0.5:8000/v1",
        None,
    )


def test_unknown_provider_without_base_url_is_an_error() -> None:
    """An unknown provider_id needs a base_url, reported where it is missing."""
    assert problem_of(one_target(provider_id="acme")) == (
        "$.targets[0].base_url",
        'missing: required, as "acme" is not a well-known provider',
    )


def test_azure_needs_its_own_base_url() -> None:
    """azure has no default URL; the error shows the URL's shape."""
    assert problem_of(one_target(provider_id="azure")) == (
        "$.targets[0].base_url",
        'missing: "azure" has no default URL; give one like '
        "https://<resource>.openai.azure.com/openai/v1",
    )
    resolved = parse_config(
        one_target(provider_id="azure", base_url="https://r.openai.azure.com/openai/v1")
    ).targets[0]
    assert resolved.api_key_env == "AZURE_OPENAI_API_KEY"


def test_target_breaker_overrides_the_global_one_key_by_key() -> None:
    """Keys a target's circuit_breaker leaves out come from the global circuit_breaker."""
    config = parse_config(
        {
            "targets": [target(circuit_breaker={"failure_threshold": 2}), target(target_id="u")],
            "circuit_breaker": {"failure_threshold": 7, "half_open_after_ms": 5000},
        }
    )
    assert config.targets[0].circuit_breaker == CircuitBreakerConfig(
        failure_threshold=2, half_open_after_ms=5000.0
    )
    assert config.targets[1].circuit_breaker is None


def test_burst_defaults_to_one_second_of_rate() -> None:
    """burst = max(1, ceil(requests_per_minute / 60)) when not given."""
    bursts = [
        parse_config(one_target(rate_limit={"requests_per_minute": rpm})).targets[0].rate_limit
        for rpm in (1, 60, 61, 600, 0.5)
    ]
    assert [b.burst for b in bursts if b is not None] == [1, 1, 2, 10, 1]


def test_serves_and_burst_are_resolved_in_the_model() -> None:
    """A target or rate limit built in code gets the defaults a parsed one gets: serves
    its model (or any, without one), a burst of one second's worth."""
    assert TargetConfig(target_id="t", provider_id="p", model="m").serves == ("m",)
    assert TargetConfig(target_id="t", provider_id="p").serves == ("*",)
    assert TargetConfig(target_id="t", provider_id="p", serves=("x",)).serves == ("x",)
    assert RateLimitConfig(requests_per_minute=600).burst == 10
    assert RateLimitConfig(requests_per_minute=0.5).burst == 1


def test_an_empty_serves_list_means_the_default() -> None:
    """serves = [] reads as no serves at all: the target serves its model."""
    config = parse_config(one_target(model="gpt-4.1", serves=[]))
    assert config.targets[0].serves == ("gpt-4.1",)


def test_explicit_burst_is_kept() -> None:
    """A burst given explicitly is used as is."""
    limit = parse_config(one_target(rate_limit={"requests_per_minute": 600, "burst": 3}))
    assert limit.targets[0].rate_limit == RateLimitConfig(requests_per_minute=600.0, burst=3)


def test_unset_backpressure_threshold_follows_a_small_queue() -> None:
    """With queue_limit below 50 and no threshold given, the threshold is the queue limit."""
    assert parse_config({**one_target(), "queue_limit": 20}).backpressure_threshold == 20
    assert parse_config({**one_target(), "queue_limit": 500}).backpressure_threshold == 50


def test_explicit_backpressure_threshold_above_queue_limit_is_an_error() -> None:
    """An explicit threshold larger than the queue is rejected at the threshold."""
    assert problem_of({**one_target(), "backpressure_threshold": 101}) == (
        "$.backpressure_threshold",
        "must be <= queue_limit (got 101 > 100)",
    )


def test_missing_key_variable_is_not_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Config never reads keys from the environment: an unset variable still loads."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    resolved = parse_config(one_target()).targets[0]
    assert resolved.api_key_env == "OPENAI_API_KEY"
    assert resolved.api_key is None


def test_parsed_config_is_immutable() -> None:
    """The parsed config is frozen: a reload builds a new one."""
    config = parse_config(one_target())
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.retry_budget = 9  # type: ignore[misc]


# --- files -----------------------------------------------------------------------------


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A file that does not exist is a ConfigError naming it."""
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == ((str(path), "cannot read file: No such file or directory"),)


def test_toml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    """A TOML syntax error is reported as FILE:LINE:COL with the parser's reason."""
    path = tmp_path / "bad.toml"
    path.write_text('retry_budget = 3\napi_key "sk-x"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == (
        (f"{path}:2:9", "invalid TOML: Expected '=' after a key in a key/value pair"),
    )


def test_json_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    """A JSON syntax error is reported as FILE:LINE:COL with the parser's reason."""
    path = tmp_path / "bad.json"
    path.write_text('{\n  "targets": [],\n}\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == (
        (f"{path}:3:1", "invalid JSON: Expecting property name enclosed in double quotes"),
    )


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    """A file that is not UTF-8 text is rejected without echoing its bytes."""
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'model = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == ((str(path), "not UTF-8 text (byte 12)"),)


def test_json_top_level_array_is_rejected(tmp_path: Path) -> None:
    """A JSON file whose top level is not an object is a ConfigError at $."""
    path = tmp_path / "list.json"
    path.write_text("[]")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == (("$", "expected a mapping at the top level (got a list)"),)


def test_any_suffix_but_toml_is_read_as_json(tmp_path: Path) -> None:
    """A file not ending in .toml is parsed as JSON."""
    path = tmp_path / "config.conf"
    path.write_text(json.dumps(one_target()))
    assert load_config(str(path)).targets[0].target_id == "t"


# --- secrets ---------------------------------------------------------------------------


def test_secrets_are_redacted_in_repr() -> None:
    """The inline key, server keys and control token never show in a config's repr."""
    config = parse_config(
        {
            **one_target(api_key=FAKE_KEY),
            "server": {"api_keys": [FAKE_KEY]},
            "control": {"token": FAKE_KEY},
        }
    )
    assert FAKE_KEY not in repr(config)
    assert FAKE_KEY not in describe_target(config.targets[0])


@pytest.mark.parametrize(
    "mapping",
    [
        one_target(api_key=FAKE_KEY, api_key_env="OPENAI_API_KEY"),
        one_target(api_key_env=FAKE_KEY),
        one_target(api_key=[FAKE_KEY]),
        one_target(api_key={"value": FAKE_KEY}),
        {**one_target(), "server": {"api_keys": FAKE_KEY}},
        {**one_target(), "server": {"api_keys": [FAKE_KEY, 3, {"k": FAKE_KEY}]}},
        {**one_target(), "control": {"token": [FAKE_KEY]}},
        {**one_target(), "control": {"token_env": FAKE_KEY}},
        {**one_target(api_key=FAKE_KEY), "targets_extra": 1, "backoff": {"jitter": 0}},
    ],
)
def test_secrets_never_appear_in_errors(mapping: dict[str, Any]) -> None:
    """However a key is misplaced or mistyped, the error never contains it."""
    with pytest.raises(ConfigError) as info:
        parse_config(mapping)
    assert FAKE_KEY not in str(info.value)
    assert FAKE_KEY not in repr(info.value.problems)


def test_syntax_errors_do_not_quote_the_file(tmp_path: Path) -> None:
    """A syntax error next to a key reports position, not content."""
    for name, text in (
        ("k.toml", f'[[targets]]\napi_key = "{FAKE_KEY}\n'),
        ("k.json", f'{{"targets": [{{"api_key": "{FAKE_KEY}" "x"}}]}}'),
    ):
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert FAKE_KEY not in str(info.value)


_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_json = st.recursive(
    _json_scalars | st.just(FAKE_KEY),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    api_key=_json,
    api_keys=_json,
    token=_json,
    extra=st.dictionaries(
        st.sampled_from(["retry_budget", "backoff", "server", "control", "fallbacks", "targets"]),
        _json,
        max_size=3,
    ),
)
def test_any_document_gives_a_config_or_a_clean_config_error(
    api_key: Any, api_keys: Any, token: Any, extra: dict[str, Any]
) -> None:
    """Arbitrary values anywhere yield a config or a ConfigError that never leaks a secret."""
    mapping: dict[str, Any] = {
        **one_target(api_key=api_key),
        "server": {"api_keys": api_keys},
        "control": {"token": token},
        **extra,
    }
    try:
        parse_config(mapping)
    except ConfigError as exc:
        assert exc.problems
        for path, reason in exc.problems:
            assert path.startswith("$")
            assert reason
        # The key only legitimately appears where the user wrote it as a key
        # name or in a non-secret field; secret fields never echo it.
        secret_paths = ("$.targets[0].api_key", "$.server.api_keys", "$.control.token")
        for path, reason in exc.problems:
            if path.startswith(secret_paths):
                assert FAKE_KEY not in reason


# --- describe --------------------------------------------------------------------------


def test_describe_targets_shows_key_sources_never_keys() -> None:
    """The summary names where each key comes from and whether its variable is set."""
    config = parse_config(
        {
            "targets": [
                target(target_id="a", model="gpt-4o", operator_priority=1),
                target(target_id="b", provider_id="anthropic"),
                target(target_id="c", api_key=FAKE_KEY, enabled=False),
                target(target_id="d", provider_id="ollama", serves=["qwen", "llama"]),
            ]
        }
    )
    lines = describe_targets(config, environ={"OPENAI_API_KEY": "x", "ANTHROPIC_API_KEY": ""})
    assert lines == [
        "a: provider openai; api openai; https://api.openai.com/v1; model gpt-4o; "
        "serves gpt-4o; priority 1; key env OPENAI_API_KEY (set)",
        "b: provider anthropic; api anthropic; https://api.anthropic.com/v1; "
        "model (passthrough); serves *; priority 0; "
        "key env ANTHROPIC_API_KEY (missing → starts ReauthRequired)",
        "c: provider openai; api openai; https://api.openai.com/v1; model (passthrough); "
        "serves *; priority 0; key inline (hidden); disabled",
        "d: provider ollama; api openai; http://127.0.0.1:11434/v1; model (passthrough); "
        "serves qwen, llama; priority 0; key none",
    ]
    assert describe_targets(config)[0].endswith("key env OPENAI_API_KEY")


def test_every_key_is_documented() -> None:
    """docs/configuration.md names every key of the schema and every known provider."""
    doc = (EXAMPLES.parent / "docs" / "configuration.md").read_text()
    classes = (
        SwitcherConfig,
        TargetConfig,
        BackoffConfig,
        RoutingWeights,
        CircuitBreakerConfig,
        RateLimitConfig,
        ServerConfig,
        ControlConfig,
        AuditConfig,
        OtelConfig,
        StoreConfig,
    )
    undocumented = [
        f"{cls.__name__}.{field.name}"
        for cls in classes
        for field in attrs.fields(cls)
        if f"| `{field.name}`" not in doc
    ]
    undocumented += [p for p in KNOWN_PROVIDERS if f"| `{p}` |" not in doc]
    assert undocumented == []


# --- validate_config (configs built in code) --------------------------------------------


def built_target(target_id: str = "t", **fields: Any) -> TargetConfig:
    return TargetConfig(
        target_id=target_id,
        provider_id="openai",
        base_url="https://api.openai.com/v1",
        api_key=Secret(FAKE_KEY),
        **fields,
    )


def test_validate_config_accepts_a_valid_built_config() -> None:
    """A config built in code that parse_config would accept passes validate_config."""
    config = SwitcherConfig(
        targets=(built_target("a"), built_target("b", circuit_breaker=CircuitBreakerConfig())),
        queue_limit=5,  # the default backpressure_threshold is not held against it
        fallbacks={"*": ("gpt-4o",)},
        server=ServerConfig(api_keys=(Secret("k"),)),
    )
    validate_config(config)


def test_validate_config_reports_problems_by_path_without_secrets() -> None:
    """A built config breaking the rules gets the same problems as parsing it would."""
    config = SwitcherConfig(
        targets=(
            built_target("a"),
            built_target("a", concurrency_limit=0, api_key_env="OPENAI_API_KEY"),
        ),
        queue_limit=5,
        backpressure_threshold=6,
    )
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert info.value.problems == (
        ("$.targets[1].concurrency_limit", "must be >= 1 (got 0)"),
        ("$.targets[1].api_key", "give api_key or api_key_env, not both"),
        ("$.backpressure_threshold", "must be <= queue_limit (got 6 > 5)"),
        ("$.targets[1].target_id", 'duplicate target_id "a" (first used by targets[0])'),
    )
    assert FAKE_KEY not in str(info.value)
