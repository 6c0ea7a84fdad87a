"""opencode.json: the switcher section, provider discovery in both shapes, paths."""

from __future__ import annotations

import ast
import json
import os
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from oswitch.config import TargetConfig, describe_targets, load_config, parse_config
from oswitch.config.opencode import KEY_FILE_LIMIT
from oswitch.config.report import ConfigReport
from oswitch.core.secret import Secret
from oswitch.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FAKE_KEY = "sk-test-OSWITCH-FAKE-KEY-7f3a9c"


def problems_of(mapping: Any) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(mapping)
    return list(info.value.problems)


def test_example_opencode_file_discovers_one_target_per_provider() -> None:
    """examples/opencode.json yields a target per provider entry, in file order."""
    config = load_config(EXAMPLES / "opencode.json")
    assert config.targets == (
        TargetConfig(
            target_id="anthropic",
            provider_id="anthropic",
            api="anthropic",
            base_url="https://api.anthropic.com/v1",
            api_key_env="ANTHROPIC_API_KEY",
            serves=("claude-sonnet-4-5", "claude-3-5-haiku-latest"),
        ),
        TargetConfig(
            target_id="openai",
            provider_id="openai",
            api="openai",
            base_url="https://api.openai.com/v1",
            api_key_env="OPENAI_API_KEY",
            serves=("gpt-4.1",),
            context_window=1047576,
        ),
        TargetConfig(
            target_id="ollama",
            provider_id="ollama",
            api="openai",
            base_url="http://localhost:11434/v1",
            serves=("qwen2.5-coder:7b", "llama3.1:8b"),
        ),
    )


def test_example_opencode_switcher_section_applies() -> None:
    """The switcher section (with shorthands) sets the global options."""
    config = load_config(EXAMPLES / "opencode.json")
    assert (config.retry_budget, config.max_expected_latency_ms, config.failover_budget) == (
        2,
        45000.0,
        3,
    )
    assert config.fallbacks == {
        "claude-sonnet-4-5": ("gpt-4.1",),
        "*": ("qwen2.5-coder:7b",),
    }
    assert config.circuit_breaker.failure_threshold == 3


def test_short_provider_shape_is_accepted() -> None:
    """{"api": ..., "apiKey": ..., "baseURL": ...} describes a provider too."""
    config = parse_config(
        {
            "provider": {
                "openai": {"api": "openai", "apiKey": FAKE_KEY},
                "corp": {
                    "api": "anthropic",
                    "apiKey": "{env:CORP_KEY}",
                    "baseURL": "https://llm.corp.example/v1",
                    "models": ["claude-x"],
                },
            }
        }
    )
    openai, corp = config.targets
    assert (openai.api, openai.base_url, openai.api_key, openai.api_key_env) == (
        "openai",
        "https://api.openai.com/v1",
        Secret(FAKE_KEY),
        None,
    )
    assert (corp.api, corp.base_url, corp.api_key_env, corp.serves) == (
        "anthropic",
        "https://llm.corp.example/v1",
        "CORP_KEY",
        ("claude-x",),
    )


