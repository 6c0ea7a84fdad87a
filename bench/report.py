"""The run's outputs: a summary table on stdout, a JSON file and a self-contained HTML page.

The HTML page has no script and loads nothing: each scenario gets inline SVG charts
of traffic share per target over time (stacked bars, failed requests marked in
red beneath), each target's condition over time (bands) and latency per bucket.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from bench.harness import Check, ScenarioResult
from bench.overhead import OverheadResult
from bench.record import Figures
from bench.soak import SoakResult

# Overhead targets from issue #7.
CPU_RATIO_TARGET = 1.10
ROUTING_RATIO_TARGET = 2.0
RSS_TARGET_MB = 100.0

TARGET_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948")
CONDITION_COLOURS = {
    "Healthy": "#59a14f",
    "HalfOpen": "#f1ce63",
    "CoolingDown": "#8cd17d",
    "CircuitOpen": "#e15759",
    "QuotaExhausted": "#b07aa1",
    "ReauthRequired": "#9d7660",
    "PolicyBlocked": "#333333",
    "Paused": "#bab0ac",
    "Draining": "#bab0ac",
    "Disabled": "#79706e",
}


@attrs.frozen(kw_only=True)
class RunReport:
    """Everything one ``python -m bench`` invocation produced."""

    started: str
    argv: tuple[str, ...]
    environment: Mapping[str, Any]
    scenarios: tuple[ScenarioResult, ...]
    overhead: OverheadResult | None
    soak: SoakResult | None

    @property
    def target_checks(self) -> tuple[Check, ...]:
        return () if self.overhead is None else tuple(overhead_targets(self.overhead))

    @property
    def targets_count(self) -> bool:
        """Overhead targets decide the exit code only for a full ``--overhead`` run:
        a quick run is too short to judge a 10% margin."""
        return self.overhead is not None and self.overhead.settings.judge_targets

    @property
    def passed(self) -> bool:
        ok = all(result.passed for result in self.scenarios)
        if self.soak is not None:
            ok = ok and self.soak.passed
        if self.targets_count:
            ok = ok and all(check.passed for check in self.target_checks)
        return ok


# ---- overhead targets ------------------------------------------------------------------


def overhead_targets(result: OverheadResult) -> list[Check]:
    """The issue's overhead targets, checked against ``result``."""
    checks: list[Check] = []
    for streamed in (False, True):
        kind = "streamed" if streamed else "non-streamed"
        for concurrency in result.settings.concurrencies:
            ratio = result.ratio("embedded", streamed, concurrency)
            checks.append(
                Check(
                    name=f"embedded CPU/request <= {CPU_RATIO_TARGET:.2f}x bare httpx "
                    f"({kind}, concurrency {concurrency})",
                    passed=ratio is not None and ratio <= CPU_RATIO_TARGET,
                    detail="n/a" if ratio is None else f"{ratio:.2f}x",
                )
            )
        top = max(result.settings.concurrencies)
        embedded = result.cell("embedded", streamed, top)
        bare = result.cell("httpx", streamed, top)
        if embedded is not None and bare is not None:
            mine, theirs = embedded.latency.p99, bare.latency.p99
            checks.append(
                Check(
                    name=f"embedded p99 latency no worse than bare httpx ({kind}, "
                    f"concurrency {top})",
                    passed=mine is not None and theirs is not None and mine <= theirs,
                    detail=f"{mine} ms vs {theirs} ms",
                )
            )
            if streamed:
                checks.append(
                    Check(
                        name=f"resident memory < {RSS_TARGET_MB:.0f} MB at {top} concurrent "
                        "streams (embedded)",
                        passed=embedded.peak_rss_mb < RSS_TARGET_MB,
                        detail=f"peak {embedded.peak_rss_mb} MB (whole bench process)",
                    )
                )
    by_targets = {cell.targets: cell for cell in result.routing}
    small, large = by_targets.get(3), by_targets.get(1000)
    if small is not None and large is not None and small.cpu_ms_per_request > 0:
        ratio = large.cpu_ms_per_request / small.cpu_ms_per_request
        checks.append(
            Check(
                name=f"routing cost at 1,000 targets <= {ROUTING_RATIO_TARGET:.0f}x at 3",
                passed=ratio <= ROUTING_RATIO_TARGET,
                detail=f"{ratio:.2f}x ({large.cpu_ms_per_request} vs "
                f"{small.cpu_ms_per_request} ms/request)",
            )
        )
    return checks


