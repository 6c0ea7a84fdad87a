"""docs/sidecar.md and examples/opencode-sidecar.json say what the sidecar really does."""

from __future__ import annotations

import argparse
import builtins
import io
import json
import re
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from oswitch.cli import build_parser
from oswitch.config import ServerConfig, SwitcherConfig, describe_targets, load_config
from oswitch.metrics import SwitcherMetrics
from oswitch.runtime.switcher import open_switcher
from oswitch.sidecar.serve import serve_sidecar
from oswitch.testing import FakeProvider, rate_limited, reply, stream
from support import config, target

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "sidecar.md"
SIDECAR_EXAMPLE = ROOT / "examples" / "opencode-sidecar.json"
OPENCODE_EXAMPLE = ROOT / "examples" / "opencode.json"
SIDECAR_URL = "http://127.0.0.1:8787/v1"
CONFIG_MARKER = "<!-- oswitch-config -->"
ANSWER = "Resilience is the art of failing over before anyone notices."


def _blocks() -> list[tuple[str, int, str, bool]]:
    """Every fenced block of the doc: (language, first line, source, marked as oswitch config)."""
    text = DOC.read_text(encoding="utf-8")
    pattern = rf"(?:^({re.escape(CONFIG_MARKER)})\n)?^```(\w+)\n(.*?)^```$"
    return [
        (match.group(2), text.count("\n", 0, match.start(2)) + 1, match.group(3), bool(match[1]))
        for match in re.finditer(pattern, text, flags=re.DOTALL | re.MULTILINE)
    ]


def _data_blocks() -> list[tuple[str, int, str]]:
    return [
        (lang, line, src) for lang, line, src, _ in _blocks() if lang in {"json", "toml", "ndjson"}
    ]


def _config_blocks() -> list[tuple[str, int, str]]:
    return [(lang, line, src) for lang, line, src, marked in _blocks() if marked]


