"""`oswitch check-config FILE`: exit codes, problem lines, the target summary."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from oswitch import cli
from oswitch.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FAKE_KEY = "sk-test-OSWITCH-FAKE-KEY-7f3a9c"


def test_valid_file_prints_the_targets_and_exits_0(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A valid config prints one line per target, with key sources, and exits 0."""
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "")
    path = str(EXAMPLES / "oswitch.toml")
    assert main(["check-config", path]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "warning: openrouter-backup: key missing: set OPENROUTER_API_KEY",
        "warning: anthropic-haiku: key missing: set ANTHROPIC_API_KEY",
    ]
    assert out.splitlines() == [
        f"{path}: valid, 3 targets",
        "  openai-direct: provider openai; api openai; https://api.openai.com/v1; "
        "model gpt-4.1-mini; serves gpt-4.1-mini; priority 1; key env OPENAI_API_KEY (set)",
        "  openrouter-backup: provider openrouter; api openai; https://openrouter.ai/api/v1; "
        "model openai/gpt-4.1-mini; serves gpt-4.1-mini; priority 0; "
        "key env OPENROUTER_API_KEY (missing → starts ReauthRequired)",
        "  anthropic-haiku: provider anthropic; api anthropic; https://api.anthropic.com/v1; "
        "model claude-3-5-haiku-latest; serves claude-3-5-haiku-latest; priority 1; "
        "key env ANTHROPIC_API_KEY (missing → starts ReauthRequired)",
    ]
    assert FAKE_KEY not in out


def test_broken_file_prints_every_problem_to_stderr_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An invalid config prints 'reason @ path' per problem on stderr, nothing on stdout."""
    assert main(["check-config", str(EXAMPLES / "broken.toml")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "conflicts with retry_budget (2 vs 4): give only one of them @ $.retry",
        "unknown key 'retry_budgett' (did you mean 'retry_budget'?) @ $.retry_budgett",
        'expected an integer (got "three") @ $.targets[0].concurrency_limit',
        "give api_key or api_key_env, not both @ $.targets[0].api_key",
        'must be one of openai, anthropic (got "gemini") @ $.targets[1].api',
        'expected true or false (got "yes") @ $.targets[1].enabled',
        "must be > 0 (got -3) @ $.targets[1].rate_limit.requests_per_minute",
        'missing: required, as "acme-llm" is not a well-known provider @ $.targets[1].base_url',
        "missing required key @ $.targets[2].target_id",
        "must be > 0 (got 0) @ $.targets[2].first_token_timeout_ms",
        'must be one of full, equal, none (got "fulll") @ $.backoff.jitter',
        "must be >= base_ms (got 500 < 2000) @ $.backoff.max_ms",
        "must be in (0, 1] (got 1.5) @ $.circuit_breaker.failure_rate_threshold",
        "must be a port number, 0 to 65535 (got 80800) @ $.server.port",
        "must be <= queue_limit (got 40 > 20) @ $.backpressure_threshold",
        'duplicate target_id "primary" (first used by targets[0]) @ $.targets[1].target_id',
    ]
    assert "sk-demo" not in err


def test_opencode_file_is_summarised(capsys: pytest.CaptureFixture[str]) -> None:
    """check-config on an opencode.json lists the discovered targets."""
    assert main(["check-config", str(EXAMPLES / "opencode.json")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith("opencode.json: valid, 3 targets")
    assert [line.split(":")[0].strip() for line in out.splitlines()[1:]] == [
        "anthropic",
        "openai",
        "ollama",
    ]
    assert "ollama: provider ollama; api openai; http://localhost:11434/v1" in out
    assert out.rstrip().endswith("key none")


def test_inline_keys_are_shown_as_hidden(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A target with an inline key reports 'inline (hidden)' and never the key."""
    path = tmp_path / "inline.json"
    path.write_text(
        json.dumps({"targets": [{"target_id": "a", "provider_id": "openai", "api_key": FAKE_KEY}]})
    )
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"{path}: valid, 1 target",
        "  a: provider openai; api openai; https://api.openai.com/v1; model (passthrough); "
        "serves *; priority 0; key inline (hidden)",
    ]