# ---- text --------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(text.rstrip() for text in [line, rule, *body])


def _errors(figures: Figures) -> str:
    if not figures.errors:
        return "none"
    return ", ".join(f"{name} x{n}" for name, n in figures.errors.items())


def scenario_table(results: Sequence[ScenarioResult]) -> str:
    """One row per scenario: counts, latency, TTFT, CPU, memory, checks."""
    rows = []
    for r in results:
        f = r.figures
        passed = sum(c.passed for c in r.checks)
        rows.append(
            [
                r.name,
                r.mode,
                str(f.requests),
                f"{f.success_rate:.1%}",
                f"{_fmt(f.latency.p50)}/{_fmt(f.latency.p95)}/{_fmt(f.latency.p99)}",
                f"{_fmt(f.ttft.p50)}/{_fmt(f.ttft.p99)}",
                f"{f.cpu_ms_per_request:.2f}",
                str(len(f.transitions)),
                f"{f.peak_rss_mb:.0f}",
                f"{passed}/{len(r.checks)}",
                "PASS" if r.passed else "FAIL",
            ]
        )
    table = _table(
        [
            "scenario",
            "mode",
            "requests",
            "ok",
            "latency p50/95/99 ms",
            "ttft p50/99 ms",
            "cpu ms/req",
            "transitions",
            "peak MB",
            "checks",
            "result",
        ],
        rows,
    )
    notes = []
    for r in results:
        if r.figures.errors:
            notes.append(f"  {r.name}: errors seen by callers: {_errors(r.figures)}")
        for check in r.checks:
            if not check.passed:
                notes.append(f"  {r.name}: FAILED {check.name} -- {check.detail}")
    return table + ("\n" + "\n".join(notes) if notes else "")


def overhead_table(result: OverheadResult) -> str:
    """CPU per request and latency per variant, with ratios and added latency vs httpx."""
    rows = []
    for cell in result.cells:
        base = result.cell("httpx", cell.streamed, cell.concurrency)
        ratio = result.ratio(cell.variant, cell.streamed, cell.concurrency)
        added50: float | None = None
        added99: float | None = None
        if base is not None and cell.variant != "httpx":
            if cell.latency.p50 is not None and base.latency.p50 is not None:
                added50 = cell.latency.p50 - base.latency.p50
            if cell.latency.p99 is not None and base.latency.p99 is not None:
                added99 = cell.latency.p99 - base.latency.p99
        rows.append(
            [
                "stream" if cell.streamed else "plain",
                str(cell.concurrency),
                cell.variant,
                f"{cell.cpu_ms_per_request:.3f}",
                "-" if ratio is None else f"{ratio:.2f}x",
                f"{_fmt(cell.latency.p50, 2)}/{_fmt(cell.latency.p99, 2)}",
                "-" if added50 is None or added99 is None else f"{added50:+.2f}/{added99:+.2f}",
                _fmt(cell.ttft.p50, 2) if cell.streamed else "-",
                f"{cell.throughput_rps:.0f}",
                f"{cell.peak_rss_mb:.0f}",
                str(cell.errors),
            ]
        )
    text = _table(
        [
            "mode",
            "conc",
            "variant",
            "cpu ms/req",
            "vs httpx",
            "latency p50/p99 ms",
            "added p50/p99 ms",
            "ttft p50",
            "req/s",
            "peak MB",
            "errors",
        ],
        rows,
    )
    routing_rows = []
    three = next((c for c in result.routing if c.targets == 3), None)
    for routed in result.routing:
        label = "bare httpx" if routed.targets == 0 else f"oswitch, {routed.targets} targets"
        growth = (
            f"{routed.cpu_ms_per_request / three.cpu_ms_per_request:.2f}x"
            if three is not None and three.cpu_ms_per_request > 0 and routed.targets
            else "-"
        )
        routing_rows.append(
            [
                label,
                f"{routed.cpu_ms_per_request:.3f}",
                growth,
                f"{routed.startup_s * 1000:.0f}" if routed.targets else "-",
                f"{routed.rss_mb:.0f}",
            ]
        )
    text += (
        f"\n\nupstream: {result.upstream}; {result.settings.requests} requests per cell, "
        f"median of {result.settings.rounds} round(s)\n\nrouting cost, null transport "
        "(concurrency 1):\n"
    )
    text += _table(["client", "cpu ms/req", "vs 3 targets", "startup ms", "rss MB"], routing_rows)
    return text