@pytest.mark.parametrize(
    ("npm", "api", "base_url", "key_env"),
    [
        ("@ai-sdk/anthropic", "anthropic", "https://api.anthropic.com/v1", "ANTHROPIC_API_KEY"),
        ("@ai-sdk/openai", "openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
        ("@ai-sdk/groq", "openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
        (
            "@openrouter/ai-sdk-provider",
            "openai",
            "https://openrouter.ai/api/v1",
            "OPENROUTER_API_KEY",
        ),
        (
            "@ai-sdk/google",
            "openai",
            "https://generativelanguage.googleapis.com/v1beta/openai",
            "GOOGLE_GENERATIVE_AI_API_KEY",
        ),
    ],
)
def test_npm_package_picks_api_and_defaults(
    npm: str, api: str, base_url: str, key_env: str
) -> None:
    """A provider entry named anything takes its defaults from its npm package."""
    (resolved,) = parse_config({"provider": {"work": {"npm": npm}}}).targets
    assert (resolved.target_id, resolved.provider_id) == ("work", "work")
    assert (resolved.api, resolved.base_url, resolved.api_key_env) == (api, base_url, key_env)


def test_openai_compatible_named_like_a_known_provider_uses_its_defaults() -> None:
    """@ai-sdk/openai-compatible under a well-known name needs no baseURL."""
    (resolved,) = parse_config({"provider": {"groq": {"npm": "@ai-sdk/openai-compatible"}}}).targets
    assert (resolved.base_url, resolved.api_key_env) == (
        "https://api.groq.com/openai/v1",
        "GROQ_API_KEY",
    )


def test_azure_resource_name_builds_the_base_url() -> None:
    """@ai-sdk/azure's options.resourceName gives the v1 endpoint of that resource."""
    (resolved,) = parse_config(
        {"provider": {"azure": {"npm": "@ai-sdk/azure", "options": {"resourceName": "contoso"}}}}
    ).targets
    assert resolved.base_url == "https://contoso.openai.azure.com/openai/v1"
    assert resolved.api_key_env == "AZURE_OPENAI_API_KEY"


def test_literal_api_key_becomes_a_hidden_secret() -> None:
    """options.apiKey given literally is kept as a Secret and never shown."""
    config = parse_config({"provider": {"openai": {"options": {"apiKey": FAKE_KEY}}}})
    assert config.targets[0].api_key == Secret(FAKE_KEY)
    assert FAKE_KEY not in repr(config)


def test_model_id_is_the_name_served() -> None:
    """A models entry with its own id serves that id (the upstream model name)."""
    config = parse_config(
        {
            "provider": {
                "lab": {
                    "npm": "@ai-sdk/openai-compatible",
                    "options": {"baseURL": "http://127.0.0.1:9000/v1"},
                    "models": {"fast": {"id": "org/fast-model-v2"}, "slow": {}},
                }
            }
        }
    )
    assert config.targets[0].serves == ("org/fast-model-v2", "slow")


def test_provider_without_models_serves_any_model() -> None:
    """A discovered provider listing no models passes any model through."""
    config = parse_config({"provider": {"openai": {}}})
    assert config.targets[0].serves == ("*",)


def test_disabled_providers_are_discovered_disabled() -> None:
    """OpenCode's disabled_providers become targets with enabled = false."""
    config = parse_config(
        {"provider": {"openai": {}, "anthropic": {}}, "disabled_providers": ["anthropic"]}
    )
    assert [(t.target_id, t.enabled) for t in config.targets] == [
        ("openai", True),
        ("anthropic", False),
    ]


def test_opencode_keys_outside_oswitch_sections_are_ignored() -> None:
    """$schema, plugin, mcp, model, agent and unknown provider keys are not errors."""
    config = parse_config(
        {
            "$schema": "https://opencode.ai/config.json",
            "plugin": ["o-switcher"],
            "mcp": {"x": {"type": "local"}},
            "model": "openai/gpt-4.1",
            "agent": {"review": {"temperature": 0.1}},
            "theme": "dark",
            "provider": {
                "openai": {"name": "OpenAI", "whitelist": ["gpt-4.1"], "options": {"timeout": 5}}
            },
        }
    )
    assert [t.target_id for t in config.targets] == ["openai"]


def test_explicit_switcher_targets_turn_discovery_off() -> None:
    """With switcher.targets given, provider entries are not turned into targets."""
    config = parse_config(
        {
            "provider": {"openai": {}, "anthropic": {}},
            "switcher": {"targets": [{"target_id": "only", "provider_id": "openai"}]},
        }
    )
    assert [t.target_id for t in config.targets] == ["only"]


def test_switcher_targets_inherit_from_the_provider_entry_of_their_provider_id() -> None:
    """A switcher target named after a provider entry takes its URL, key and models."""
    config = parse_config(
        {
            "provider": {
                "corp": {
                    "npm": "@ai-sdk/openai-compatible",
                    "options": {"baseURL": "https://llm.corp.example/v1", "apiKey": "{env:CORP}"},
                    "models": {"big": {}, "small": {}},
                }
            },
            "switcher": {
                "targets": [
                    {"target_id": "corp-a", "provider_id": "corp", "operator_priority": 1},
                    {"target_id": "corp-b", "provider_id": "corp", "model": "small"},
                ]
            },
        }
    )
    a, b = config.targets
    assert (a.base_url, a.api_key_env, a.serves) == (
        "https://llm.corp.example/v1",
        "CORP",
        ("big", "small"),
    )
    assert (b.base_url, b.api_key_env, b.model, b.serves) == (
        "https://llm.corp.example/v1",
        "CORP",
        "small",
        ("small",),
    )


def test_broken_provider_entries_not_used_are_ignored() -> None:
    """With explicit targets, an unusable provider entry nobody references is no error."""
    config = parse_config(
        {
            "provider": {"bedrock": {"npm": "@ai-sdk/amazon-bedrock"}},
            "switcher": {"targets": [{"target_id": "a", "provider_id": "openai"}]},
        }
    )
    assert config.targets[0].provider_id == "openai"


def test_discovery_problems_point_into_the_provider_section() -> None:
    """Problems of discovered targets carry paths inside $.provider."""
    problems = problems_of(
        {
            "provider": {
                "local": {"npm": "@ai-sdk/openai-compatible"},
                "short": {"api": "acme"},
                "typo": {"options": {"baseURL": "localhost:8080"}},
                "keyfile": {"options": {"apiKey": "{file:~/.key}"}},
                "badenv": {"options": {"apiKey": "{env:MY KEY}"}},
                "notmap": 3,
                "models": {"npm": "@ai-sdk/openai", "models": "gpt-4.1"},
                "nokey": {"npm": "@ai-sdk/openai", "options": {"apiKey": 12}},
            }
        }
    )
    assert problems == [
        (
            "$.provider.local.options.baseURL",
            'missing: required, as "local" is not a well-known provider',
        ),
        (
            "$.provider.short.api",
            "must name a well-known provider (openai, anthropic, azure, gemini, google, groq, "
            "mistral, openrouter, deepseek, together, fireworks, xai, cerebras, ollama, "
            'lmstudio, vllm, llamacpp) or be the API\'s URL (got "acme")',
        ),
        (
            "$.provider.typo.options.baseURL",
            'must be an http:// or https:// URL (got "localhost:8080")',
        ),
        (
            "$.provider.keyfile.options.apiKey",
            "{file:...} is read only from a config file, not from an inline config",
        ),
        (
            "$.provider.badenv.options.apiKey",
            "{env:...} must name an environment variable, like OPENAI_API_KEY",
        ),
        ("$.provider.notmap", "expected a mapping (got 3)"),
        ("$.provider.models.models", 'expected a mapping of model entries (got "gpt-4.1")'),
        ("$.provider.nokey.options.apiKey", "expected a string (got an integer)"),
    ]


def test_switcher_section_problems_carry_the_switcher_prefix() -> None:
    """Inside opencode.json, oswitch's own keys are reported under $.switcher."""
    problems = problems_of(
        {
            "provider": {},
            "switcher": {
                "retyr": 1,
                "targets": [{"target_id": "a", "provider_id": "openai", "api": "gemini"}],
                "timeout": -1,
            },
        }
    )
    assert problems == [
        ("$.switcher.retyr", "unknown key 'retyr' (did you mean 'retry'?)"),
        ("$.switcher.targets[0].api", 'must be one of openai, anthropic (got "gemini")'),
        ("$.switcher.timeout", "must be > 0 (got -1)"),
    ]


def test_provider_entry_problems_are_reported_once_for_many_targets() -> None:
    """A broken provider entry used by two targets is reported once, at the entry."""
    problems = problems_of(
        {
            "provider": {"corp": {"options": {"baseURL": 5}}},
            "switcher": {
                "targets": [
                    {"target_id": "a", "provider_id": "corp"},
                    {"target_id": "b", "provider_id": "corp"},
                ]
            },
        }
    )
    assert problems == [("$.provider.corp.options.baseURL", "expected a string (got 5)")]


def test_switcher_target_of_unknown_provider_is_reported_at_the_target() -> None:
    """An explicit target whose provider has no URL anywhere is reported at the target."""
    assert problems_of(
        {"provider": {}, "switcher": {"targets": [{"target_id": "a", "provider_id": "corp"}]}}
    ) == [
        (
            "$.switcher.targets[0].base_url",
            'missing: required, as "corp" is not a well-known provider',
        )
    ]


def test_empty_provider_section_without_targets_is_an_error() -> None:
    """An opencode.json with no providers and no switcher.targets has nothing to route to."""
    assert problems_of({"provider": {}}) == [
        ("$.provider", "lists no providers, and switcher.targets is not given")
    ]


def test_switcher_only_file_needs_targets() -> None:
    """A file with only a switcher section must list its targets."""
    assert problems_of({"switcher": {"retry": 1}}) == [
        ("$.switcher.targets", "missing required key")
    ]


def test_sections_of_the_wrong_type_are_errors() -> None:
    """switcher and provider must be mappings."""
    assert problems_of({"switcher": [], "provider": "openai"}) == [
        ("$.switcher", "expected a mapping (got a list)"),
        ("$.provider", 'expected a mapping (got "openai")'),
    ]


def test_sections_are_recognised_by_content_not_file_name(tmp_path: Path) -> None:
    """A file named opencode.json without provider/switcher is oswitch's own format."""
    own = tmp_path / "opencode.json"
    own.write_text(json.dumps({"targets": [{"target_id": "a", "provider_id": "openai"}]}))
    assert load_config(own).targets[0].target_id == "a"
    other = tmp_path / "whatever.json"
    other.write_text(json.dumps({"provider": {"openai": {}}, "$schema": "x"}))
    assert load_config(other).targets[0].target_id == "openai"


def test_oswitch_keys_at_the_top_of_an_opencode_file_are_not_read() -> None:
    """In an opencode.json only the switcher section is oswitch's; top-level keys are OpenCode's."""
    config = parse_config({"provider": {"openai": {}}, "retry_budget": 9})
    assert config.retry_budget == 3


def test_literal_keys_never_appear_in_opencode_errors() -> None:
    """A literal apiKey near mistakes is never quoted back."""
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "provider": {
                    "x": {"options": {"apiKey": FAKE_KEY}},
                    "y": {"options": {"apiKey": [FAKE_KEY]}},
                },
                "switcher": {"targets": [{"target_id": FAKE_KEY[:3], "provider_id": "x"}], "z": 1},
            }
        )
    assert FAKE_KEY not in str(info.value)