def test_missing_file_exits_2_naming_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A file that does not exist is reported on stderr with exit code 2."""
    path = tmp_path / "absent.toml"
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err == f"cannot read file: No such file or directory @ {path}\n"


def test_syntax_error_exits_2_with_file_line_and_column(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A syntax error is one stderr line naming FILE:LINE:COL."""
    path = tmp_path / "bad.json"
    path.write_text('{"targets": [}')
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err == f"invalid JSON: Expecting value @ {path}:1:14\n"


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """No subcommand, an unknown one, or a missing FILE returns 2 with usage on stderr."""
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["check-config"]) == 2
    err = capsys.readouterr().err
    assert err.count("usage: oswitch") == 3


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """--help prints the subcommands and returns 0."""
    assert main(["--help"]) == 0
    assert "check-config" in capsys.readouterr().out


def test_run_exits_the_process_with_mains_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """The console-script entry point exits with main()'s return value."""
    monkeypatch.setattr(sys, "argv", ["oswitch", "check-config", str(EXAMPLES / "broken.toml")])
    with pytest.raises(SystemExit) as info:
        cli.run()
    assert info.value.code == 2


def test_python_dash_m_oswitch_runs_check_config() -> None:
    """`python -m oswitch check-config FILE` works as a real process."""
    done = subprocess.run(
        [sys.executable, "-m", "oswitch", "check-config", str(EXAMPLES / "o-switcher-full.json")],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
        env={**os.environ, "ANTHROPIC_API_KEY": FAKE_KEY, "OPENAI_API_KEY": FAKE_KEY},
    )
    assert done.returncode == 0, done.stderr
    assert "valid, 2 targets" in done.stdout


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`oswitch --version` prints the package's version and exits 0."""
    import oswitch

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"oswitch {oswitch.__version__}\n"


# ---------------------------------------------------------------------------
# Issue 14: keys named, exit codes 0 / 1 / 2, what serve refuses, unsafe settings

HEADLINE = """{"provider": {
   "openai-work":     {"api": "openai", "apiKey": "sk-work-key-111"},
   "openai-personal": {"api": "openai", "apiKey": "sk-personal-222"},
   "openai-backup":   {"api": "openai", "apiKey": "sk-backup-333"}},
 "plugin": ["@apolenkov/o-switcher@latest"]}
"""
ONE_TARGET = {"target_id": "openai-work", "provider_id": "openai"}


def _check(
    tmp_path: Path,
    document: Any,
    capsys: pytest.CaptureFixture[str],
    *flags: str,
    name: str = "config.json",
) -> tuple[int, str, str, Path]:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    code = main(["check-config", *flags, str(path)])
    out, err = capsys.readouterr()
    return code, out, err, path


def test_headline_opencode_config_is_valid_with_three_targets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """o-switcher's getting-started opencode.json, keys written in it, checks clean."""
    code, out, err, path = _check(tmp_path, HEADLINE, capsys, name="opencode.json")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{path}: valid, 3 targets",
        *(
            f"  {name}: provider {name}; api openai; https://api.openai.com/v1; "
            "model (passthrough); serves *; priority 0; key inline (hidden)"
            for name in ("openai-work", "openai-personal", "openai-backup")
        ),
    ]
    for key in ("sk-work-key-111", "sk-personal-222", "sk-backup-333"):
        assert key not in out


def test_the_only_key_missing_is_named_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config whose only key variable is unset names the target and the variable to
    set, and exits 1: valid, but nothing can be served."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    code, out, err, path = _check(
        tmp_path, {"provider": {"openai-work": {"api": "openai"}}}, capsys
    )
    assert code == 1
    assert out.splitlines()[0] == f"{path}: valid, 1 target"
    assert err.splitlines() == [
        "warning: openai-work: key missing: set OPENAI_API_KEY",
        f"{path}: no target can serve a request: each is disabled or missing its key",
    ]


