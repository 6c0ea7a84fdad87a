"""The run as text: the summary table printed at the end, one table per part."""

from __future__ import annotations

from collections.abc import Sequence

from bench.harness import Check, ScenarioResult
from bench.overhead_result import SIDECAR_OWN, OverheadResult
from bench.record import Figures
from bench.report.run import RunReport
from bench.soak import SoakResult


def fmt(value: float | None, digits: int = 0) -> str:
    """``value`` with ``digits`` decimals, or "-" when there is none."""
    return "-" if value is None else f"{value:.{digits}f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(text.rstrip() for text in [line, rule, *body])


def errors_seen(figures: Figures) -> str:
    """The error classes callers saw, with counts ("none" when they saw none)."""
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
                f"{fmt(f.latency.p50)}/{fmt(f.latency.p95)}/{fmt(f.latency.p99)}",
                f"{fmt(f.ttft.p50)}/{fmt(f.ttft.p99)}",
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
            notes.append(f"  {r.name}: errors seen by callers: {errors_seen(r.figures)}")
        for check in r.checks:
            if not check.passed:
                notes.append(f"  {r.name}: FAILED {check.name} -- {check.detail}")
    return table + ("\n" + "\n".join(notes) if notes else "")


OVERHEAD_HEADERS = (
    "mode",
    "conc",
    "variant",
    "cpu ms/req",
    "vs httpx",
    "vs aiohttp",
    "latency p50/p99 ms",
    "added p50/p99 ms",
    "ttft p50",
    "req/s",
    "peak MB",
    "errors",
)
ROUTING_HEADERS = ("client", "cpu ms/req", "vs 3 targets", "startup ms", "rss MB")


def overhead_rows(result: OverheadResult) -> list[list[str]]:
    """One row per measured cell under ``OVERHEAD_HEADERS``: CPU per request and
    latency, with the ratios to bare httpx and to aiohttp (the floor; "-" when it
    was not measured) and the latency added over bare httpx. A ``sidecar-own`` cell is
    a server's CPU, not a client's: it has no ratios or added latency here (the
    sidecar's own table compares it with embedded's)."""
    rows = []
    for cell in result.cells:
        own = cell.variant == SIDECAR_OWN
        base = None if own else result.cell("httpx", cell.streamed, cell.concurrency)
        ratio = None if own else result.ratio(cell.variant, cell.streamed, cell.concurrency)
        floor = (
            None
            if own
            else result.ratio(cell.variant, cell.streamed, cell.concurrency, base="aiohttp")
        )
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
                "-" if floor is None else f"{floor:.2f}x",
                f"{fmt(cell.latency.p50, 2)}/{fmt(cell.latency.p99, 2)}",
                "-" if added50 is None or added99 is None else f"{added50:+.2f}/{added99:+.2f}",
                fmt(cell.ttft.p50, 2) if cell.streamed else "-",
                f"{cell.throughput_rps:.0f}",
                f"{cell.peak_rss_mb:.0f}",
                str(cell.errors),
            ]
        )
    return rows


def routing_rows(result: OverheadResult) -> list[list[str]]:
    """One row per routing-cost cell under ``ROUTING_HEADERS``."""
    rows = []
    three = next((c for c in result.routing if c.targets == 3), None)
    for routed in result.routing:
        label = "bare httpx" if routed.targets == 0 else f"oswitch, {routed.targets} targets"
        growth = (
            f"{routed.cpu_ms_per_request / three.cpu_ms_per_request:.2f}x"
            if three is not None and three.cpu_ms_per_request > 0 and routed.targets
            else "-"
        )
        rows.append(
            [
                label,
                f"{routed.cpu_ms_per_request:.3f}",
                growth,
                f"{routed.startup_s * 1000:.0f}" if routed.targets else "-",
                f"{routed.rss_mb:.0f}",
            ]
        )
    return rows


def overhead_settings_line(result: OverheadResult) -> str:
    """Where the overhead figures come from: the upstream, requests and rounds."""
    return (
        f"upstream: {result.upstream}; {result.settings.requests} requests per cell, "
        f"median of {result.settings.rounds} round(s)"
    )


SIDECAR_HEADERS = ("mode", "conc", "sidecar's own cpu ms", "vs embedded")


def sidecar_rows(result: OverheadResult) -> list[list[str]]:
    """The sidecar's own CPU per request (per stream, streamed) at each concurrency
    measured (:meth:`OverheadResult.sidecar_own_ms`: measured alone, else estimated),
    and its ratio to embedded oswitch's."""
    rows = []
    for streamed in (False, True):
        for concurrency in result.settings.concurrencies:
            own = result.sidecar_own_ms(streamed, concurrency)
            embedded = result.cell("embedded", streamed, concurrency)
            if own is None:
                continue
            ratio = (
                f"{own / embedded.cpu_ms_per_request:.2f}x"
                if embedded is not None and embedded.cpu_ms_per_request > 0
                else "-"
            )
            rows.append(["stream" if streamed else "plain", str(concurrency), f"{own:.3f}", ratio])
    return rows


def overhead_table(result: OverheadResult) -> str:
    """CPU per request and latency per variant, with ratios and added latency vs httpx,
    ratios vs aiohttp, and the sidecar's own CPU."""
    text = _table(OVERHEAD_HEADERS, overhead_rows(result))
    for note in result.notes:
        text += f"\n{note}"
    sidecar = sidecar_rows(result)
    if sidecar:
        how = (
            "measured alone, its caller aiohttp in another process"
            if result.sidecar_own_measured
            else "estimated: sidecar cell less its bare httpx caller's"
        )
        text += f"\n\nthe sidecar process's own CPU ({how}; per stream when streamed):\n" + _table(
            SIDECAR_HEADERS, sidecar
        )
    text += (
        f"\n\n{overhead_settings_line(result)}\n\nrouting cost, null transport (concurrency 1):\n"
    )
    text += _table(ROUTING_HEADERS, routing_rows(result))
    return text


TARGETS_HEADING = "overhead targets"
INDICATIVE = "indicative: a quick run; judge with --overhead"
FLOOR_HEADING = "floor targets (against aiohttp and the engine; shown, not counted in RESULT)"


def targets_table(report: RunReport) -> str:
    """The overhead targets, met or missed (indicative for a quick run)."""
    return _checks_table(TARGETS_HEADING, report.target_checks, judged=report.targets_count)


def floor_table(report: RunReport) -> str:
    """The floor targets, met or missed, when the run measured them."""
    return _checks_table(FLOOR_HEADING, report.floor_checks, judged=report.targets_count)


def _checks_table(heading: str, checks: Sequence[Check], *, judged: bool) -> str:
    if not checks:
        return ""
    lines = [heading + ("" if judged else f" ({INDICATIVE})") + ":"]
    for check in checks:
        mark = "met   " if check.passed else "MISSED"
        lines.append(f"  {mark} {check.name}: {check.detail}")
    return "\n".join(lines)


def soak_table(result: SoakResult) -> str:
    f = result.figures
    first, last = result.memory[0], result.memory[-1]
    lines = [
        f"soak: {f.requests} requests, {f.success_rate:.2%} answered, errors {errors_seen(f)}",
        f"  latency p50/p99 {fmt(f.latency.p50)}/{fmt(f.latency.p99)} ms (virtual), "
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
        parts.append(floor_table(report))
    if report.soak is not None:
        parts.append(soak_table(report.soak))
    parts.append("RESULT: " + ("PASS" if report.passed else "FAIL"))
    return "\n\n".join(p for p in parts if p)