def test_enabled_providers_keeps_only_the_providers_it_names() -> None:
    """OpenCode's enabled_providers: every provider it does not name is discovered
    disabled, as disabled_providers would leave it out."""
    config = parse_config(
        {
            "provider": {"openai": {}, "groq": {}, "anthropic": {}},
            "enabled_providers": ["openai", "anthropic", 7],
            "disabled_providers": ["anthropic"],
        }
    )
    assert {t.target_id: t.enabled for t in config.targets} == {
        "openai": True,
        "groq": False,
        "anthropic": False,
    }


def test_disabled_providers_ignores_entries_that_are_not_names() -> None:
    """A disabled_providers list with non-string entries is not a crash; names still apply."""
    from oswitch.config import parse_config

    config = parse_config(
        {"provider": {"openai": {}, "groq": {}}, "disabled_providers": [{}, "groq", 3]}
    )
    assert {t.target_id: t.enabled for t in config.targets} == {"openai": True, "groq": False}


def test_problems_found_resolving_targets_keep_document_order() -> None:
    """A target's resolution problems follow its own field problems and precede the
    next target's, an entry's problem lands at the entry, and whole-table checks come last."""
    document = {
        "provider": {"corp": {"npm": "@ai-sdk/openai-compatible", "options": {"baseURL": 5}}},
        "switcher": {
            "retry": -1,
            "targets": [
                {
                    "target_id": "a",
                    "provider_id": "inhouse",
                    "concurrency_limit": 0,
                    "api_key": FAKE_KEY,
                    "api_key_env": "K",
                    "surprise": 1,
                },
                {"target_id": "b", "provider_id": "corp"},
                {"target_id": "a", "provider_id": "openai", "model": ""},
            ],
            "queue_limit": 0,
        },
    }
    with pytest.raises(ConfigError) as info:
        parse_config(document)
    assert str(info.value) == (
        "invalid configuration:\n"
        "unknown key 'surprise' @ $.switcher.targets[0].surprise\n"
        "must be >= 1 (got 0) @ $.switcher.targets[0].concurrency_limit\n"
        'missing: required, as "inhouse" is not a well-known provider'
        " @ $.switcher.targets[0].base_url\n"
        "give api_key or api_key_env, not both @ $.switcher.targets[0].api_key\n"
        "expected a string (got 5) @ $.provider.corp.options.baseURL\n"
        "must not be empty @ $.switcher.targets[2].model\n"
        "must be >= 0 (got -1) @ $.switcher.retry\n"
        "must be >= 1 (got 0) @ $.switcher.queue_limit\n"
        'duplicate target_id "a" (first used by targets[0]) @ $.switcher.targets[2].target_id'
    )
    assert FAKE_KEY not in str(info.value)


