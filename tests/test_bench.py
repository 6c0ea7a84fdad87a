"""The bench harness: every scenario's expectations, its outputs and its command line.

Scenarios run in virtual time (trio's MockClock), so each takes a second or two. A
failing scenario test is a claim oswitch does not keep: its message starts with
BUG and lists the expectations missed, with what was measured.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import attrs
import pytest

from bench.cli import main
from bench.harness import VIRTUAL, WIRE, run_scenario
from bench.overhead import run_overhead
from bench.overhead_result import OverheadSettings
from bench.report import overhead_targets
from bench.rounds import cell_warm_up
from bench.scenarios import SCENARIOS, sampling_slack
from bench.soak import run_soak
from bench.subjects import TRACE_CAPACITY, embedded_config


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_meets_its_expectations(name: str) -> None:
    """Each scenario, run in virtual time, meets every expectation it checks."""
    result = run_scenario(SCENARIOS[name], VIRTUAL)
    assert result.mode == "virtual"
    assert result.figures.requests >= 0.8 * SCENARIOS[name].planned_requests
    assert len(result.checks) >= 4
    failed = [f"{check.name} ({check.detail})" for check in result.checks if not check.passed]
    assert not failed, f"BUG: {name} missed: " + "; ".join(failed)


def test_a_scenario_runs_over_the_wire_through_the_sidecar() -> None:
    """Over real sockets (caller → sidecar → loopback upstream) a short steady run
    answers every request whole, and reports itself as a wire run."""
    scenario = attrs.evolve(SCENARIOS["steady"], load=((8.0, 20.0),))
    result = run_scenario(scenario, WIRE)
    figures = result.figures
    assert result.mode == "wire"
    assert figures.requests > 10
    assert figures.succeeded == figures.requests, dict(figures.errors)
    assert figures.text_mismatches == 0
    assert sum(figures.served_by_target.values()) == figures.requests


def test_the_cli_writes_a_json_file_and_a_self_contained_html_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--scenario NAME --out DIR`` exits 0 on a passing scenario, prints the summary
    table and writes JSON that parses and HTML whose charts are well-formed SVG."""
    assert main(["--scenario", "revoked_key", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "revoked_key" in printed and "RESULT: PASS" in printed
    (json_path,) = tmp_path.glob("*.json")
    (html_path,) = tmp_path.glob("*.html")
    data = json.loads(json_path.read_text())
    assert data["passed"] is True
    (scenario,) = data["scenarios"]
    assert scenario["name"] == "revoked_key" and scenario["mode"] == "virtual"
    assert scenario["figures"]["requests"] == scenario["figures"]["succeeded"] > 0
    assert {"p50", "p95", "p99"} <= set(scenario["figures"]["latency"])
    assert any(t["state"] == "ReauthRequired" for t in scenario["figures"]["transitions"])
    assert all(check["passed"] for check in scenario["checks"])

    page = html_path.read_text()

    class Collector(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tags.append(tag)

    collector = Collector()
    collector.feed(page)
    assert collector.tags.count("svg") == 3
    assert "script" not in collector.tags and "link" not in collector.tags
    start = 0
    while (start := page.find("<svg", start)) != -1:
        end = page.index("</svg>", start) + len("</svg>")
        ET.fromstring(page[start:end])  # raises if a chart is not well-formed
        start = end


def test_list_names_every_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    """``--list`` prints one line per scenario, name first, and exits 0."""
    assert main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(SCENARIOS)


def test_an_unknown_scenario_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown ``--scenario`` exits 2 and names the scenarios there are."""
    assert main(["--scenario", "nope"]) == 2
    assert "unknown scenario(s): nope; choose from steady" in capsys.readouterr().err


def test_overhead_measures_every_variant_against_the_same_upstream() -> None:
    """A tiny overhead run (upstream in a child process) fills every cell without
    errors and yields a ratio to bare httpx for each, and a routing figure per size."""
    settings = OverheadSettings(
        concurrencies=(1, 4),
        requests=20,
        rounds=1,
        routing_targets=(3, 30),
        routing_requests=20,
        variants=("httpx", "embedded", "embedded-httpx", "sidecar"),
    )
    result = run_overhead(settings)
    assert result.upstream == "raw server, separate process"
    assert len(result.cells) == 4 * 2 * 2
    for cell in result.cells:
        assert cell.errors == 0, cell
        assert cell.requests == 20 and cell.cpu_ms_per_request > 0
        assert result.ratio(cell.variant, cell.streamed, cell.concurrency) is not None
        assert (cell.ttft.count > 0) == cell.streamed
    assert [c.targets for c in result.routing] == [0, 3, 30]
    names = [check.name for check in overhead_targets(result)]
    assert "routing cost at 1,000 targets <= 2x at 3" not in names  # no 1,000 here
    assert sum("embedded CPU/request" in name for name in names) == 4


def test_the_full_run_warms_oswitch_up_until_its_trace_store_is_full() -> None:
    """``--overhead`` counts oswitch's cells once the engine keeps as many traces as it
    ever will (its steady state); the other variants, and the suite's quick run, warm up
    only to open their connections."""
    assert OverheadSettings.full().steady_state and not OverheadSettings.quick().steady_state
    capacity = embedded_config("http://127.0.0.1:1/v1").trace_capacity
    assert TRACE_CAPACITY == capacity == 1000
    for variant in ("embedded", "embedded-httpx", "sidecar", "sidecar-own"):
        assert cell_warm_up(variant, 32, steady_state=True) == 32 + capacity
        assert cell_warm_up(variant, 256, steady_state=False) == 256
    for variant in ("httpx", "aiohttp"):
        assert cell_warm_up(variant, 1, steady_state=True) == 20


def test_soak_reports_memory_from_start_to_end() -> None:
    """A short soak with faults ends every request and reports memory at the start,
    at each tenth and at the end."""
    result = run_soak(400)
    assert result.figures.requests == 400
    assert [m.requests for m in result.memory] == [0, *range(40, 401, 40)]
    assert all(m.rss_mb > 0 for m in result.memory)
    failed = [f"{check.name} ({check.detail})" for check in result.checks if not check.passed]
    assert not failed, "BUG: soak missed: " + "; ".join(failed)


def test_share_checks_allow_for_sampling_noise_shrinking_with_the_sample() -> None:
    """Two standard errors: about 6 points over 100 samples at 10%, under 1 over 10,000,
    none when nothing was counted."""
    assert sampling_slack(0.10, 100) == pytest.approx(0.06)
    assert sampling_slack(0.10, 10_000) == pytest.approx(0.006)
    assert sampling_slack(0.10, 0) == 0.0
