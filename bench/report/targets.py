"""The overhead targets oswitch holds itself to, checked against an overhead run."""

from __future__ import annotations

from bench.harness import Check
from bench.overhead_result import OverheadResult

CPU_RATIO_TARGET = 1.10
ROUTING_RATIO_TARGET = 2.0
RSS_TARGET_MB = 100.0
# The floor targets: embedded against aiohttp's CPU at these concurrencies, and the
# sidecar's own CPU against embedded's (non-streamed, streamed).
FLOOR_RATIO_TARGET = 1.25
FLOOR_CONCURRENCIES = (32, 256)
SIDECAR_RATIO_TARGETS = {False: 1.5, True: 2.0}


def overhead_targets(result: OverheadResult) -> list[Check]:
    """The overhead targets, checked against ``result``."""
    checks: list[Check] = []
    for streamed in (False, True):
        for concurrency in result.settings.concurrencies:
            checks.append(
                _cpu_check(result, streamed, concurrency, "httpx", "bare httpx", CPU_RATIO_TARGET)
            )
        top = max(result.settings.concurrencies)
        embedded = result.cell("embedded", streamed, top)
        p99 = _p99_check(result, streamed, top, "httpx", "bare httpx")
        if embedded is not None and p99 is not None:
            checks.append(p99)
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


def floor_gates(result: OverheadResult) -> list[Check]:
    """The floor targets, checked against ``result`` where it measured them (none
    without the aiohttp cells): embedded CPU per request at most 1.25x aiohttp's at
    concurrency 32 and 256, its p99 at the highest of those beside aiohttp's, and the
    sidecar's own CPU at most 1.5x embedded's non-streamed and 2x streamed."""
    checks: list[Check] = []
    for streamed in (False, True):
        kind = _kind(streamed)
        floored = [
            c
            for c in result.settings.concurrencies
            if c in FLOOR_CONCURRENCIES and result.cell("aiohttp", streamed, c) is not None
        ]
        for concurrency in floored:
            checks.append(
                # Three places: a ratio of 1.253 must not read as the 1.25 it misses.
                _cpu_check(
                    result,
                    streamed,
                    concurrency,
                    "aiohttp",
                    "aiohttp",
                    FLOOR_RATIO_TARGET,
                    decimals=3,
                )
            )
        p99 = _p99_check(result, streamed, max(floored), "aiohttp", "aiohttp") if floored else None
        if p99 is not None:
            checks.append(p99)
        if not result.sidecar_own_measured:
            continue
        target = SIDECAR_RATIO_TARGETS[streamed]
        for concurrency in result.settings.concurrencies:
            own = result.sidecar_own_ms(streamed, concurrency)
            embedded = result.cell("embedded", streamed, concurrency)
            if own is None or embedded is None or embedded.cpu_ms_per_request <= 0:
                continue
            ratio = own / embedded.cpu_ms_per_request
            checks.append(
                Check(
                    name=f"sidecar's own CPU <= {target:g}x embedded ({kind}, "
                    f"concurrency {concurrency})",
                    passed=ratio <= target,
                    detail=f"{ratio:.2f}x ({own:.3f} vs {embedded.cpu_ms_per_request:.3f} ms)",
                )
            )
    return checks


def _kind(streamed: bool) -> str:
    return "streamed" if streamed else "non-streamed"


def _cpu_check(
    result: OverheadResult,
    streamed: bool,
    concurrency: int,
    base: str,
    base_name: str,
    target: float,
    *,
    decimals: int = 2,
) -> Check:
    """Embedded CPU per request at most ``target`` times ``base``'s (the ratio shown
    to ``decimals`` places)."""
    ratio = result.ratio("embedded", streamed, concurrency, base=base)
    return Check(
        name=f"embedded CPU/request <= {target:.2f}x {base_name} "
        f"({_kind(streamed)}, concurrency {concurrency})",
        passed=ratio is not None and ratio <= target,
        detail="n/a" if ratio is None else f"{ratio:.{decimals}f}x",
    )


def _p99_check(
    result: OverheadResult, streamed: bool, concurrency: int, base: str, base_name: str
) -> Check | None:
    """Embedded p99 latency no worse than ``base``'s; None unless both were measured."""
    embedded = result.cell("embedded", streamed, concurrency)
    other = result.cell(base, streamed, concurrency)
    if embedded is None or other is None:
        return None
    mine, theirs = embedded.latency.p99, other.latency.p99
    return Check(
        name=f"embedded p99 latency no worse than {base_name} ({_kind(streamed)}, "
        f"concurrency {concurrency})",
        passed=mine is not None and theirs is not None and mine <= theirs,
        detail=f"{mine} ms vs {theirs} ms",
    )
