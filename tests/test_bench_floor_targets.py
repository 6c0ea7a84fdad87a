"""The overhead run's floor targets: embedded against aiohttp, and the sidecar's own CPU
(measured alone when it can be) against embedded's; shown, never counted in RESULT."""

from __future__ import annotations

import attrs

from bench.overhead_result import Cell, OverheadResult, OverheadSettings
from bench.record import Percentiles
from bench.report.run import RunReport
from bench.report.targets import floor_gates
from bench.report.text import summary


def _cell(variant: str, streamed: bool, concurrency: int, cpu: float, p99: float) -> Cell:
    return Cell(
        variant=variant,
        streamed=streamed,
        concurrency=concurrency,
        requests=1000,
        rounds=3,
        cpu_ms_per_request=cpu,
        cpu_ms_rounds=(cpu,),
        latency=Percentiles(count=100, p50=p99 / 2, p95=p99, p99=p99, max=p99),
        ttft=Percentiles(count=0, p50=None, p95=None, p99=None, max=None),
        throughput_rps=1000.0,
        peak_rss_mb=60.0,
        errors=0,
    )


def _result(*, sidecar_own: bool) -> OverheadResult:
    """Plain: embedded 1.2x aiohttp at 32 (met), 3x at 256 (missed); streamed 1.5x at
    both. Sidecar (with its httpx caller) 5 ms, httpx 1 ms; alone 0.6 / 0.5 ms."""
    cpu = {
        (False, 32): {"aiohttp": 0.2, "embedded": 0.24, "httpx": 1.0, "sidecar": 5.0},
        (False, 256): {"aiohttp": 0.2, "embedded": 0.6, "httpx": 1.0, "sidecar": 5.0},
        (True, 32): {"aiohttp": 0.4, "embedded": 0.6, "httpx": 1.0, "sidecar": 5.0},
        (True, 256): {"aiohttp": 0.4, "embedded": 0.6, "httpx": 1.0, "sidecar": 5.0},
    }
    cells = []
    for (streamed, concurrency), figures in cpu.items():
        for variant, ms in figures.items():
            cells.append(_cell(variant, streamed, concurrency, ms, p99=10.0))
        if sidecar_own:
            own = 0.6 if not streamed else 0.5
            cells.append(_cell("sidecar-own", streamed, concurrency, own, p99=10.0))
    settings = attrs.evolve(OverheadSettings.full(), concurrencies=(32, 256))
    return OverheadResult(upstream="raw", settings=settings, cells=tuple(cells), routing=())


def test_the_sidecars_own_cpu_is_the_alone_cell_when_measured() -> None:
    """With sidecar-own cells the sidecar's own CPU is theirs; without, the estimate
    (sidecar cell less the httpx caller's)."""
    assert _result(sidecar_own=True).sidecar_own_ms(False, 32) == 0.6
    assert _result(sidecar_own=True).sidecar_own_measured
    assert _result(sidecar_own=False).sidecar_own_ms(False, 32) == 4.0
    assert not _result(sidecar_own=False).sidecar_own_measured


def test_floor_targets_name_each_gate_and_its_verdict() -> None:
    """Embedded at most 1.25x aiohttp at 32 and 256, p99 beside aiohttp's at 256, and
    the sidecar's own CPU at most 1.5x embedded non-streamed and 2x streamed."""
    checks = {c.name: (c.passed, c.detail) for c in floor_gates(_result(sidecar_own=True))}
    assert checks == {
        "embedded CPU/request <= 1.25x aiohttp (non-streamed, concurrency 32)": (True, "1.200x"),
        "embedded CPU/request <= 1.25x aiohttp (non-streamed, concurrency 256)": (False, "3.000x"),
        "embedded p99 latency no worse than aiohttp (non-streamed, concurrency 256)": (
            True,
            "10.0 ms vs 10.0 ms",
        ),
        "sidecar's own CPU <= 1.5x embedded (non-streamed, concurrency 32)": (
            False,
            "2.50x (0.600 vs 0.240 ms)",
        ),
        "sidecar's own CPU <= 1.5x embedded (non-streamed, concurrency 256)": (
            True,
            "1.00x (0.600 vs 0.600 ms)",
        ),
        "embedded CPU/request <= 1.25x aiohttp (streamed, concurrency 32)": (False, "1.500x"),
        "embedded CPU/request <= 1.25x aiohttp (streamed, concurrency 256)": (False, "1.500x"),
        "embedded p99 latency no worse than aiohttp (streamed, concurrency 256)": (
            True,
            "10.0 ms vs 10.0 ms",
        ),
        "sidecar's own CPU <= 2x embedded (streamed, concurrency 32)": (
            True,
            "0.83x (0.500 vs 0.600 ms)",
        ),
        "sidecar's own CPU <= 2x embedded (streamed, concurrency 256)": (
            True,
            "0.83x (0.500 vs 0.600 ms)",
        ),
    }


def test_without_the_alone_cells_the_sidecar_is_not_judged_on_an_estimate() -> None:
    """An estimated sidecar figure is shown, never held to the floor targets."""
    names = [c.name for c in floor_gates(_result(sidecar_own=False))]
    assert names and not any("sidecar" in name for name in names)


def test_the_summary_shows_floor_targets_without_counting_them() -> None:
    """The summary prints the floor targets with their verdicts and says how the
    sidecar's own CPU was measured; a missed floor target does not fail the run."""
    report = RunReport(
        started="2026-01-01T00:00:00+00:00",
        argv=("python -m bench", "--overhead"),
        environment={},
        scenarios=(),
        overhead=_result(sidecar_own=True),
        soak=None,
    )
    text = summary(report)
    assert "floor targets (against aiohttp and the engine; shown, not counted in RESULT):" in text
    assert (
        "  MISSED embedded CPU/request <= 1.25x aiohttp (non-streamed, concurrency 256): 3.000x"
        in text
    )
    assert "the sidecar process's own CPU (measured alone, its caller aiohttp in another" in text
    assert report.floor_checks and not all(c.passed for c in report.floor_checks)
    assert report.passed  # every overhead target here is met; the floor ones are not
    # A server's CPU has no ratio to a client's: the sidecar-own rows show none.
    own_rows = [line.split() for line in text.splitlines() if " sidecar-own " in line]
    assert len(own_rows) == 4 and all(row[4:6] == ["-", "-"] for row in own_rows)