def test_discovered_targets_report_their_problems_at_their_entries_in_order() -> None:
    """Targets discovered from provider entries report each entry's problems at the
    entry, in the order the entries are written."""
    document = {
        "provider": {
            "corp": {"options": {"apiKey": "{file:key.txt}"}},
            "x": {"models": 3},
            "y": {},
        }
    }
    assert problems_of(document) == [
        (
            "$.provider.corp.options.apiKey",
            "{file:...} is read only from a config file, not from an inline config",
        ),
        ("$.provider.x.models", "expected a mapping of model entries (got 3)"),
        ("$.provider.y.baseURL", 'missing: required, as "y" is not a well-known provider'),
    ]


def test_a_parse_shares_no_state_with_the_next() -> None:
    """A failed parse leaves nothing behind: the same document parsed again reports the
    same problems, and a good document after it parses."""
    broken = {"provider": {"corp": {"options": {"baseURL": 5}}}}
    first = problems_of(broken)
    assert problems_of(broken) == first
    assert parse_config({"provider": {"openai": {}}}).targets[0].target_id == "openai"


def test_config_modules_share_no_private_names_and_no_context_variable() -> None:
    """No module of oswitch.config imports another's private (underscored) names, and
    none passes state through a context variable: problems travel explicitly."""
    config_dir = Path(__file__).resolve().parent.parent / "oswitch" / "config"
    offences = []
    for source in sorted(config_dir.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("oswitch"):
                offences += [
                    f"{source.name}: {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_")
                ]
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                names += [alias.name for alias in node.names]
                offences += [f"{source.name}: imports {n}" for n in names if n == "contextvars"]
    assert offences == []


