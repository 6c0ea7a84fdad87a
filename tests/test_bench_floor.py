"""The overhead benchmark's second baseline, aiohttp on asyncio (the floor)."""

from __future__ import annotations

import pytest

import bench.overhead
from bench.overhead import median_routing, run_overhead
from bench.overhead_result import AIOHTTP_SKIPPED, OverheadResult, OverheadSettings, RoutingCell
from bench.report.as_json import to_json
from bench.report.run import RunReport
from bench.report.text import overhead_table


def _tiny(variants: tuple[str, ...], concurrencies: tuple[int, ...] = (2,)) -> OverheadSettings:
    return OverheadSettings(
        concurrencies=concurrencies,
        requests=12,
        rounds=1,
        routing_targets=(),
        routing_requests=5,
        variants=variants,
    )


def _report(result: OverheadResult) -> RunReport:
    return RunReport(
        started="2026-01-01T00:00:00+00:00",
        argv=("python -m bench",),
        environment={},
        scenarios=(),
        overhead=result,
        soak=None,
    )


def test_without_aiohttp_the_overhead_run_skips_it_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With aiohttp not installed the overhead run still measures the rest, has no
    aiohttp cells and prints "aiohttp not installed: skipped"."""
    monkeypatch.setattr(bench.overhead, "aiohttp_available", lambda: False)
    result = run_overhead(_tiny(("httpx", "embedded", "aiohttp")))
    assert {cell.variant for cell in result.cells} == {"httpx", "embedded"}
    assert result.notes == (AIOHTTP_SKIPPED,)
    assert result.ratio("embedded", False, 2, base="aiohttp") is None
    assert AIOHTTP_SKIPPED in overhead_table(result)
    assert all(
        value is None for value in to_json(_report(result))["overhead"]["ratios_aiohttp"].values()
    )


def test_the_aiohttp_baseline_is_measured_beside_oswitch_and_reported() -> None:
    """aiohttp's own client, run in its own process against the same upstream, fills a
    cell per mode and concurrency without errors; the report gives oswitch ÷ aiohttp
    and the sidecar's own CPU (its cell less the bare httpx caller's)."""
    pytest.importorskip("aiohttp")
    result = run_overhead(_tiny(("httpx", "embedded", "sidecar", "aiohttp"), (1, 3)))
    assert result.notes == ()
    for streamed in (False, True):
        for concurrency in (1, 3):
            floor = result.cell("aiohttp", streamed, concurrency)
            assert floor is not None and floor.errors == 0, floor
            assert floor.requests == 12 and floor.cpu_ms_per_request > 0
            assert (floor.ttft.count > 0) == streamed
            assert result.ratio("aiohttp", streamed, concurrency, base="aiohttp") == 1.0
            embedded = result.cell("embedded", streamed, concurrency)
            assert embedded is not None
            assert result.ratio("embedded", streamed, concurrency, base="aiohttp") == (
                embedded.cpu_ms_per_request / floor.cpu_ms_per_request
            )
            sidecar = result.cell("sidecar", streamed, concurrency)
            caller = result.cell("httpx", streamed, concurrency)
            assert sidecar is not None and caller is not None
            assert result.sidecar_own_ms(streamed, concurrency) == max(
                0.0, sidecar.cpu_ms_per_request - caller.cpu_ms_per_request
            )
    data = to_json(_report(result))["overhead"]
    assert data["ratios_aiohttp"]["embedded/stream/3"] == result.ratio(
        "embedded", True, 3, base="aiohttp"
    )
    assert set(data["sidecar_own_cpu_ms"]) == {"plain/1", "plain/3", "stream/1", "stream/3"}
    text = overhead_table(result)
    assert "vs aiohttp" in text and "the sidecar process's own CPU" in text


def test_the_sidecar_alone_is_measured_with_an_aiohttp_caller() -> None:
    """The sidecar-own variant serves the sidecar alone in the bench process to aiohttp's
    client in another process: every call answered, and that cell is the sidecar's own
    CPU the report gives (measured, not estimated)."""
    pytest.importorskip("aiohttp")
    result = run_overhead(_tiny(("embedded", "sidecar-own", "aiohttp")))
    assert result.sidecar_own_measured
    for streamed in (False, True):
        alone = result.cell("sidecar-own", streamed, 2)
        assert alone is not None and alone.errors == 0 and alone.requests == 12
        assert alone.cpu_ms_per_request > 0 and (alone.ttft.count > 0) == streamed
        assert result.sidecar_own_ms(streamed, 2) == alone.cpu_ms_per_request
    assert "own CPU (measured alone, its caller aiohttp in another process" in overhead_table(
        result
    )
    assert to_json(_report(result))["overhead"]["sidecar_own_measured"] is True


def test_a_routing_cell_is_its_median_round() -> None:
    """The routing figure of a size is the round of median CPU per request, with that
    round's startup and memory, so one slow round cannot fail the 1,000-target check."""

    def cell(cpu: float, startup: float) -> RoutingCell:
        return RoutingCell(
            targets=1000, requests=600, cpu_ms_per_request=cpu, startup_s=startup, rss_mb=70
        )

    rounds = [cell(1.17, 0.48), cell(0.62, 0.31), cell(0.57, 0.33)]
    assert median_routing(rounds) == cell(0.62, 0.31)
    assert median_routing(rounds[:1]) == rounds[0]
    with pytest.raises(ValueError, match="no routing rounds"):
        median_routing([])
