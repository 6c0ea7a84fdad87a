"""One round of one variant of the overhead benchmark, and a cell from its rounds.

A round runs ``requests`` calls closed-loop at a concurrency after an uncounted
warm-up and takes the CPU this process spent (``measure``), or a child's own figures
(``run_aiohttp``), or this process's CPU between a child caller's phase lines (the
sidecar alone, ``run_sidecar_own``). ``cell`` takes the median over rounds.
"""

from __future__ import annotations

import functools
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import attrs
import httpx
import trio

from bench.overhead_result import FLOOR, OSWITCH_VARIANTS, SIDECAR_OWN, Cell
from bench.record import (
    PHASE_COUNTED,
    PHASE_COUNTING,
    Percentiles,
    current_rss_mb,
    warm_up_requests,
)
from bench.subjects import (
    ROOT,
    TRACE_CAPACITY,
    Call,
    child_env,
    embedded_config,
    http_call,
    http_client,
    pool_limits,
    switcher_call,
)
from oswitch import open_switcher
from oswitch.sidecar.collector import GATEWAY_YOUNG_THRESHOLD, gateway_collector

# Far above a full round's few seconds; only a hung child reaches it.
AIOHTTP_ROUND_TIMEOUT_S = 300.0


@attrs.frozen(kw_only=True)
class Round:
    """One round's figures: the CPU and wall seconds of its counted calls, each call's
    latency (and time to first content, streams), the calls that failed, and the
    highest resident size sampled meanwhile."""

    cpu_s: float
    wall_s: float
    latencies: tuple[float, ...]
    ttfts: tuple[float, ...]
    errors: int
    peak_rss_mb: float


async def closed_loop(
    call: Call, concurrency: int, requests: int, latencies: list[float], ttfts: list[float]
) -> int:
    """Run ``requests`` calls with ``concurrency`` workers; return how many failed.

    Blocks until every call has ended; each call's latency (and time to first content)
    is appended to the lists given. A failed call is counted, never raised."""
    remaining = requests
    errors = 0

    async def worker() -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            try:
                ttft = await call()
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            if ttft is not None:
                ttfts.append(ttft)

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return errors


async def _sample_rss(peak: list[float]) -> None:
    while True:
        peak[0] = max(peak[0], current_rss_mb())
        await trio.sleep(0.02)


async def measure(
    call: Call, concurrency: int, requests: int, *, warm_up: int | None = None
) -> Round:
    """One round of ``call``: ``warm_up`` uncounted calls (default
    ``bench.record.warm_up_requests``), a full collection, then ``requests`` counted
    calls, this process's CPU taken around them. Blocks until they end."""
    # Warm-up: open every connection the cell will use, fill caches (and, when asked,
    # oswitch's trace store).
    if warm_up is None:
        warm_up = warm_up_requests(concurrency)
    await closed_loop(call, concurrency, warm_up, [], [])
    gc.collect()
    latencies: list[float] = []
    ttfts: list[float] = []
    peak = [current_rss_mb()]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_sample_rss, peak)
        cpu, wall = time.process_time(), time.perf_counter()
        errors = await closed_loop(call, concurrency, requests, latencies, ttfts)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        nursery.cancel_scope.cancel()
    return Round(
        cpu_s=cpu,
        wall_s=wall,
        latencies=tuple(latencies),
        ttfts=tuple(ttfts),
        errors=errors,
        peak_rss_mb=peak[0],
    )


def _aiohttp_command(
    url: str,
    streamed: bool,
    concurrency: int,
    requests: int,
    *,
    phases: bool = False,
    warm_up: int | None = None,
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.aiohttp_baseline",
        "--url",
        url,
        "--concurrency",
        str(concurrency),
        "--requests",
        str(requests),
        *(["--stream"] if streamed else []),
        *(["--phases"] if phases else []),
        *(["--warmup", str(warm_up)] if warm_up is not None else []),
    ]


def _child_failed(returncode: int, stderr: bytes) -> RuntimeError:
    tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
    return RuntimeError(f"the aiohttp baseline failed ({returncode}): {tail[0]}")


