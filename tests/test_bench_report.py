"""The bench's HTML report: summary table, overhead charts, chart axes, wording.

The report is built from hand-made results (no benchmark runs), so every figure a
chart must show is known exactly. Charts are parsed as XML, never matched as text.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from html.parser import HTMLParser

import attrs
import pytest

from bench.harness import Check, ScenarioResult
from bench.overhead_result import ALL_VARIANTS, Cell, OverheadResult, OverheadSettings, RoutingCell
from bench.record import BucketFigures, Figures, Percentiles
from bench.report import (
    RunReport,
    latency_svg,
    overhead_targets,
    summary,
    to_html,
    traffic_svg,
)
from bench.report.overhead_svg import cpu_svg, latency_cells_svg, routing_svg
from bench.report.summary import summary_rows
from bench.scenarios import SCENARIOS
from bench.soak import MemoryPoint, SoakResult

SVG = "{http://www.w3.org/2000/svg}"


def _percentiles(p50: float | None, p99: float | None, count: int = 100) -> Percentiles:
    return Percentiles(count=count, p50=p50, p95=p99, p99=p99, max=p99)


def _figures(*, failed_at: Sequence[int] = (), buckets: int = 10) -> Figures:
    """Ten 2 s buckets of 20 requests over two targets; ``failed_at`` buckets lost 3."""
    rows = tuple(
        BucketFigures(
            start_s=2.0 * i,
            attempts={"key-a": 10, "key-b": 10},
            served={"key-a": 10, "key-b": 10 - (3 if i in failed_at else 0)},
            requests=20,
            failed=3 if i in failed_at else 0,
            latency_p50_ms=500.0 + 10 * i,
            latency_p99_ms=900.0 + 40 * i,
        )
        for i in range(buckets)
    )
    lost = 3 * len(failed_at)
    return Figures(
        requests=20 * buckets,
        succeeded=20 * buckets - lost,
        success_rate=(20 * buckets - lost) / (20 * buckets),
        errors={"AllTargetsFailed": lost} if lost else {},
        latency=_percentiles(520.0, 1250.0),
        ttft=_percentiles(480.0, 1100.0),
        cpu_ms_per_request=0.8,
        wall_s=1.0,
        clock_s=2.0 * buckets,
        peak_rss_mb=50.0,
        text_mismatches=0,
        attempts_by_target={"key-a": 10 * buckets, "key-b": 10 * buckets},
        served_by_target={"key-a": 10 * buckets, "key-b": 10 * buckets - lost},
        transitions=(),
        bucket_s=2.0,
        buckets=rows,
        conditions=((0.0, {"key-a": "Healthy", "key-b": "Healthy"}),),
    )


def _scenario(
    name: str, *, passed: Sequence[bool], failed_at: Sequence[int] = ()
) -> ScenarioResult:
    """A result of the real scenario ``name`` (its title and text) with made-up checks."""
    known = SCENARIOS[name]
    return ScenarioResult(
        name=name,
        title=known.title,
        proves=known.proves,
        mode="virtual",
        figures=_figures(failed_at=failed_at),
        checks=tuple(
            Check(name=f"expectation {i}", passed=ok, detail=f"measured {i}")
            for i, ok in enumerate(passed)
        ),
        target_ids=("key-a", "key-b"),
    )


CPU = {"httpx": 1.0, "embedded": 0.5, "embedded-httpx": 0.9, "sidecar": 2.5}


def _overhead(
    concurrencies: tuple[int, ...] = (1, 32, 256), *, judge_targets: bool = True
) -> OverheadResult:
    """Every variant at every concurrency, plain and streamed; CPU grows with both."""
    cells = tuple(
        Cell(
            variant=variant,
            streamed=streamed,
            concurrency=concurrency,
            requests=1000,
            rounds=3,
            cpu_ms_per_request=CPU[variant] * concurrency**0.5 * (1.5 if streamed else 1.0),
            cpu_ms_rounds=(1.0, 1.0, 1.0),
            latency=_percentiles(0.5 * concurrency, 3.0 * concurrency),
            ttft=_percentiles(0.4, 1.0) if streamed else _percentiles(None, None, count=0),
            throughput_rps=1000.0,
            peak_rss_mb=60.0,
            errors=0,
        )
        for streamed in (False, True)
        for concurrency in concurrencies
        for variant in ALL_VARIANTS
    )
    routing = tuple(
        RoutingCell(targets=n, requests=3000, cpu_ms_per_request=cpu, startup_s=n / 1e4, rss_mb=60)
        for n, cpu in ((0, 0.1), (3, 0.2), (100, 0.25), (1000, 0.3))
    )
    settings = attrs.evolve(OverheadSettings.full(), concurrencies=concurrencies)
    settings = attrs.evolve(settings, judge_targets=judge_targets)
    return OverheadResult(
        upstream="raw server, separate process", settings=settings, cells=cells, routing=routing
    )


def _soak(*, passed: Sequence[bool]) -> SoakResult:
    return SoakResult(
        requests=200,
        figures=_figures(),
        memory=(
            MemoryPoint(requests=0, rss_mb=40.0, objects=1000),
            MemoryPoint(requests=200, rss_mb=41.0, objects=1001),
        ),
        traces_kept=200,
        checks=tuple(Check(name=f"soak {i}", passed=ok, detail="d") for i, ok in enumerate(passed)),
    )


def _report(**changes: object) -> RunReport:
    base = RunReport(
        started="2026-01-01T00:00:00+00:00",
        argv=("python -m bench",),
        environment={"python": "3.11"},
        scenarios=(
            _scenario("steady", passed=[True, True, True]),
            _scenario("overload", passed=[True, False, True, True], failed_at=(3, 4)),
        ),
        overhead=_overhead(),
        soak=_soak(passed=[True, True]),
    )
    return attrs.evolve(base, **changes)


def _svg(markup: str) -> ET.Element:
    return ET.fromstring(markup)


def _all(root: ET.Element, tag: str, cls: str | None = None) -> list[ET.Element]:
    found = root.iter(SVG + tag)
    return [e for e in found if cls is None or e.get("class") == cls]


def _svgs(page: str) -> Iterator[ET.Element]:
    start = 0
    while (start := page.find("<svg", start)) != -1:
        end = page.index("</svg>", start) + len("</svg>")
        yield ET.fromstring(page[start:end])
        start = end


def _section(page: str, section_id: str) -> str:
    start = page.index(f'<section id="{section_id}">')
    return page[start : page.index("</section>", start)]


class _Text(HTMLParser):
    """The page's visible text (element content outside <style>), and its tables."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.rows: dict[str, list[list[str]]] = {}
        self._in_style = False
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_style = tag == "style"
        if tag == "table":
            self._table = dict(attrs).get("class") or ""
            self.rows.setdefault(self._table, [])
        elif tag == "tr" and self._table is not None:
            self.rows[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.rows[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._in_style:
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _parsed(page: str) -> _Text:
    parser = _Text()
    parser.feed(page)
    return parser


# ---- the overhead section -----------------------------------------------------------


@pytest.mark.parametrize("concurrencies", [(1, 32), (1, 32, 256)])
def test_cpu_chart_draws_one_bar_per_measured_cell(concurrencies: tuple[int, ...]) -> None:
    """The CPU chart has exactly one bar per measured cell (variant × mode × concurrency),
    each as tall as its CPU per request relative to the others in its panel."""
    result = _overhead(concurrencies)
    bars = _all(_svg(cpu_svg(result)), "rect", "cell")
    drawn = sorted(
        (b.get("data-variant"), b.get("data-mode"), int(b.get("data-concurrency") or 0))
        for b in bars
    )
    measured = sorted(
        (c.variant, "stream" if c.streamed else "plain", c.concurrency) for c in result.cells
    )
    assert drawn == measured
    panel = {
        b.get("data-variant"): float(b.get("height") or 0)
        for b in bars
        if b.get("data-mode") == "plain" and b.get("data-concurrency") == "1"
    }
    assert panel["sidecar"] / panel["httpx"] == pytest.approx(2.5, abs=0.02)
    assert panel["embedded"] / panel["httpx"] == pytest.approx(0.5, abs=0.02)


def test_cpu_chart_marks_the_bare_httpx_baseline_in_every_panel() -> None:
    """Every mode-and-concurrency panel has a dashed baseline at the bare httpx cell's
    value: level with the top of that cell's bar."""
    result = _overhead()
    root = _svg(cpu_svg(result))
    baselines = {
        (line.get("data-mode"), line.get("data-concurrency")): float(line.get("y1") or 0)
        for line in _all(root, "line", "baseline")
    }
    httpx_tops = {
        (bar.get("data-mode"), bar.get("data-concurrency")): float(bar.get("y") or 0)
        for bar in _all(root, "rect", "cell")
        if bar.get("data-variant") == "httpx"
    }
    assert len(baselines) == 2 * 3
    assert baselines == pytest.approx(httpx_tops, abs=0.06)
    labels = [t.text for t in _all(root, "text")]
    assert "bare httpx (baseline)" in labels
    assert "2.50×" in labels and "0.50×" in labels  # each bar says its ratio to httpx


def test_latency_and_routing_charts_show_every_cell() -> None:
    """The latency chart has a bar per cell and a whisker per cell whose p99 is above
    its p50; the routing chart a bar per routing cell and the 2x limit marker."""
    result = _overhead()
    latency = _svg(latency_cells_svg(result))
    assert len(_all(latency, "rect", "cell")) == len(result.cells)
    assert len(_all(latency, "line", "whisker")) == len(result.cells)
    assert len(_all(latency, "line", "baseline")) == 6
    routing = _svg(routing_svg(result))
    assert [r.get("data-targets") for r in _all(routing, "rect", "routing")] == [
        "0",
        "3",
        "100",
        "1000",
    ]
    (limit,) = _all(routing, "line", "limit")
    (three,) = [r for r in _all(routing, "rect", "routing") if r.get("data-targets") == "3"]
    left = float(three.get("x") or 0)
    assert float(limit.get("x1") or 0) - left == pytest.approx(
        2 * float(three.get("width") or 0), abs=0.2
    )


def test_the_overhead_section_is_charts_and_tables_not_text_dumps() -> None:
    """The page's overhead section holds the CPU, latency and routing charts and HTML
    tables of every cell, and no <pre> block."""
    report = _report()
    section = _section(to_html(report), "overhead")
    assert "<pre" not in section
    labels = [svg.get("aria-label") for svg in _svgs(section)]
    assert labels == [
        "CPU per request by mode and concurrency",
        "latency by mode and concurrency",
        "routing cost by number of targets",
    ]
    rows = _parsed(section).rows["figures"]
    cell_rows = [row for row in rows if row and row[0] in ("plain", "stream")]
    assert len(cell_rows) == len(report.overhead.cells if report.overhead else ())


# ---- the summary table --------------------------------------------------------------


def test_summary_table_has_a_row_per_part_matching_its_checks() -> None:
    """The table at the top has one row per scenario, the overhead run and the soak,
    in that order, each with its own checks passed / total and verdict."""
    report = _report()
    page = to_html(report)
    assert page.index('id="summary"') < page.index("<section")
    table = _parsed(page).rows["summary"]
    header, body = table[0], table[1:]
    assert header[:7] == [
        "part",
        "mode",
        "requests",
        "answered",
        "latency p50 / p99 ms",
        "checks passed",
        "result",
    ]
    expected = [
        (
            r.title,
            f"{sum(c.passed for c in r.checks)}/{len(r.checks)}",
            "PASS" if r.passed else "FAIL",
        )
        for r in report.scenarios
    ]
    targets = report.target_checks
    expected.append(
        (
            "Overhead vs a bare httpx call",
            f"{sum(c.passed for c in targets)}/{len(targets)}",
            "PASS" if all(c.passed for c in targets) else "FAIL",
        )
    )
    expected.append(("Soak", "2/2", "PASS"))
    assert [(row[0], row[5], row[6]) for row in body] == expected
    assert body[1][7] == "callers saw AllTargetsFailed x6; missed: expectation 1"
    assert [row.anchor for row in summary_rows(report)] == [
        "steady",
        "overload",
        "overhead",
        "soak",
    ]


def test_a_quick_overhead_run_is_not_judged_in_the_summary() -> None:
    """A quick overhead run's targets are shown but marked "not judged", as they do
    not decide the exit status."""
    report = _report(overhead=_overhead((1, 32), judge_targets=False), soak=None)
    (row,) = [r for r in summary_rows(report) if r.anchor == "overhead"]
    assert row.result == "not judged"
    assert row.checks_total == len(overhead_targets(_overhead((1, 32)))) > 0
    assert row.requests == f"{1000 * 3 * 4 * 2 * 2:,}"


# ---- scenario charts ----------------------------------------------------------------


def test_latency_chart_has_round_ticks_and_gridlines() -> None:
    """A scenario's latency chart labels round millisecond values from 0 past the
    highest p99, with a horizontal gridline at each and vertical ones at the time ticks."""
    figures = _figures()  # p99 rises to 900 + 40 * 9 = 1260 ms
    root = _svg(latency_svg(figures))
    labels = [t.text or "" for t in _all(root, "text", "tick-label")]
    assert labels == ["0", "500", "1000", "1500 ms"]
    grid = _all(root, "line", "grid")
    horizontal = [g for g in grid if g.get("y1") == g.get("y2")]
    vertical = [g for g in grid if g.get("x1") == g.get("x2")]
    assert len(horizontal) == len(labels) - 1
    assert len(vertical) >= 3
    assert len(_all(root, "line", "tick")) >= len(labels) + len(vertical)


def test_traffic_chart_has_no_failed_lane_when_nothing_failed() -> None:
    """The traffic chart draws its red "failed" lane and label only when a request
    failed; a clean run shows neither."""
    clean = _svg(traffic_svg(_scenario("steady", passed=[True])))
    assert "failed" not in [t.text for t in _all(clean, "text")]
    assert not [r for r in _all(clean, "rect") if r.get("fill") == "#d62728"]
    lossy = _svg(traffic_svg(_scenario("overload", passed=[True], failed_at=(3,))))
    assert "failed" in [t.text for t in _all(lossy, "text")]
    assert len([r for r in _all(lossy, "rect") if r.get("fill") == "#d62728"]) == 1


# ---- wording ------------------------------------------------------------------------


@pytest.mark.parametrize("judged", [True, False])
def test_the_page_and_summary_name_no_internal_issue_numbers(judged: bool) -> None:
    """Neither the page's visible text (every scenario's real title and text, the real
    overhead targets) nor the printed summary mentions an issue or a #number."""
    report = _report(
        scenarios=tuple(_scenario(name, passed=[True]) for name in SCENARIOS),
        overhead=_overhead(judge_targets=judged),
    )
    page = to_html(report)
    text = " ".join(_parsed(page).text)
    assert not re.search(r"#\d+|\bissues?\b", text, re.IGNORECASE), text
    assert not re.search(r"#\d+|\bissues?\b", summary(report), re.IGNORECASE)
    for svg in _svgs(page):
        assert svg.tag == SVG + "svg"  # every chart is well-formed