def targets_table(report: RunReport) -> str:
    checks = report.target_checks
    if not checks:
        return ""
    heading = "issue #7 overhead targets" + (
        "" if report.targets_count else " (indicative: a quick run; judge with --overhead)"
    )
    lines = [heading + ":"]
    for check in checks:
        mark = "met   " if check.passed else "MISSED"
        lines.append(f"  {mark} {check.name}: {check.detail}")
    return "\n".join(lines)


def soak_table(result: SoakResult) -> str:
    f = result.figures
    first, last = result.memory[0], result.memory[-1]
    lines = [
        f"soak: {f.requests} requests, {f.success_rate:.2%} answered, errors {_errors(f)}",
        f"  latency p50/p99 {_fmt(f.latency.p50)}/{_fmt(f.latency.p99)} ms (virtual), "
        f"cpu {f.cpu_ms_per_request:.2f} ms/request, {f.wall_s:.0f} s wall",
        f"  memory: start {first.rss_mb} MB ({first.objects} objects), end {last.rss_mb} MB "
        f"({last.objects} objects), peak {f.peak_rss_mb} MB; traces kept {result.traces_kept}",
    ]
    for check in result.checks:
        lines.append(f"  {'ok    ' if check.passed else 'FAILED'} {check.name}: {check.detail}")
    return "\n".join(lines)


def summary(report: RunReport) -> str:
    """The text printed at the end of a run."""
    parts = []
    if report.scenarios:
        modes = sorted({r.mode for r in report.scenarios})
        parts.append(
            f"scenarios ({' and '.join(modes)} mode; times in scenario seconds):\n"
            + scenario_table(report.scenarios)
        )
    if report.overhead is not None:
        parts.append("overhead (real clock, loopback):\n" + overhead_table(report.overhead))
        parts.append(targets_table(report))
    if report.soak is not None:
        parts.append(soak_table(report.soak))
    parts.append("RESULT: " + ("PASS" if report.passed else "FAIL"))
    return "\n\n".join(p for p in parts if p)


# ---- JSON --------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if attrs.has(type(value)):
        return {k: _plain(v) for k, v in attrs.asdict(value, recurse=False).items()}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(report: RunReport) -> dict[str, Any]:
    """The whole run as plain JSON data (every figure, check and transition)."""
    data: dict[str, Any] = {
        "started": report.started,
        "argv": list(report.argv),
        "environment": _plain(report.environment),
        "passed": report.passed,
        "scenarios": [{**_plain(r), "passed": r.passed} for r in report.scenarios],
        "overhead": None,
        "soak": None,
    }
    if report.overhead is not None:
        data["overhead"] = {
            **_plain(report.overhead),
            "ratios": {
                f"{c.variant}/{'stream' if c.streamed else 'plain'}/{c.concurrency}": (
                    report.overhead.ratio(c.variant, c.streamed, c.concurrency)
                )
                for c in report.overhead.cells
            },
            "targets": _plain(list(report.target_checks)),
            "targets_count": report.targets_count,
        }
    if report.soak is not None:
        data["soak"] = {**_plain(report.soak), "passed": report.soak.passed}
    return data