async def run_aiohttp(upstream_url: str, streamed: bool, concurrency: int, requests: int) -> Round:
    """One round of the aiohttp baseline in a fresh process (``bench.aiohttp_baseline``):
    the child's own figures.

    Blocks until that process exits; raises RuntimeError if it fails, and
    trio.TooSlowError (the child killed) if it runs past ``AIOHTTP_ROUND_TIMEOUT_S``.
    """
    command = _aiohttp_command(f"{upstream_url}/chat/completions", streamed, concurrency, requests)
    # A hung child must not hang the bench: run_process kills it when cancelled.
    with trio.fail_after(AIOHTTP_ROUND_TIMEOUT_S):
        done = await trio.run_process(
            command,
            cwd=ROOT,
            env=child_env(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    if done.returncode != 0:
        raise _child_failed(done.returncode, done.stderr)
    return _child_round(json.loads(done.stdout))


def _child_round(figures: dict[str, Any], *, cpu_s: float | None = None) -> Round:
    return Round(
        cpu_s=figures["cpu_s"] if cpu_s is None else cpu_s,
        wall_s=figures["wall_s"],
        latencies=tuple(figures["latencies"]),
        ttfts=tuple(figures["ttfts"]),
        errors=figures["errors"],
        peak_rss_mb=figures["peak_rss_mb"],
    )


async def run_sidecar_own(
    upstream_url: str,
    streamed: bool,
    concurrency: int,
    requests: int,
    *,
    young_threshold: int = GATEWAY_YOUNG_THRESHOLD,
    warm_up: int | None = None,
) -> Round:
    """One round of the sidecar alone in this process, its caller aiohttp's client in
    a child process (``bench.aiohttp_baseline --phases``): this process's CPU, taken
    between the child's two phase lines, is the sidecar's own over
    the counted calls (its HTTP server, the engine, its upstream client), with no
    client of its own to subtract and none of the child's start, warm-up or exit.
    Latencies are the child's; the peak RSS is this process's, sampled meanwhile. The
    round runs with the cyclic collector set as ``oswitch serve`` sets it
    (:func:`oswitch.sidecar.collector.gateway_collector`; ``young_threshold`` as
    ``--gc-threshold`` takes it), restored afterwards. ``warm_up`` is the caller's
    uncounted calls (default ``bench.record.warm_up_requests``).

    Blocks until the child exits; raises RuntimeError if it fails or never reports its
    phases, and trio.TooSlowError (the child killed) past ``AIOHTTP_ROUND_TIMEOUT_S``.
    """
    from oswitch.sidecar.serve import serve_sidecar

    # As `oswitch serve` runs it: with the gateway's collector setting (the embedded
    # and aiohttp cells keep the interpreter's default, as an application would).
    with gateway_collector(young_threshold):
        async with open_switcher(embedded_config(upstream_url)) as switcher:
            async with trio.open_nursery() as nursery:
                port = await nursery.start(functools.partial(serve_sidecar, switcher, port=0))
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                command = _aiohttp_command(
                    url, streamed, concurrency, requests, phases=True, warm_up=warm_up
                )
                with trio.fail_after(AIOHTTP_ROUND_TIMEOUT_S):
                    cpu_s, peak, out, err, returncode = await _phased_child(command)
                nursery.cancel_scope.cancel()
    if returncode != 0:
        raise _child_failed(returncode, err)
    if cpu_s is None:
        raise RuntimeError("the aiohttp baseline reported no counted phase")
    return attrs.evolve(_child_round(json.loads(out), cpu_s=cpu_s), peak_rss_mb=peak)


async def _phased_child(command: list[str]) -> tuple[float | None, float, bytes, bytes, int]:
    """Run ``command`` (a ``--phases`` aiohttp baseline); this process's CPU seconds
    between its phase lines (None if it printed none), this process's peak RSS
    meanwhile, the figures it printed after them, its stderr and its exit status."""
    stderr = bytearray()
    rest = bytearray()
    started: float | None = None
    cpu_s: float | None = None
    peak = [current_rss_mb()]
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            functools.partial(
                trio.run_process,
                command,
                cwd=ROOT,
                env=child_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                check=False,
            )
        )
        assert process.stdout is not None and process.stderr is not None
        nursery.start_soon(_drain, process.stderr, stderr)  # ends at the child's exit
        async with trio.open_nursery() as sampling:
            sampling.start_soon(_sample_rss, peak)
            async for piece in process.stdout:
                rest += piece
                while started is None or cpu_s is None:
                    line_end = rest.find(b"\n")
                    if line_end < 0:
                        break
                    line = bytes(rest[:line_end]).strip()
                    del rest[: line_end + 1]
                    if started is None and line == PHASE_COUNTING:
                        started = time.process_time()
                    elif started is not None and line == PHASE_COUNTED:
                        cpu_s = time.process_time() - started
            returncode = await process.wait()
            sampling.cancel_scope.cancel()
    return cpu_s, peak[0], bytes(rest), bytes(stderr), returncode


async def _drain(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
    async for piece in stream:
        into += piece


def cell_warm_up(variant: str, concurrency: int, *, steady_state: bool) -> int:
    """The uncounted calls before a round of ``variant``: enough to open its connections,
    and with ``steady_state`` for a variant running oswitch, enough more to fill its
    trace store (``trace_capacity``), so the round counts oswitch as a process that has
    served a thousand requests runs, not its first thousand."""
    kept = TRACE_CAPACITY if steady_state and variant in OSWITCH_VARIANTS else 0
    return warm_up_requests(concurrency, kept_traces=kept)


async def run_variant(
    variant: str,
    upstream_url: str,
    streamed: bool,
    concurrency: int,
    requests: int,
    *,
    steady_state: bool = False,
) -> Round:
    """One round of ``variant`` (``httpx``, ``embedded``, ``embedded-httpx``, ``sidecar``,
    the floor ``aiohttp`` or ``sidecar-own``) against the upstream at ``upstream_url``,
    warmed up as :func:`cell_warm_up` says. Blocks until the round ends; raises
    RuntimeError if a child process it needs fails."""
    from oswitch.sidecar.serve import serve_sidecar

    warm_up = cell_warm_up(variant, concurrency, steady_state=steady_state)
    if variant == FLOOR:
        return await run_aiohttp(upstream_url, streamed, concurrency, requests)
    if variant == SIDECAR_OWN:
        return await run_sidecar_own(upstream_url, streamed, concurrency, requests, warm_up=warm_up)
    if variant == "httpx":
        async with http_client() as client:
            url = f"{upstream_url}/chat/completions"
            call = http_call(client, url, streamed)
            return await measure(call, concurrency, requests, warm_up=warm_up)
    if variant == "embedded-httpx":
        transport = httpx.AsyncHTTPTransport(limits=pool_limits())
        try:
            async with open_switcher(embedded_config(upstream_url), transport=transport) as s:
                call = switcher_call(s, streamed)
                return await measure(call, concurrency, requests, warm_up=warm_up)
        finally:
            await transport.aclose()
    async with open_switcher(embedded_config(upstream_url)) as switcher:
        if variant == "embedded":
            call = switcher_call(switcher, streamed)
            return await measure(call, concurrency, requests, warm_up=warm_up)
        async with trio.open_nursery() as nursery, http_client() as client:
            port = await nursery.start(functools.partial(serve_sidecar, switcher, port=0))
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            call = http_call(client, url, streamed)
            result = await measure(call, concurrency, requests, warm_up=warm_up)
            nursery.cancel_scope.cancel()
            return result


def cell(variant: str, streamed: bool, concurrency: int, rounds: Sequence[Round]) -> Cell:
    """The cell of ``rounds`` (at least one): the median CPU per request, and the
    latencies and throughput of the round of median CPU."""
    requests = max(1, len(rounds[0].latencies) + rounds[0].errors)
    cpu = [r.cpu_s * 1000.0 / requests for r in rounds]
    median_cpu = statistics.median(cpu)
    middle = sorted(rounds, key=lambda r: r.cpu_s)[len(rounds) // 2]
    return Cell(
        variant=variant,
        streamed=streamed,
        concurrency=concurrency,
        requests=requests,
        rounds=len(rounds),
        cpu_ms_per_request=round(median_cpu, 4),
        cpu_ms_rounds=tuple(round(c, 4) for c in cpu),
        latency=Percentiles.of(middle.latencies),
        ttft=Percentiles.of(middle.ttfts),
        throughput_rps=round(requests / middle.wall_s, 1) if middle.wall_s > 0 else 0.0,
        peak_rss_mb=round(max(r.peak_rss_mb for r in rounds), 1),
        errors=sum(r.errors for r in rounds),
    )