def _table_column(heading: str) -> set[str]:
    """The backquoted first cells of the table that follows ``heading`` in the doc."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    table = section[section.index("\n|") :]
    cells = set()
    for row in table[: table.index("\n\n")].splitlines()[3:]:
        match = re.match(r"\| `([^`]+)`", row)
        assert match is not None, f"docs/sidecar.md: a row without a name under {heading}: {row}"
        cells.add(match[1])
    return cells


@pytest.mark.parametrize(
    ("lang", "line", "source"), _data_blocks(), ids=[f"line{b[1]}" for b in _data_blocks()]
)
def test_every_json_and_toml_block_parses(lang: str, line: int, source: str) -> None:
    """Every ```json, ```toml and ```ndjson block (each line of it) in docs/sidecar.md parses."""
    if lang == "toml":
        tomllib.loads(source)
    elif lang == "json":
        json.loads(source)
    else:
        for row in source.splitlines():
            assert isinstance(json.loads(row), dict), f"docs/sidecar.md:{line}: {row}"


def test_doc_marks_its_oswitch_configs() -> None:
    """The doc's config examples for oswitch are marked, so the load test below sees them."""
    assert {lang for lang, _, _ in _config_blocks()} == {"toml", "json"}
    assert len(_config_blocks()) >= 4


@pytest.mark.parametrize(
    ("lang", "line", "source"), _config_blocks(), ids=[f"line{b[1]}" for b in _config_blocks()]
)
def test_oswitch_config_examples_load(lang: str, line: int, source: str, tmp_path: Path) -> None:
    """oswitch.load_config accepts every config example the doc gives for oswitch, and none
    of them routes requests back into the sidecar itself."""
    path = tmp_path / f"example.{lang}"
    path.write_text(source, encoding="utf-8")
    loaded = load_config(path)
    assert loaded.targets, f"docs/sidecar.md:{line}"
    assert not [t.target_id for t in loaded.targets if (t.base_url or "").startswith(SIDECAR_URL)]


def test_opencode_sidecar_example_points_at_the_sidecar() -> None:
    """examples/opencode-sidecar.json is an OpenCode config whose only provider is the
    sidecar, through @ai-sdk/openai-compatible, and whose default models are its own."""
    document = json.loads(SIDECAR_EXAMPLE.read_text(encoding="utf-8"))
    assert "switcher" not in document
    (provider_id,) = document["provider"]
    provider = document["provider"][provider_id]
    assert provider["npm"] == "@ai-sdk/openai-compatible"
    assert provider["options"]["baseURL"] == SIDECAR_URL
    for key in ("model", "small_model"):
        owner, _, model = document[key].partition("/")
        assert (owner, model in provider["models"]) == (provider_id, True)


def test_doc_shows_the_opencode_sidecar_example_as_shipped() -> None:
    """The OpenCode config shown in the doc is examples/opencode-sidecar.json, unchanged."""
    shown = [
        json.loads(src)
        for lang, _, src, _ in _blocks()
        if lang == "json" and "@ai-sdk/openai-compatible" in src
    ]
    assert shown == [json.loads(SIDECAR_EXAMPLE.read_text(encoding="utf-8"))]


async def test_opencode_sidecar_models_are_what_oswitch_serves_from_opencode_json() -> None:
    """Every model the OpenCode-side example lists is one GET /v1/models names when oswitch
    reads examples/opencode.json, as the doc's worked example pairs them."""
    served_config = load_config(OPENCODE_EXAMPLE)
    listed = json.loads(SIDECAR_EXAMPLE.read_text(encoding="utf-8"))["provider"]["oswitch"]
    async with open_switcher(served_config, transport=FakeProvider().transport()) as switcher:
        served = switcher.models()
    assert set(listed["models"]) <= set(served)
    shown = json.loads(
        next(src for lang, _, src, _ in _blocks() if lang == "json" and "llama3.1:8b" in src)
    )
    assert [model["id"] for model in shown["data"]] == served


def test_opencode_sidecar_read_as_oswitch_config_loops_to_itself() -> None:
    """Read by oswitch, the OpenCode-side file would make the sidecar its own target, as the
    doc warns, and the doc quotes check-config's line for it exactly."""
    loaded = load_config(SIDECAR_EXAMPLE)
    assert [(t.target_id, t.base_url) for t in loaded.targets] == [("oswitch", SIDECAR_URL)]
    (line,) = describe_targets(loaded, environ={})
    assert f"  {line}\n" in DOC.read_text(encoding="utf-8")


def test_flags_table_matches_oswitch_serve() -> None:
    """The doc's flag table lists exactly the options `oswitch serve` takes."""
    subcommands = next(
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    serve = subcommands.choices["serve"]
    options = {
        option
        for action in serve._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    documented = {cell.split()[0] for cell in _table_column("## Command line")}
    assert documented == options


async def test_metrics_reference_lists_every_exported_series() -> None:
    """The metrics reference names every series /metrics exports, and no other."""
    async with open_switcher(config(target("a")), transport=FakeProvider().transport()) as switcher:
        text = SwitcherMetrics(switcher).render().decode()
    exported = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in text_string_to_metric_families(text)
        if not family.name.endswith("_created")
    }
    assert _table_column("## Metrics reference") == exported


@asynccontextmanager
async def _gateway(fake: FakeProvider, cfg: SwitcherConfig) -> AsyncIterator[str]:
    """A sidecar for ``cfg`` on 127.0.0.1:<free port>, its upstreams played by ``fake``."""
    shutdown = trio.Event()
    # The SDK clients keep their connections open, which would hold shutdown for the grace.
    server = ServerConfig(shutdown_grace_ms=200)
    async with (
        open_switcher(cfg, transport=fake.transport()) as switcher,
        trio.open_nursery() as nursery,
    ):
        port = await nursery.start(
            partial(serve_sidecar, switcher, port=0, server=server, shutdown_trigger=shutdown)
        )
        yield f"http://127.0.0.1:{port}/v1"
        shutdown.set()


def _run_python_block(source: str, base_url: str) -> list[str]:
    """Run one of the doc's Python examples against ``base_url``; return what it printed."""
    assert SIDECAR_URL in source
    out = io.StringIO()

    def capture(*args: Any, **kwargs: Any) -> None:
        kwargs.pop("file", None)
        builtins.print(*args, file=out, **kwargs)

    code = compile(source.replace(SIDECAR_URL, base_url), str(DOC), "exec")
    exec(code, {"__name__": "sidecar_doc_example", "print": capture})
    return out.getvalue().splitlines()


async def test_python_sdk_examples_run_as_documented() -> None:
    """The doc's OpenAI SDK examples work against a real sidecar: whole answers, streamed and
    not, with the oswitch summary; and a rate limit surfaces as RateLimitError with its id."""
    python = [src for lang, _, src, _ in _blocks() if lang == "python"]
    (happy,) = [src for src in python if "stream=True" in src]
    (failing,) = [src for src in python if "APIStatusError" in src]
    fake = FakeProvider()
    fake.on("key-mini", reply(ANSWER), stream(ANSWER))
    fake.on("key-4o", rate_limited(20.0))
    cfg = config(target("mini", model="gpt-4.1-mini"), target("4o", model="gpt-4o"))
    with trio.fail_after(20):
        async with _gateway(fake, cfg) as base_url:
            printed = await trio.to_thread.run_sync(_run_python_block, happy, base_url)
            refused = await trio.to_thread.run_sync(_run_python_block, failing, base_url)
    assert printed[0] == ANSWER
    assert re.fullmatch(
        r"gpt-4\.1-mini \{'request_id': 'req_[0-9a-f]{20}', 'target_id': 'mini', 'attempts': 1\}",
        printed[1],
    )
    assert printed[2:] == [ANSWER]
    assert refused[0] == "RateLimitError 429 20"
    assert re.fullmatch(r"req_[0-9a-f]{20}", refused[1])
    assert "'code': 'RateLimited'" in refused[2]
