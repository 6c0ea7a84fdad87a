"""`oswitch check-config FILE`: exit codes, problem lines, the target summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    assert err == ""
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
    )
    assert done.returncode == 0, done.stderr
    assert "valid, 2 targets" in done.stdout


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`oswitch --version` prints the package's version and exits 0."""
    import oswitch

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"oswitch {oswitch.__version__}\n"