# ---------------------------------------------------------------------------
# Issue 14: every shape o-switcher's and OpenCode's docs show

HEADLINE = """{"provider": {
   "openai-work":     {"api": "openai", "apiKey": "sk-work-key-111"},
   "openai-personal": {"api": "openai", "apiKey": "sk-personal-222"},
   "openai-backup":   {"api": "openai", "apiKey": "sk-backup-333"}},
 "plugin": ["@apolenkov/o-switcher@latest"]}
"""


def _load(tmp_path: Path, document: Any, report: ConfigReport | None = None) -> Any:
    path = tmp_path / "opencode.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return load_config(path, report=report)


def test_o_switchers_headline_config_loads_three_targets(tmp_path: Path) -> None:
    """o-switcher's getting-started opencode.json, verbatim, gives three OpenAI targets,
    one per key, each named by its label and taking OpenAI's defaults from "api"."""
    report = ConfigReport()
    config = _load(tmp_path, HEADLINE, report)
    assert [
        (t.target_id, t.provider_id, t.api, t.base_url, t.api_key, t.api_key_env, t.serves)
        for t in config.targets
    ] == [
        ("openai-work", "openai-work", "openai", "https://api.openai.com/v1",
         Secret("sk-work-key-111"), None, ("*",)),
        ("openai-personal", "openai-personal", "openai", "https://api.openai.com/v1",
         Secret("sk-personal-222"), None, ("*",)),
        ("openai-backup", "openai-backup", "openai", "https://api.openai.com/v1",
         Secret("sk-backup-333"), None, ("*",)),
    ]  # fmt: skip
    assert report.warnings == []


