"""The run as one self-contained HTML page: no script, nothing loaded from elsewhere."""

from __future__ import annotations

from collections.abc import Sequence

from bench.harness import Check, ScenarioResult
from bench.overhead_result import OverheadResult
from bench.report.overhead_svg import overhead_charts
from bench.report.run import RunReport
from bench.report.summary import SummaryRow, summary_rows
from bench.report.svg import conditions_svg, escaped, latency_svg, traffic_svg
from bench.report.text import (
    FLOOR_HEADING,
    INDICATIVE,
    OVERHEAD_HEADERS,
    ROUTING_HEADERS,
    SIDECAR_HEADERS,
    TARGETS_HEADING,
    errors_seen,
    fmt,
    overhead_rows,
    overhead_settings_line,
    routing_rows,
    sidecar_rows,
)
from bench.soak import SoakResult


def _html_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, css_class: str = ""
) -> str:
    head = "".join(f"<th>{escaped(h)}</th>" for h in headers)
    cells = ("".join(f"<td>{escaped(c)}</td>" for c in row) for row in rows)
    body = "".join(f"<tr>{row}</tr>" for row in cells)
    opening = f'<table class="{css_class}">' if css_class else "<table>"
    return f"{opening}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _checks_html(checks: Sequence[Check]) -> str:
    items = "".join(
        f'<li class="{"pass" if c.passed else "fail"}">{"✓" if c.passed else "✗"} '
        f"{escaped(c.name)} <span class=detail>— {escaped(c.detail)}</span></li>"
        for c in checks
    )
    return f'<ul class="checks">{items}</ul>'


def _result_class(result: str) -> str:
    return {"PASS": "pass", "FAIL": "fail"}.get(result, "detail")