# ---- HTML --------------------------------------------------------------------------------

WIDTH = 760
LEFT = 90


def _e(text: object) -> str:
    return html.escape(str(text))


def _colour(target_ids: Sequence[str], target_id: str) -> str:
    return TARGET_COLOURS[target_ids.index(target_id) % len(TARGET_COLOURS)]


def _axis(x0: float, x1: float, y: float, end_s: float, *, ticks: int = 6) -> str:
    parts = [f'<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="#999"/>']
    step = _nice_step(end_s / ticks)
    t = 0.0
    while t <= end_s + 1e-9:
        x = x0 + (x1 - x0) * (t / end_s if end_s else 0)
        parts.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 4}" stroke="#999"/>')
        parts.append(
            f'<text x="{x:.1f}" y="{y + 15}" font-size="10" text-anchor="middle">{t:g}s</text>'
        )
        t += step
    return "".join(parts)


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * magnitude:
            return float(factor * magnitude)
    return float(10 * magnitude)


def traffic_svg(result: ScenarioResult) -> str:
    """Stacked bars: each bucket's attempts split by target; failed requests in red below."""
    f = result.figures
    ids = list(result.target_ids)
    end_s = max(f.clock_s, len(f.buckets) * f.bucket_s) or 1.0
    plot_w, plot_h, top = WIDTH - LEFT - 20, 150, 10

    def x_of(t: float) -> float:
        return LEFT + plot_w * t / end_s

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{top + plot_h + 60}" '
        f'role="img" aria-label="traffic share over time">'
    ]
    parts.append(
        f'<text x="4" y="{top + 10}" font-size="11">attempts</text>'
        f'<text x="4" y="{top + 24}" font-size="11">share</text>'
    )
    for bucket in f.buckets:
        total = sum(bucket.attempts.values())
        x = x_of(bucket.start_s)
        w = max(1.0, x_of(bucket.start_s + f.bucket_s) - x - 1)
        y = float(top + plot_h)
        for target in ids:
            n = bucket.attempts.get(target, 0)
            if not n or not total:
                continue
            h = plot_h * n / total
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
                f'fill="{_colour(ids, target)}"><title>{_e(target)}: {n}/{total} attempts '
                f"at {bucket.start_s:g}s</title></rect>"
            )
        if bucket.failed:
            parts.append(
                f'<rect x="{x:.1f}" y="{top + plot_h + 3}" width="{w:.1f}" height="6" '
                f'fill="#d62728"><title>{bucket.failed}/{bucket.requests} requests failed '
                f"(sent at {bucket.start_s:g}s)</title></rect>"
            )
    parts.append(f'<text x="4" y="{top + plot_h + 10}" font-size="10" fill="#d62728">failed</text>')
    parts.append(_axis(LEFT, LEFT + plot_w, top + plot_h + 12, end_s))
    legend_x = float(LEFT)
    for target in ids:
        parts.append(
            f'<rect x="{legend_x}" y="{top + plot_h + 36}" width="10" height="10" '
            f'fill="{_colour(ids, target)}"/><text x="{legend_x + 14}" y="{top + plot_h + 45}" '
            f'font-size="11">{_e(target)}</text>'
        )
        legend_x += 20 + 7 * len(target)
    parts.append("</svg>")
    return "".join(parts)