@pytest.mark.parametrize(
    ("api", "wire", "base_url", "key_env"),
    [
        ("openai", "openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
        ("anthropic", "anthropic", "https://api.anthropic.com/v1", "ANTHROPIC_API_KEY"),
        ("groq", "openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    ],
)
def test_short_api_names_the_provider_whose_defaults_apply(
    api: str, wire: str, base_url: str, key_env: str
) -> None:
    """ "api" naming a well-known provider gives its wire protocol, URL and key variable,
    exactly as its npm package would, whatever the entry is called."""
    (target,) = parse_config({"provider": {"team-" + api: {"api": api}}}).targets
    assert (target.target_id, target.api, target.base_url, target.api_key_env) == (
        "team-" + api,
        wire,
        base_url,
        key_env,
    )


def test_short_base_url_overrides_the_named_providers_url() -> None:
    """A short entry's baseURL wins over the URL of the provider its "api" names."""
    (target,) = parse_config(
        {"provider": {"proxy": {"api": "anthropic", "baseURL": "http://127.0.0.1:4000/v1"}}}
    ).targets
    assert (target.api, target.base_url, target.api_key_env) == (
        "anthropic",
        "http://127.0.0.1:4000/v1",
        "ANTHROPIC_API_KEY",
    )


def test_models_dev_shape_api_url_and_env_list() -> None:
    """OpenCode's own schema (from models.dev): "api" is the API's URL and "env" lists
    the key's variables; the first is used."""
    (target,) = parse_config(
        {
            "provider": {
                "my-provider": {
                    "npm": "@ai-sdk/openai-compatible",
                    "api": "https://my-api.example/v1",
                    "env": ["MY_API_KEY", "MY_OTHER_KEY"],
                    "models": {"gpt-5.2": {}},
                }
            }
        }
    ).targets
    assert (target.base_url, target.api_key_env, target.serves) == (
        "https://my-api.example/v1",
        "MY_API_KEY",
        ("gpt-5.2",),
    )


def test_env_list_must_name_variables() -> None:
    """An "env" that is not a list of variable names is a problem at the entry."""
    assert problems_of({"provider": {"openai": {"env": "OPENAI_API_KEY"}}}) == [
        ("$.provider.openai.env", "expected a list of environment variable names")
    ]


def test_env_reference_in_base_url_is_read_at_load_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """{env:VAR} inside a URL is replaced by the variable's value when the config loads."""
    monkeypatch.setenv("CORP_LLM_HOST", "llm.corp.example")
    (target,) = parse_config(
        {"provider": {"corp": {"options": {"baseURL": "https://{env:CORP_LLM_HOST}/v1"}}}}
    ).targets
    assert target.base_url == "https://llm.corp.example/v1"


def test_missing_or_bad_url_references_are_named_without_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unset variable in a URL is a problem naming the variable; a URL read from a
    reference that is not a URL is reported as written, never as read."""
    monkeypatch.delenv("CORP_URL", raising=False)
    monkeypatch.setenv("CORP_BAD", "sk-oops-this-is-a-key")
    assert problems_of(
        {
            "provider": {
                "a": {"options": {"baseURL": "{env:CORP_URL}"}},
                "b": {"baseURL": "{env:CORP_BAD}"},
            }
        }
    ) == [
        ("$.provider.a.options.baseURL", "missing: CORP_URL is not set"),
        ("$.provider.b.baseURL", 'must be an http:// or https:// URL (got "{env:CORP_BAD}")'),
    ]


def test_file_reference_key_is_read_relative_to_the_config_and_never_shown(
    tmp_path: Path,
) -> None:
    """{file:path} in apiKey is read when the config loads (relative to the config's
    directory, trimmed) into a hidden secret that no repr or summary shows."""
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "work").write_text(f"  {FAKE_KEY}\n")
    config = _load(
        tmp_path, {"provider": {"openai-work": {"api": "openai", "apiKey": "{file:keys/work}"}}}
    )
    (target,) = config.targets
    assert (target.api_key, target.api_key_env, target.enabled) == (Secret(FAKE_KEY), None, True)
    assert FAKE_KEY not in repr(config)
    assert FAKE_KEY not in " ".join(describe_targets(config))


def test_file_reference_expands_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """{file:~/...} starts at the home directory, as in OpenCode."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".openai-key").write_text(FAKE_KEY)
    config = _load(
        tmp_path, {"provider": {"openai": {"options": {"apiKey": "{file:~/.openai-key}"}}}}
    )
    assert config.targets[0].api_key == Secret(FAKE_KEY)


def test_missing_or_empty_key_file_is_a_warning_and_the_target_starts_disabled(
    tmp_path: Path,
) -> None:
    """A key file that is not there (or empty) is a named warning, as a missing key
    variable is: its target starts disabled and the rest of the file is served."""
    (tmp_path / "empty").write_text("\n")
    report = ConfigReport()
    config = _load(
        tmp_path,
        {
            "provider": {
                "gone": {"api": "openai", "apiKey": "{file:absent}"},
                "blank": {"api": "openai", "options": {"apiKey": "{file:empty}"}},
                "fine": {"api": "openai", "apiKey": FAKE_KEY},
            }
        },
        report,
    )
    assert [(t.target_id, t.enabled, t.api_key, t.api_key_env) for t in config.targets] == [
        ("gone", False, None, None),
        ("blank", False, None, None),
        ("fine", True, Secret(FAKE_KEY), None),
    ]
    assert report.warnings == [
        (
            "$.provider.gone.apiKey",
            f'key missing: {tmp_path / "absent"} does not exist; "gone" starts disabled '
            "(create it, then reload)",
        ),
        (
            "$.provider.blank.options.apiKey",
            f'key missing: {tmp_path / "empty"} is empty; "blank" starts disabled '
            "(write the key into it, then reload)",
        ),
    ]


async def test_key_file_that_is_a_fifo_or_too_big_is_refused_at_once(tmp_path: Path) -> None:
    """A {file:} naming a FIFO is refused without waiting on it, and one over 64 KiB
    is refused: both are problems naming the path."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "huge").write_bytes(b"k" * (KEY_FILE_LIMIT + 1))
    document = {
        "provider": {
            "a": {"api": "openai", "apiKey": "{file:fifo}"},
            "b": {"api": "openai", "apiKey": "{file:huge}"},
        }
    }
    with trio.fail_after(5):
        with pytest.raises(ConfigError) as info:
            await trio.to_thread.run_sync(
                partial(_load, tmp_path, document), abandon_on_cancel=True
            )
    assert list(info.value.problems) == [
        ("$.provider.a.apiKey", f"{{file:...}}: {tmp_path / 'fifo'}: not a regular file"),
        ("$.provider.b.apiKey", f"{{file:...}}: {tmp_path / 'huge'}: over 65536 bytes"),
    ]


def test_a_reference_must_be_the_whole_key() -> None:
    """A key with a reference inside other text is refused, never half-substituted."""
    assert problems_of({"provider": {"openai": {"apiKey": "sk-{env:SUFFIX}"}}}) == [
        (
            "$.provider.openai.apiKey",
            "a reference must be the whole value: {env:VAR} or {file:path}",
        )
    ]


def test_unsupported_providers_are_skipped_with_a_warning_and_the_rest_served() -> None:
    """An entry oswitch cannot speak to (an unsupported npm package, or one of
    OpenCode's own providers such as amazon-bedrock) is skipped with a warning naming
    it; the other entries become targets, numbered without gaps."""
    report = ConfigReport()
    config = parse_config(
        {
            "provider": {
                "amazon-bedrock": {"options": {"region": "us-east-1", "profile": "work"}},
                "openai-work": {"api": "openai", "apiKey": FAKE_KEY},
                "cohere": {"npm": "@ai-sdk/cohere", "options": {"apiKey": FAKE_KEY}},
                "vertex": {"api": "google-vertex"},
                "anthropic": {},
            }
        },
        report=report,
    )
    assert [t.target_id for t in config.targets] == ["openai-work", "anthropic"]
    assert report.warnings == [
        (
            "$.provider.amazon-bedrock",
            'skipped: "amazon-bedrock" is not supported: Amazon Bedrock signs its requests '
            "with AWS SigV4",
        ),
        (
            "$.provider.cohere.npm",
            'skipped: unsupported package "@ai-sdk/cohere": oswitch speaks the OpenAI and '
            "Anthropic APIs (use @ai-sdk/openai-compatible with options.baseURL)",
        ),
        (
            "$.provider.vertex.api",
            'skipped: "google-vertex" is not supported: Vertex AI signs in with Google Cloud '
            "credentials",
        ),
    ]
    assert FAKE_KEY not in repr(report)


def test_a_known_unsupported_name_behind_an_openai_compatible_proxy_is_served() -> None:
    """amazon-bedrock given a package and URL oswitch speaks (a proxy) is a target."""
    (target,) = parse_config(
        {
            "provider": {
                "amazon-bedrock": {
                    "npm": "@ai-sdk/openai-compatible",
                    "options": {"baseURL": "http://127.0.0.1:4000/v1"},
                }
            }
        }
    ).targets
    assert target.base_url == "http://127.0.0.1:4000/v1"


def test_a_file_of_only_unsupported_providers_is_invalid() -> None:
    """With every provider skipped there is nothing to serve: a problem naming them."""
    assert problems_of({"provider": {"amazon-bedrock": {}, "x": {"npm": "@ai-sdk/cohere"}}}) == [
        (
            "$.provider",
            'lists no provider oswitch can serve (skipped: "amazon-bedrock", "x"), and '
            "switcher.targets is not given",
        )
    ]


def test_a_target_asking_for_an_unsupported_provider_is_a_problem() -> None:
    """An explicit switcher target naming an unsupported entry is not skipped: it fails."""
    assert problems_of(
        {
            "provider": {"bedrock": {"npm": "@ai-sdk/amazon-bedrock"}},
            "switcher": {"targets": [{"target_id": "a", "provider_id": "bedrock"}]},
        }
    ) == [
        (
            "$.provider.bedrock.npm",
            'unsupported package "@ai-sdk/amazon-bedrock": oswitch speaks the OpenAI and '
            "Anthropic APIs (use @ai-sdk/openai-compatible with options.baseURL)",
        )
    ]


def test_report_knows_where_oswitchs_section_is() -> None:
    """The report says where oswitch's keys live: $.switcher in an opencode.json."""
    report = ConfigReport()
    parse_config({"provider": {"openai": {}}}, report=report)
    assert report.path_of("control", "token") == "$.switcher.control.token"
    report = ConfigReport()
    parse_config({"targets": [{"target_id": "a", "provider_id": "openai"}]}, report=report)
    assert report.path_of("control", "token") == "$.control.token"
