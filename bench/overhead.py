"""What oswitch costs over a bare HTTP call, measured in one run against one upstream.

The variants call the same loopback fake upstream, which runs in a separate
process (``python -m bench.upstream``) so that ``time.process_time`` counts the
client side only:

* ``httpx`` — a bare ``httpx.AsyncClient`` on trio (the baseline, "a");
* ``embedded`` — ``open_switcher`` with no transport (each target's own HTTP/1.1
  pool), in-process;
* ``embedded-httpx`` (full runs) — the same switcher over httpx's pool
  (``transport=httpx.AsyncHTTPTransport(...)``): oswitch's engine on the baseline's
  HTTP stack, so what the engine costs stays visible apart from what its pool saves;
* ``sidecar`` — a bare httpx client calling the sidecar in this process, which
  calls the upstream: its CPU is the caller's plus the whole sidecar's;
* ``sidecar-own`` (full runs, with aiohttp) — the sidecar alone in this process, called
  by aiohttp's client in a child process, so this process's CPU is the sidecar's own
  (its HTTP server, the engine and its upstream client). Without it (a quick run, no
  aiohttp) the sidecar's own CPU is estimated as the ``sidecar`` cell less the bare
  httpx cell's, a difference of two figures larger than itself;
* ``aiohttp`` (when installed: ``pip install -e '.[bench]'``) — aiohttp's own client
  on asyncio, the fastest Python client and so the floor, run by
  ``python -m bench.aiohttp_baseline`` in a fresh process per round (its CPU is that
  process's, measured around the same closed loop). Without aiohttp the run goes on
  and says "aiohttp not installed: skipped".

Each runs closed-loop at each concurrency, non-streamed and streamed, after a
warm-up, in interleaved rounds; a cell's figure is the median over rounds. Then
the routing cost: oswitch over a null transport (an ``httpx.MockTransport``
answering at once) with 3, 100 and 1,000 targets serving one model, beside a
bare httpx client over the same null transport.

The records are in ``bench.overhead_result``, the upstream and the calls in
``bench.subjects``, one round of a variant in ``bench.rounds``.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Sequence

import httpx
import trio

from bench.overhead_result import (
    AIOHTTP_SKIPPED,
    FLOOR,
    SIDECAR_OWN,
    Cell,
    OverheadResult,
    OverheadSettings,
    RoutingCell,
)
from bench.progress import Progress
from bench.record import current_rss_mb
from bench.rounds import Round, cell, measure, run_variant
from bench.subjects import (
    embedded_config,
    http_call,
    null_transport,
    switcher_call,
    upstream_process,
)
from bench.upstream import overhead_fake, serve_raw_upstream
from oswitch import open_switcher
from oswitch.testing import serve_fake_provider


def aiohttp_available() -> bool:
    """Whether the aiohttp baseline can run (the optional ``bench`` extra)."""
    return importlib.util.find_spec("aiohttp") is not None


# ---- routing cost over a null transport --------------------------------------------------


async def _routing_cell(targets: int, requests: int) -> RoutingCell:
    transport = null_transport()
    if targets == 0:
        async with httpx.AsyncClient(transport=transport) as client:
            call = http_call(client, "https://null.bench.test/v1/chat/completions", False)
            measured = await measure(call, 1, requests)
        return RoutingCell(
            targets=0,
            requests=requests,
            cpu_ms_per_request=round(measured.cpu_s * 1000.0 / requests, 4),
            startup_s=0.0,
            rss_mb=round(current_rss_mb(), 1),
        )
    config = embedded_config("https://null.bench.test/v1", targets=targets, concurrency=64)
    started = time.perf_counter()
    async with open_switcher(config, transport=transport) as switcher:
        startup = time.perf_counter() - started
        measured = await measure(switcher_call(switcher, False), 1, requests)
        rss = current_rss_mb()
    return RoutingCell(
        targets=targets,
        requests=requests,
        cpu_ms_per_request=round(measured.cpu_s * 1000.0 / requests, 4),
        startup_s=round(startup, 3),
        rss_mb=round(rss, 1),
    )


def median_routing(rounds: Sequence[RoutingCell]) -> RoutingCell:
    """One routing cell from its rounds: the round of median CPU per request (its
    startup and memory with it). Raises ValueError for no rounds."""
    if not rounds:
        raise ValueError("no routing rounds to take the median of")
    return sorted(rounds, key=lambda cell: cell.cpu_ms_per_request)[len(rounds) // 2]


# ---- the whole benchmark -----------------------------------------------------------------


async def _overhead(
    upstream_port: int | None, settings: OverheadSettings, progress: Progress | None
) -> OverheadResult:
    async with trio.open_nursery() as nursery:
        upstream = f"{settings.server} server, separate process"
        if upstream_port is None:
            upstream = f"{settings.server} server, in this process"
            if settings.server == "raw":
                upstream_port = await nursery.start(serve_raw_upstream)
            else:
                upstream_port = await nursery.start(serve_fake_provider, overhead_fake())
        url = f"http://127.0.0.1:{upstream_port}/v1"
        plan = [
            (streamed, concurrency)
            for streamed in (False, True)
            for concurrency in settings.concurrencies
        ]
        notes: list[str] = []
        variants = settings.variants
        if {FLOOR, SIDECAR_OWN} & set(variants) and not aiohttp_available():
            variants = tuple(v for v in variants if v not in (FLOOR, SIDECAR_OWN))
            notes.append(AIOHTTP_SKIPPED)
            if progress is not None:
                progress.say(AIOHTTP_SKIPPED)
        total = (len(plan) * len(variants) + len(settings.routing_targets) + 1) * settings.rounds
        done = 0
        cells: list[Cell] = []
        for streamed, concurrency in plan:
            rounds: dict[str, list[Round]] = {v: [] for v in variants}
            for _ in range(settings.rounds):
                # Interleaved, so drift in the machine's speed hits every variant alike.
                for variant in variants:
                    if progress is not None:
                        kind = "stream" if streamed else "plain"
                        progress.update(
                            "overhead",
                            done=done,
                            total=total,
                            note=f"{variant} {kind} x{concurrency}",
                        )
                    rounds[variant].append(
                        await run_variant(
                            variant,
                            url,
                            streamed,
                            concurrency,
                            settings.requests,
                            steady_state=settings.steady_state,
                        )
                    )
                    done += 1
            cells.extend(cell(v, streamed, concurrency, rounds[v]) for v in variants)
        routing_rounds: dict[int, list[RoutingCell]] = {
            targets: [] for targets in (0, *settings.routing_targets)
        }
        for _ in range(settings.rounds):
            # Interleaved too: the 1,000-target cell is judged against the 3-target one.
            for targets, measured in routing_rounds.items():
                if progress is not None:
                    progress.update(
                        "overhead", done=done, total=total, note=f"routing, {targets} targets"
                    )
                measured.append(await _routing_cell(targets, settings.routing_requests))
                done += 1
        routing = [median_routing(measured) for measured in routing_rounds.values()]
        if progress is not None:
            progress.update("overhead", done=total, total=total, note="done")
        nursery.cancel_scope.cancel()
    return OverheadResult(
        upstream=upstream,
        settings=settings,
        cells=tuple(cells),
        routing=tuple(routing),
        notes=tuple(notes),
    )


def run_overhead(
    settings: OverheadSettings | None = None, *, progress: Progress | None = None
) -> OverheadResult:
    """Run the overhead benchmark on the real clock (the upstream in a child process
    unless ``settings.subprocess_upstream`` is false).

    Raises RuntimeError if the upstream process does not start.
    """
    settings = settings or OverheadSettings.quick()
    if not settings.subprocess_upstream:
        return trio.run(_overhead, None, settings, progress)
    with upstream_process(settings.server) as port:
        return trio.run(_overhead, port, settings, progress)