def conditions_svg(result: ScenarioResult) -> str:
    """One band per target, coloured by its condition (or non-Active state) over time."""
    f = result.figures
    ids = list(result.target_ids)
    end_s = max(f.clock_s, 1e-9)
    plot_w, row_h = WIDTH - LEFT - 20, 18
    height = 10 + row_h * len(ids) + 50

    def x_of(t: float) -> float:
        return LEFT + plot_w * min(t, end_s) / end_s

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'role="img" aria-label="target condition over time">'
    ]
    samples = list(f.conditions) or [(0.0, {t: "Healthy" for t in ids})]
    for row, target in enumerate(ids):
        y = 10 + row * row_h
        parts.append(f'<text x="4" y="{y + 12}" font-size="11">{_e(target)}</text>')
        for index, (at, states) in enumerate(samples):
            until = samples[index + 1][0] if index + 1 < len(samples) else end_s
            state = states.get(target, "Healthy")
            x0, x1 = x_of(at), x_of(until)
            if x1 <= x0:
                continue
            parts.append(
                f'<rect x="{x0:.1f}" y="{y}" width="{x1 - x0:.1f}" height="{row_h - 4}" '
                f'fill="{CONDITION_COLOURS.get(state, "#cccccc")}"><title>{_e(target)}: '
                f"{_e(state)} {at:g}-{until:g}s</title></rect>"
            )
        for t in f.transitions:
            if t.target_id == target and t.kind == "breaker":
                x = x_of(t.at)
                parts.append(
                    f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + row_h - 4}" '
                    f'stroke="#000" stroke-width="1.5"><title>breaker {_e(t.state)} at '
                    f"{t.at:.2f}s {_e(t.note)}</title></line>"
                )
    axis_y = 10 + row_h * len(ids)
    parts.append(_axis(LEFT, LEFT + plot_w, axis_y, end_s))
    seen = sorted({s for _, states in samples for s in states.values()} | {"Healthy"})
    legend_x = float(LEFT)
    for state in seen:
        parts.append(
            f'<rect x="{legend_x}" y="{axis_y + 24}" width="10" height="10" '
            f'fill="{CONDITION_COLOURS.get(state, "#cccccc")}"/>'
            f'<text x="{legend_x + 14}" y="{axis_y + 33}" font-size="11">{_e(state)}</text>'
        )
        legend_x += 24 + 7 * len(state)
    parts.append(
        f'<text x="{legend_x}" y="{axis_y + 33}" font-size="11">| black tick: breaker '
        "transition</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def latency_svg(f: Figures, *, label: str = "latency") -> str:
    """p50 and p99 latency of each bucket's answered requests (by send time)."""
    points = [(b.start_s + f.bucket_s / 2, b.latency_p50_ms, b.latency_p99_ms) for b in f.buckets]
    values = [v for _, a, b in points for v in (a, b) if v is not None]
    top_ms = max(values) * 1.1 if values else 1.0
    end_s = max(f.clock_s, len(f.buckets) * f.bucket_s) or 1.0
    plot_w, plot_h, top = WIDTH - LEFT - 20, 110, 10

    def x_of(t: float) -> float:
        return LEFT + plot_w * t / end_s

    def y_of(ms: float) -> float:
        return top + plot_h - plot_h * ms / top_ms

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{top + plot_h + 40}" '
        f'role="img" aria-label="{_e(label)} over time">'
    ]
    parts.append(f'<text x="4" y="{top + plot_h / 2}" font-size="11">{_e(label)}</text>')
    parts.append(
        f'<text x="{LEFT - 4}" y="{top + 8}" font-size="10" text-anchor="end">'
        f"{top_ms:.0f} ms</text>"
        f'<text x="{LEFT - 4}" y="{top + plot_h}" font-size="10" text-anchor="end">0</text>'
    )
    for index, colour, name in ((1, "#4e79a7", "p50"), (2, "#e15759", "p99")):
        coords = []
        for point in points:
            value = point[index]
            if value is not None:
                coords.append(f"{x_of(point[0]):.1f},{y_of(value):.1f}")
        if coords:
            parts.append(
                f'<polyline points="{" ".join(coords)}" fill="none" stroke="{colour}" '
                f'stroke-width="1.5"><title>{name}</title></polyline>'
            )
    parts.append(_axis(LEFT, LEFT + plot_w, top + plot_h, end_s))
    parts.append(
        f'<text x="{LEFT}" y="{top + plot_h + 34}" font-size="11" fill="#4e79a7">p50</text>'
        f'<text x="{LEFT + 40}" y="{top + plot_h + 34}" font-size="11" fill="#e15759">p99</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _checks_html(checks: Sequence[Check]) -> str:
    items = "".join(
        f'<li class="{"pass" if c.passed else "fail"}">{"✓" if c.passed else "✗"} '
        f"{_e(c.name)} <span class=detail>— {_e(c.detail)}</span></li>"
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
                _errors(f),
                f"{_fmt(f.latency.p50)} / {_fmt(f.latency.p95)} / {_fmt(f.latency.p99)}",
                f"{_fmt(f.ttft.p50)} / {_fmt(f.ttft.p95)} / {_fmt(f.ttft.p99)}",
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
        f'<section id="{_e(result.name)}"><h2>{_e(result.title)} '
        f'<span class="{status.lower()}">{status}</span></h2>'
        f"<p><code>{_e(result.name)}</code> · mode: {_e(mode)}</p>"
        f"<p>{_e(result.proves)}</p>"
        f"{_checks_html(result.checks)}{figures}"
        f"<p class=detail>per target: {_e(share)}</p>"
        f"<h3>Traffic share per target (attempts per {f.bucket_s:g} s bucket)</h3>"
        f"{traffic_svg(result)}"
        f"<h3>Condition and breaker per target</h3>{conditions_svg(result)}"
        f"<h3>Latency of answered requests</h3>{latency_svg(f)}"
        f"<p class=detail>transitions: {_e(transitions)}</p></section>"
    )


def _overhead_html(report: RunReport, result: OverheadResult) -> str:
    text = overhead_table(result)
    return (
        '<section id="overhead"><h2>Overhead: oswitch vs a bare httpx call</h2>'
        f"<p>Real clock, loopback upstream ({_e(result.upstream)}). CPU is this process's "
        "CPU time per request; the sidecar variant includes the calling client and the "
        "whole sidecar.</p>"
        f"<pre>{_e(text)}</pre><h3>Targets</h3><pre>{_e(targets_table(report))}</pre>"
        "</section>"
    )


def _soak_html(result: SoakResult) -> str:
    rows = [[str(m.requests), f"{m.rss_mb}", str(m.objects)] for m in result.memory]
    return (
        '<section id="soak"><h2>Soak</h2>'
        f"<pre>{_e(soak_table(result))}</pre>"
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
        f'<li><a href="#{_e(r.name)}">{_e(r.title)}</a> '
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
        f"<title>oswitch bench {_e(report.started)}</title><style>{STYLE}</style></head><body>"
        f'<h1>oswitch bench <span class="{status.lower()}">{status}</span></h1>'
        f"<p>{_e(report.started)} · <code>{_e(' '.join(report.argv))}</code></p>"
        f"<p class=detail>{_e(env)}</p><ul>{toc}</ul>"
        "<p class=detail>How to read the charts: the stacked bars show, for each time "
        "bucket, which target each attempt went to (a failed-over request counts once per "
        "target it tried); a red mark under a bar means requests sent in that bucket "
        "failed. The bands show each target's condition as routing saw it, with a black "
        "tick at every breaker transition.</p>"
        f"{body}</body></html>"
    )


def write_outputs(report: RunReport, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.html`` into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stem}.json"
    html_path = out_dir / f"{stem}.html"
    json_path.write_text(json.dumps(to_json(report), indent=1) + "\n", encoding="utf-8")
    html_path.write_text(to_html(report), encoding="utf-8")
    return json_path, html_path
