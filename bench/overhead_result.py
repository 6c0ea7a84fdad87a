"""The overhead benchmark's settings and figures: pure records, no measuring.

``OverheadSettings`` says what ``bench.overhead.run_overhead`` measures, ``Cell`` and
``RoutingCell`` are its figures, ``OverheadResult`` holds them with the ratios the
report and the floor gates read.
"""

from __future__ import annotations

import attrs

from bench.record import Percentiles

# The floor runs out of process and only when installed, so it stands apart from the
# variants this process measures.
FLOOR = "aiohttp"
# The sidecar measured alone (its caller aiohttp's client in a child process): its own
# CPU, without the subtraction of a caller's. Needs aiohttp, as the floor does.
SIDECAR_OWN = "sidecar-own"
VARIANTS = ("httpx", "embedded", "sidecar", FLOOR)
# The variants whose process runs oswitch (and so keeps its store of request traces).
OSWITCH_VARIANTS = frozenset({"embedded", "embedded-httpx", "sidecar", SIDECAR_OWN})
ALL_VARIANTS = ("httpx", "embedded", "embedded-httpx", "sidecar")
AIOHTTP_SKIPPED = "aiohttp not installed: skipped"


@attrs.frozen(kw_only=True)
class OverheadSettings:
    """How much to measure. ``quick()`` fits the default suite; ``full()`` is ``--overhead``."""

    concurrencies: tuple[int, ...]
    requests: int
    rounds: int
    routing_targets: tuple[int, ...]
    routing_requests: int
    subprocess_upstream: bool = True
    server: str = "raw"
    variants: tuple[str, ...] = VARIANTS
    # Long enough to hold oswitch to the targets (a quick run only indicates).
    judge_targets: bool = False
    # Warm oswitch's cells up until their trace store is full (its steady state): the
    # collector works harder while it fills (docs/bench.md). Too long for the suite.
    steady_state: bool = False

    @classmethod
    def quick(cls) -> OverheadSettings:
        return cls(
            concurrencies=(1, 32),
            requests=300,
            rounds=2,
            routing_targets=(3, 100, 1000),
            routing_requests=600,
        )

    @classmethod
    def full(cls) -> OverheadSettings:
        return cls(
            concurrencies=(1, 32, 256),
            requests=1000,
            rounds=3,
            routing_targets=(3, 100, 1000),
            routing_requests=3000,
            judge_targets=True,
            steady_state=True,
            variants=(*ALL_VARIANTS, FLOOR, SIDECAR_OWN),
        )


@attrs.frozen(kw_only=True)
class Cell:
    """One variant at one concurrency, streamed or not (medians over rounds).

    ``cpu_ms_per_request`` is this process's CPU time per request; ``latency`` and
    ``ttft`` (time to first content, streams only) are of the median round;
    ``peak_rss_mb`` is the highest resident size sampled while the cell ran.
    """

    variant: str
    streamed: bool
    concurrency: int
    requests: int
    rounds: int
    cpu_ms_per_request: float
    cpu_ms_rounds: tuple[float, ...]
    latency: Percentiles
    ttft: Percentiles
    throughput_rps: float
    peak_rss_mb: float
    errors: int


@attrs.frozen(kw_only=True)
class RoutingCell:
    """oswitch over a null transport with ``targets`` targets (0: bare httpx)."""

    targets: int
    requests: int
    cpu_ms_per_request: float
    startup_s: float
    rss_mb: float


@attrs.frozen(kw_only=True)
class OverheadResult:
    """The overhead benchmark's figures, with how the upstream ran.

    ``notes`` says what was asked for and not measured (the aiohttp baseline when
    aiohttp is not installed).
    """

    upstream: str
    settings: OverheadSettings
    cells: tuple[Cell, ...]
    routing: tuple[RoutingCell, ...]
    notes: tuple[str, ...] = ()

    def cell(self, variant: str, streamed: bool, concurrency: int) -> Cell | None:
        for cell in self.cells:
            if (cell.variant, cell.streamed, cell.concurrency) == (
                variant,
                streamed,
                concurrency,
            ):
                return cell
        return None

    def ratio(
        self, variant: str, streamed: bool, concurrency: int, base: str = "httpx"
    ) -> float | None:
        """CPU per request of ``variant`` over ``base``'s (bare httpx unless told),
        same streaming and concurrency; None when either was not measured."""
        cell = self.cell(variant, streamed, concurrency)
        floor = self.cell(base, streamed, concurrency)
        if cell is None or floor is None or floor.cpu_ms_per_request <= 0:
            return None
        return cell.cpu_ms_per_request / floor.cpu_ms_per_request

    def sidecar_own_ms(self, streamed: bool, concurrency: int) -> float | None:
        """The sidecar's own CPU per request (per stream, when streamed): the
        ``sidecar-own`` cell's when it was measured (the sidecar alone in its process),
        else estimated as the sidecar cell's less the bare httpx cell's (the sidecar
        variant's process also runs its calling client, that same bare httpx client)."""
        alone = self.cell(SIDECAR_OWN, streamed, concurrency)
        if alone is not None:
            return alone.cpu_ms_per_request
        sidecar = self.cell("sidecar", streamed, concurrency)
        caller = self.cell("httpx", streamed, concurrency)
        if sidecar is None or caller is None:
            return None
        return max(0.0, sidecar.cpu_ms_per_request - caller.cpu_ms_per_request)

    @property
    def sidecar_own_measured(self) -> bool:
        """Whether the sidecar's own CPU was measured alone (else it is estimated)."""
        return any(cell.variant == SIDECAR_OWN for cell in self.cells)