def _summary_html(rows: Sequence[SummaryRow]) -> str:
    """The run at a glance: a linked row per part, with its checks and verdict."""
    headers = [
        "part",
        "mode",
        "requests",
        "answered",
        "latency p50 / p99 ms",
        "checks passed",
        "result",
        "notes",
    ]
    head = "".join(f"<th>{escaped(h)}</th>" for h in headers)
    body = "".join(
        f'<tr data-part="{escaped(row.anchor)}"><td><a href="#{escaped(row.anchor)}">'
        f"{escaped(row.part)}</a></td><td>{escaped(row.mode)}</td>"
        f'<td class="num">{escaped(row.requests)}</td>'
        f'<td class="num">{escaped(row.answered)}</td>'
        f'<td class="num">{escaped(row.latency)}</td>'
        f'<td class="num checks">{row.checks_passed}/{row.checks_total}</td>'
        f'<td class="{_result_class(row.result)}">{escaped(row.result)}</td>'
        f'<td class="detail">{escaped(row.notes)}</td></tr>'
        for row in rows
    )
    return (
        f'<table class="summary" id="summary"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _scenario_html(result: ScenarioResult) -> str:
    f = result.figures
    status = "PASS" if result.passed else "FAIL"
    figures = _html_table(
        [
            "requests",
            "answered",
            "errors seen by callers",
            "latency p50/p95/p99 ms",
            "TTFT p50/p95/p99 ms",
            "CPU ms/request",
            "transitions",
            "peak RSS MB",
            "time",
        ],
        [
            [
                str(f.requests),
                f"{f.success_rate:.1%}",
                errors_seen(f),
                f"{fmt(f.latency.p50)} / {fmt(f.latency.p95)} / {fmt(f.latency.p99)}",
                f"{fmt(f.ttft.p50)} / {fmt(f.ttft.p95)} / {fmt(f.ttft.p99)}",
                f"{f.cpu_ms_per_request:.2f}",
                str(len(f.transitions)),
                f"{f.peak_rss_mb:.0f}",
                f"{f.clock_s:g} s scenario, {f.wall_s:.1f} s wall",
            ]
        ],
    )
    share = ", ".join(
        f"{t}: {f.attempts_by_target.get(t, 0)} attempts / {f.served_by_target.get(t, 0)} served"
        for t in result.target_ids
    )
    transitions = (
        "; ".join(f"{t.at:.1f}s {t.target_id} {t.kind}→{t.state}" for t in f.transitions[:40])
        or "none"
    )
    if len(f.transitions) > 40:
        transitions += f"; … {len(f.transitions) - 40} more"
    mode = (
        "virtual time (trio MockClock, in-process MockTransport)"
        if result.mode == "virtual"
        else "real time over the wire (client → sidecar → loopback upstream), times scaled"
    )
    return (
        f'<section id="{escaped(result.name)}"><h2>{escaped(result.title)} '
        f'<span class="{status.lower()}">{status}</span></h2>'
        f"<p><code>{escaped(result.name)}</code> · mode: {escaped(mode)}</p>"
        f"<p>{escaped(result.proves)}</p>"
        f"{_checks_html(result.checks)}{figures}"
        f"<p class=detail>per target: {escaped(share)}</p>"
        f"<h3>Traffic share per target (attempts per {f.bucket_s:g} s bucket)</h3>"
        f"{traffic_svg(result)}"
        f"<h3>Condition and breaker per target</h3>{conditions_svg(result)}"
        f"<h3>Latency of answered requests</h3>{latency_svg(f)}"
        f"<p class=detail>transitions: {escaped(transitions)}</p></section>"
    )


def _overhead_html(report: RunReport, result: OverheadResult) -> str:
    charts = "".join(
        f"<h3>{escaped(heading)}</h3>{svg}" for heading, svg in overhead_charts(result)
    )
    note = "" if report.targets_count else f" <span class=detail>({escaped(INDICATIVE)})</span>"
    targets = ""
    for heading, checks in (
        (TARGETS_HEADING, report.target_checks),
        (FLOOR_HEADING, report.floor_checks),
    ):
        if checks:
            targets += f"<h3>{escaped(heading.capitalize())}{note}</h3>{_checks_html(checks)}"
    sidecar_cells = sidecar_rows(result)
    how = (
        "measured alone, its caller aiohttp in another process"
        if result.sidecar_own_measured
        else "estimated: sidecar cell less its bare httpx caller's"
    )
    sidecar = (
        f"<h3>The sidecar process's own CPU ({escaped(how)})</h3>"
        + _html_table(SIDECAR_HEADERS, sidecar_cells)
        if sidecar_cells
        else ""
    )
    return (
        '<section id="overhead"><h2>Overhead: oswitch vs a bare httpx call</h2>'
        f"<p>Real clock, loopback upstream ({escaped(result.upstream)}). CPU is this process's "
        "CPU time per request; the sidecar variant includes the calling client and the "
        "whole sidecar. Each panel is one mode (plain or streamed) at one concurrency, on "
        "its own scale; the dashed line is the bare httpx call measured beside it.</p>"
        f"{targets}{charts}"
        f"<h3>Every cell</h3>"
        f"{_html_table(OVERHEAD_HEADERS, overhead_rows(result), css_class='figures')}"
        f"{''.join(f'<p class=detail>{escaped(note)}</p>' for note in result.notes)}"
        f"<p class=detail>{escaped(overhead_settings_line(result))}</p>"
        f"{sidecar}"
        "<h3>Routing cost, null transport (concurrency 1)</h3>"
        f"{_html_table(ROUTING_HEADERS, routing_rows(result))}"
        "</section>"
    )


def _soak_html(result: SoakResult) -> str:
    f = result.figures
    rows = [[str(m.requests), f"{m.rss_mb}", str(m.objects)] for m in result.memory]
    status = "PASS" if result.passed else "FAIL"
    figures = (
        f"{f.requests:,} requests, {f.success_rate:.2%} answered, errors {errors_seen(f)}; "
        f"latency p50/p99 {fmt(f.latency.p50)}/{fmt(f.latency.p99)} ms (virtual); "
        f"CPU {f.cpu_ms_per_request:.2f} ms/request; {f.wall_s:.0f} s wall; peak "
        f"{f.peak_rss_mb:.0f} MB; traces kept {result.traces_kept}"
    )
    return (
        f'<section id="soak"><h2>Soak <span class="{status.lower()}">{status}</span></h2>'
        f"<p>{escaped(figures)}</p>{_checks_html(result.checks)}"
        "<h3>Memory after each tenth of the requests</h3>"
        f"{_html_table(['requests ended', 'RSS MB', 'live objects'], rows)}"
        f"<h3>Latency over the soak (virtual time)</h3>{latency_svg(result.figures)}</section>"
    )


HOW_TO_READ = (
    "<p class=detail>How to read the scenario charts: the stacked bars show, for each time "
    "bucket, which target each attempt went to (a failed-over request counts once per "
    "target it tried); a red mark under a bar means requests sent in that bucket "
    "failed. The bands show each target's condition as routing saw it, with a black "
    "tick at every breaker transition.</p>"
)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 900px; color: #222; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
h3 { font-size: 1em; margin: 1.2em 0 .3em; }
table { border-collapse: collapse; font-size: .85em; margin: .6em 0; }
td, th { border: 1px solid #ddd; padding: .25em .5em; text-align: left; }
td.num { text-align: right; white-space: nowrap; }
table.summary { font-size: .9em; width: 100%; }
table.figures { font-size: .78em; } table.figures td { white-space: nowrap; }
.pass { color: #1a7f37; } .fail { color: #cf222e; font-weight: bold; }
ul.checks { list-style: none; padding-left: 0; } .detail { color: #666; font-size: .9em; }
pre { font-size: .75em; background: #f6f8fa; padding: .6em; overflow-x: auto; }
svg { display: block; }
"""


def to_html(report: RunReport) -> str:
    """A self-contained HTML page for the run: no script, no external resource."""
    status = "PASS" if report.passed else "FAIL"
    env = ", ".join(f"{k}: {v}" for k, v in report.environment.items())
    body = "".join(_scenario_html(r) for r in report.scenarios)
    if report.overhead is not None:
        body += _overhead_html(report, report.overhead)
    if report.soak is not None:
        body += _soak_html(report.soak)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>oswitch bench {escaped(report.started)}</title><style>{STYLE}</style></head><body>"
        f'<h1>oswitch bench <span class="{status.lower()}">{status}</span></h1>'
        f"<p>{escaped(report.started)} · <code>{escaped(' '.join(report.argv))}</code></p>"
        f"<p class=detail>{escaped(env)}</p>{_summary_html(summary_rows(report))}"
        f"{HOW_TO_READ if report.scenarios else ''}{body}</body></html>"
    )