def test_a_missing_key_beside_a_working_one_is_a_warning_and_strict_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One target without its key while another has one: exit 0 with the warning;
    under --strict the same warning exits 1."""
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    document = {
        "targets": [ONE_TARGET, {"target_id": "groq-a", "provider_id": "groq", "model": "m"}]
    }
    code, _, err, _ = _check(tmp_path, document, capsys)
    assert (code, err) == (0, "warning: groq-a: key missing: set GROQ_API_KEY\n")
    code, _, err, _ = _check(tmp_path, document, capsys, "--strict")
    assert (code, err) == (1, "warning: groq-a: key missing: set GROQ_API_KEY\n")
    assert FAKE_KEY not in err


def test_every_target_disabled_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid config whose targets are all disabled can serve nothing: exit 1."""
    document = {"targets": [{**ONE_TARGET, "api_key": FAKE_KEY, "enabled": False}]}
    code, _, err, path = _check(tmp_path, document, capsys)
    assert (code, err) == (
        1,
        f"{path}: no target can serve a request: each is disabled or missing its key\n",
    )


def test_a_control_port_without_a_token_is_invalid_as_serve_refuses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A control port with no token anywhere is what serve refuses: exit 2, serve's
    own reason, at the token's path (inside $.switcher in an opencode.json)."""
    monkeypatch.delenv("OSWITCH_CONTROL_TOKEN", raising=False)
    document = {"targets": [{**ONE_TARGET, "api_key": FAKE_KEY}], "control": {"port": 8788}}
    code, out, err, _ = _check(tmp_path, document, capsys)
    assert (code, out) == (2, "")
    assert err == (
        "the control channel needs a token: set control.token or OSWITCH_CONTROL_TOKEN "
        "@ $.control.token\n"
    )
    document = {
        "provider": {"openai": {"apiKey": FAKE_KEY}},
        "switcher": {"control": {"port": 8788, "token_env": "MY_TOKEN"}},
    }
    code, _, err, _ = _check(tmp_path, document, capsys)
    assert (code, err) == (
        2,
        "the control channel needs a token: set control.token or MY_TOKEN "
        "@ $.switcher.control.token\n",
    )
    monkeypatch.setenv("MY_TOKEN", "t0ken-from-env")
    code, _, err, _ = _check(tmp_path, document, capsys)
    assert (code, err) == (0, "")


def test_control_on_the_sidecars_port_is_invalid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The control channel on server.port (same host) cannot both listen: exit 2."""
    document = {
        "targets": [{**ONE_TARGET, "api_key": FAKE_KEY}],
        "server": {"port": 9000},
        "control": {"port": 9000, "token": "a-control-token"},
    }
    code, _, err, _ = _check(tmp_path, document, capsys)
    assert (code, err) == (
        2,
        "the same port as server.port (9000): oswitch serve cannot listen on both "
        "@ $.control.port\n",
    )


def test_unsafe_and_contradictory_settings_are_warned_about_at_their_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each contradictory or unsafe setting is one warning naming its path (exit 0;
    --strict exits 1), and no secret appears in any of them."""
    document = {
        "request_timeout_ms": 20000,
        "max_expected_latency_ms": 30000,
        "failover_budget": 0,
        "hedge_after_ms": 2000,
        "fallbacks": {"gpt-4.1": ["claude-sonnet-4-5", "gpt-4.1-mini"]},
        "targets": [
            {**ONE_TARGET, "api_key": FAKE_KEY, "model": "gpt-4.1"},
            {
                "target_id": "openai-again",
                "provider_id": "openai",
                "api_key": FAKE_KEY,
                "model": "gpt-4.1",
                "first_token_timeout_ms": 25000,
            },
            {"target_id": "mini", "provider_id": "ollama", "model": "gpt-4.1-mini"},
        ],
        "server": {"host": "0.0.0.0"},
        "control": {"host": "0.0.0.0", "port": 8788, "token": "a-control-token"},
    }
    code, _, err, _ = _check(tmp_path, document, capsys)
    assert code == 0
    assert err.splitlines() == [
        "warning: shorter than max_expected_latency_ms (20000 ms < 30000 ms): a slow "
        "non-streamed answer ends the whole request instead of failing over "
        "@ $.request_timeout_ms",
        "warning: not shorter than request_timeout_ms (25000 ms >= 20000 ms): a silent "
        "stream is never abandoned for another target; the request times out first "
        "@ $.targets[1].first_token_timeout_ms",
        "warning: no hedge can start: each hedge spends one of failover_budget, which is 0 "
        "@ $.hedge_after_ms",
        'warning: "0.0.0.0" is reachable from other machines and server.api_keys is empty: '
        "anyone who reaches it spends your providers' keys (set server.api_keys, or bind "
        '"127.0.0.1") @ $.server.host',
        'warning: the control channel on "0.0.0.0" is plain ws://: its token crosses the '
        'network in clear (bind "127.0.0.1" and reach it through an SSH tunnel) '
        "@ $.control.host",
        'warning: no target serves "claude-sonnet-4-5" @ $.fallbacks["gpt-4.1"][0]',
        'warning: same key, endpoint and model as "openai-work": the two share one rate '
        "limit, so failing over between them gains nothing @ $.targets[1].api_key",
    ]
    assert FAKE_KEY not in err and "a-control-token" not in err
    assert _check(tmp_path, document, capsys, "--strict")[0] == 1


