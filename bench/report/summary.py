"""The summary table at the top of the HTML page: one row per part of the run."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from bench.harness import Check
from bench.overhead_result import OverheadResult
from bench.record import Figures
from bench.report.run import RunReport
from bench.report.text import errors_seen, fmt

NOT_JUDGED = "not judged"


@attrs.frozen(kw_only=True)
class SummaryRow:
    """One part of the run (a scenario, the overhead benchmark, the soak) in a line.

    ``result`` is ``PASS``/``FAIL`` from the part's checks, or ``not judged`` for the
    overhead targets of a quick run (too short to hold them to a 10% margin).
    """

    part: str
    anchor: str
    mode: str
    requests: str
    answered: str
    latency: str
    checks_passed: int
    checks_total: int
    result: str
    notes: str


def _verdict(checks: Sequence[Check]) -> str:
    return "PASS" if all(check.passed for check in checks) else "FAIL"


def _failed(checks: Sequence[Check]) -> list[str]:
    return [f"missed: {check.name}" for check in checks if not check.passed]


def _figures_row(
    *, part: str, anchor: str, mode: str, figures: Figures, checks: Sequence[Check]
) -> SummaryRow:
    errors = errors_seen(figures)
    notes = ([] if errors == "none" else [f"callers saw {errors}"]) + _failed(checks)
    return SummaryRow(
        part=part,
        anchor=anchor,
        mode=mode,
        requests=f"{figures.requests:,}",
        answered=f"{figures.success_rate:.1%}",
        latency=f"{fmt(figures.latency.p50)} / {fmt(figures.latency.p99)}",
        checks_passed=sum(check.passed for check in checks),
        checks_total=len(checks),
        result=_verdict(checks),
        notes="; ".join(notes),
    )


def _embedded_range(result: OverheadResult, base: str = "httpx") -> str:
    ratios = [
        ratio
        for cell in result.cells
        if cell.variant == "embedded"
        and (ratio := result.ratio(cell.variant, cell.streamed, cell.concurrency, base)) is not None
    ]
    if not ratios:
        return ""
    low, high = min(ratios), max(ratios)
    span = f"{low:.2f}×" if round(low, 2) == round(high, 2) else f"{low:.2f}–{high:.2f}×"
    return f"embedded CPU/request {span} {'bare httpx' if base == 'httpx' else base}'s"


def _overhead_row(report: RunReport, result: OverheadResult) -> SummaryRow:
    checks = report.target_checks
    total = sum(cell.requests * cell.rounds for cell in result.cells)
    errors = sum(cell.errors for cell in result.cells)
    notes = [
        note
        for note in (_embedded_range(result), _embedded_range(result, "aiohttp"), *result.notes)
        if note
    ]
    notes += _failed(checks)
    if errors:
        notes.append(f"{errors:,} requests failed")
    return SummaryRow(
        part="Overhead vs a bare httpx call",
        anchor="overhead",
        mode="real clock, loopback",
        requests=f"{total:,}",
        answered="-" if not total else f"{1 - errors / total:.1%}",
        latency="-",
        checks_passed=sum(check.passed for check in checks),
        checks_total=len(checks),
        result=_verdict(checks) if report.targets_count else NOT_JUDGED,
        notes="; ".join(notes),
    )


def summary_rows(report: RunReport) -> list[SummaryRow]:
    """One row per scenario in run order, then the overhead benchmark, then the soak."""
    rows = [
        _figures_row(part=r.title, anchor=r.name, mode=r.mode, figures=r.figures, checks=r.checks)
        for r in report.scenarios
    ]
    if report.overhead is not None:
        rows.append(_overhead_row(report, report.overhead))
    if report.soak is not None:
        rows.append(
            _figures_row(
                part="Soak",
                anchor="soak",
                mode="virtual",
                figures=report.soak.figures,
                checks=report.soak.checks,
            )
        )
    return rows
