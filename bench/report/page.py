"""The run as one self-contained HTML page: no script, nothing loaded from elsewhere."""

from __future__ import annotations

from collections.abc import Sequence

from bench.harness import Check, ScenarioResult
from bench.overhead import OverheadResult
from bench.report.run import RunReport
from bench.report.svg import conditions_svg, escaped, latency_svg, traffic_svg
from bench.report.text import errors_seen, fmt, overhead_table, soak_table, targets_table
from bench.soak import SoakResult


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{escaped(h)}</th>" for h in headers)
    cells = ("".join(f"<td>{escaped(c)}</td>" for c in row) for row in rows)
    body = "".join(f"<tr>{row}</tr>" for row in cells)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _checks_html(checks: Sequence[Check]) -> str:
    items = "".join(
        f'<li class="{"pass" if c.passed else "fail"}">{"✓" if c.passed else "✗"} '
        f"{escaped(c.name)} <span class=detail>— {escaped(c.detail)}</span></li>"
        for c in checks
    )
    return f'<ul class="checks">{items}</ul>'


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
    text = overhead_table(result)
    return (
        '<section id="overhead"><h2>Overhead: oswitch vs a bare httpx call</h2>'
        f"<p>Real clock, loopback upstream ({escaped(result.upstream)}). CPU is this process's "
        "CPU time per request; the sidecar variant includes the calling client and the "
        "whole sidecar.</p>"
        f"<pre>{escaped(text)}</pre><h3>Targets</h3><pre>{escaped(targets_table(report))}</pre>"
        "</section>"
    )


def _soak_html(result: SoakResult) -> str:
    rows = [[str(m.requests), f"{m.rss_mb}", str(m.objects)] for m in result.memory]
    return (
        '<section id="soak"><h2>Soak</h2>'
        f"<pre>{escaped(soak_table(result))}</pre>"
        f"{_html_table(['requests ended', 'RSS MB', 'live objects'], rows)}"
        f"<h3>Latency over the soak (virtual time)</h3>{latency_svg(result.figures)}</section>"
    )


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 900px; color: #222; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
h3 { font-size: 1em; margin: 1.2em 0 .3em; }
table { border-collapse: collapse; font-size: .85em; margin: .6em 0; }
td, th { border: 1px solid #ddd; padding: .25em .5em; text-align: left; }
.pass { color: #1a7f37; } .fail { color: #cf222e; font-weight: bold; }
ul.checks { list-style: none; padding-left: 0; } .detail { color: #666; font-size: .9em; }
pre { font-size: .75em; background: #f6f8fa; padding: .6em; overflow-x: auto; }
svg { display: block; }
"""


def to_html(report: RunReport) -> str:
    """A self-contained HTML page for the run: no script, no external resource."""
    status = "PASS" if report.passed else "FAIL"
    env = ", ".join(f"{k}: {v}" for k, v in report.environment.items())
    toc = "".join(
        f'<li><a href="#{escaped(r.name)}">{escaped(r.title)}</a> '
        f'<span class="{"pass" if r.passed else "fail"}">'
        f"{'PASS' if r.passed else 'FAIL'}</span></li>"
        for r in report.scenarios
    )
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
        f"<p class=detail>{escaped(env)}</p><ul>{toc}</ul>"
        "<p class=detail>How to read the charts: the stacked bars show, for each time "
        "bucket, which target each attempt went to (a failed-over request counts once per "
        "target it tried); a red mark under a bar means requests sent in that bucket "
        "failed. The bands show each target's condition as routing saw it, with a black "
        "tick at every breaker transition.</p>"
        f"{body}</body></html>"
    )