def test_opencode_warnings_point_into_the_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In an opencode.json a skipped provider is warned about at its entry and a
    setting at its place under $.switcher."""
    document = {
        "provider": {
            "amazon-bedrock": {"options": {"region": "us-east-1"}},
            "openai": {"apiKey": FAKE_KEY},
        },
        "switcher": {"timeout": 200000, "server": {"host": "::"}},
    }
    code, out, err, path = _check(tmp_path, document, capsys, name="opencode.json")
    assert code == 0
    assert out.splitlines()[0] == f"{path}: valid, 1 target"
    assert err.splitlines() == [
        'warning: skipped: "amazon-bedrock" is not supported: Amazon Bedrock signs its '
        "requests with AWS SigV4 @ $.provider.amazon-bedrock",
        "warning: shorter than max_expected_latency_ms (120000 ms < 200000 ms): a slow "
        "non-streamed answer ends the whole request instead of failing over "
        "@ $.switcher.request_timeout_ms",
        'warning: "::" is reachable from other machines and server.api_keys is empty: '
        "anyone who reaches it spends your providers' keys (set server.api_keys, or bind "
        '"127.0.0.1") @ $.switcher.server.host',
    ]


def test_quickstart_shows_what_check_config_really_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/quickstart.md's opencode.json is the headline config, its check-config output
    and missing-key warning are oswitch's own, and its OpenCode file names the sidecar."""
    doc = (EXAMPLES.parent / "docs" / "quickstart.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```(\w+)\n(.*?)^```$", doc, flags=re.DOTALL | re.MULTILINE)
    shown_json = [source for lang, source in blocks if lang == "json"]
    shown_text = [source for lang, source in blocks if lang == "text"]
    assert shown_json[0] == HEADLINE
    monkeypatch.chdir(tmp_path)
    (tmp_path / "opencode.json").write_text(shown_json[0])
    assert main(["check-config", "opencode.json"]) == 0
    assert capsys.readouterr().out == shown_text[0]

    monkeypatch.delenv("OPENAI_WORK_KEY", raising=False)
    with_env = json.loads(HEADLINE)
    with_env["provider"]["openai-work"]["apiKey"] = "{env:OPENAI_WORK_KEY}"
    (tmp_path / "opencode.json").write_text(json.dumps(with_env))
    assert main(["check-config", "opencode.json"]) == 0
    assert capsys.readouterr().err == shown_text[1]

    sidecar = json.loads(shown_json[1])["provider"]["oswitch"]
    assert (sidecar["npm"], sidecar["options"]["baseURL"]) == (
        "@ai-sdk/openai-compatible",
        "http://127.0.0.1:8787/v1",
    )


def test_missing_key_file_is_warned_about_and_its_target_shown_disabled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A {file:} key that is not there is a warning naming the file; its target is listed
    disabled and the others still serve (exit 0)."""
    (tmp_path / "personal.key").write_text("sk-personal-222\n")
    document = {
        "provider": {
            "openai-work": {"api": "openai", "apiKey": "{file:work.key}"},
            "openai-personal": {"api": "openai", "apiKey": "{file:personal.key}"},
        }
    }
    code, out, err, _ = _check(tmp_path, document, capsys, name="opencode.json")
    assert code == 0
    assert out.splitlines()[1].endswith("key none; disabled")
    assert err == (
        f'warning: key missing: {tmp_path / "work.key"} does not exist; "openai-work" starts '
        "disabled (create it, then reload) @ $.provider.openai-work.apiKey\n"
    )
    assert "sk-personal-222" not in out + err
