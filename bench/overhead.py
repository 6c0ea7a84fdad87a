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
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from bench.progress import Progress
from bench.record import (
    PHASE_COUNTED,
    PHASE_COUNTING,
    Percentiles,
    current_rss_mb,
    warm_up_requests,
)
from bench.upstream import OVERHEAD_KEY, overhead_fake, overhead_request, serve_raw_upstream
from oswitch import SwitcherConfig, open_switcher, parse_config
from oswitch.sidecar.collector import GATEWAY_YOUNG_THRESHOLD, gateway_collector
from oswitch.testing import completion, serve_fake_provider

MODEL = "gpt-4o-mini"
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
# Far above a full round's few seconds; only a hung child reaches it.
AIOHTTP_ROUND_TIMEOUT_S = 300.0


def aiohttp_available() -> bool:
    """Whether the aiohttp baseline can run (the optional ``bench`` extra)."""
    return importlib.util.find_spec("aiohttp") is not None


ROOT = Path(__file__).resolve().parent.parent


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


# ---- the upstream ---------------------------------------------------------------------


@contextlib.contextmanager
def upstream_process(
    server: str = "raw", timeout_s: float = 30.0, latency_ms: float = 0.0
) -> Iterator[int]:
    """Run ``python -m bench.upstream`` in a child process (answering ``latency_ms``
    after each request); yield its port.

    Raises RuntimeError if it does not report a port within ``timeout_s``.
    """
    arguments = ("--server", server, "--latency-ms", str(latency_ms))
    with port_reporting_child(["bench.upstream", *arguments], timeout_s=timeout_s) as port:
        yield port


def child_env() -> dict[str, str]:
    """This environment, with the checkout first on PYTHONPATH (so ``-m bench...``
    children import this tree's bench and oswitch)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


@contextlib.contextmanager
def port_reporting_child(module_and_args: list[str], *, timeout_s: float = 30.0) -> Iterator[int]:
    """Run ``python -m <module> --port-file FILE <args>`` in a child process until the
    block ends (then terminate it, killed after 5 s); yield the port it wrote to FILE.

    Raises RuntimeError if it exits or writes no port within ``timeout_s``.
    """
    module, *arguments = module_and_args
    with tempfile.TemporaryDirectory(prefix="oswitch-bench-") as tmp:
        port_file = os.path.join(tmp, "port")
        child = subprocess.Popen(
            [sys.executable, "-m", module, "--port-file", port_file, *arguments],
            cwd=ROOT,
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + timeout_s
            while not os.path.exists(port_file):
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{module} did not start")
                time.sleep(0.05)
            with open(port_file) as f:
                port = int(f.read())
            yield port
        finally:
            child.terminate()
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


# ---- one request, three ways -------------------------------------------------------------

Call = Callable[[], Awaitable[float | None]]


def http_call(client: httpx.AsyncClient, url: str, streamed: bool) -> Call:
    """A bare httpx call that parses the reply (every SSE event, when streamed)."""
    headers = {"authorization": f"Bearer {OVERHEAD_KEY}"}
    body = overhead_request(streamed)

    async def plain() -> float | None:
        response = await client.post(url, json=body, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")
        response.json()["choices"][0]["message"]["content"]
        return None

    async def stream() -> float | None:
        started = time.perf_counter()
        ttft: float | None = None
        async with client.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}")
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                choices = chunk.get("choices") or ()
                if ttft is None and choices and (choices[0].get("delta") or {}).get("content"):
                    ttft = time.perf_counter() - started
        return ttft

    return stream if streamed else plain


def switcher_call(switcher: Any, streamed: bool) -> Call:
    """A call through an embedded switcher (``complete`` or ``stream``)."""
    body = overhead_request(False)

    async def plain() -> float | None:
        reply = await switcher.complete(body)
        reply["choices"][0]["message"]["content"]
        return None

    async def stream() -> float | None:
        started = time.perf_counter()
        ttft: float | None = None
        async with switcher.stream(body) as chunks:
            async for _ in chunks:
                if ttft is None:
                    ttft = time.perf_counter() - started
        return ttft

    return stream if streamed else plain


def embedded_config(base_url: str, *, targets: int = 1, concurrency: int = 512) -> SwitcherConfig:
    """Targets serving one model at ``base_url`` with limits that never bind the benchmark."""
    return parse_config(
        {
            "concurrency_limit": concurrency,
            "queue_limit": 4 * concurrency,
            "backpressure_threshold": 4 * concurrency,
            "targets": [
                {
                    "target_id": f"upstream-{n}",
                    "provider_id": "openai",
                    "base_url": base_url,
                    "api_key": OVERHEAD_KEY if targets == 1 else f"{OVERHEAD_KEY}-{n}",
                    "model": MODEL,
                    "concurrency_limit": concurrency,
                }
                for n in range(targets)
            ],
        }
    )


# Request traces an engine keeps (the config's default, which embedded_config keeps).
TRACE_CAPACITY: int = attrs.fields(SwitcherConfig).trace_capacity.default


def pool_limits(concurrency: int = 512) -> httpx.Limits:
    """httpx pool limits as large as the benchmark's oswitch target gets."""
    return httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)


def http_client(concurrency: int = 512) -> httpx.AsyncClient:
    """The bare client: the same pool size and timeouts oswitch gives a target."""
    return httpx.AsyncClient(limits=pool_limits(concurrency), timeout=httpx.Timeout(None, pool=5.0))


# ---- measuring ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _Round:
    cpu_s: float
    wall_s: float
    latencies: tuple[float, ...]
    ttfts: tuple[float, ...]
    errors: int
    peak_rss_mb: float


async def _closed_loop(
    call: Call, concurrency: int, requests: int, latencies: list[float], ttfts: list[float]
) -> int:
    """Run ``requests`` calls with ``concurrency`` workers; return how many failed."""
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


async def _measure(
    call: Call, concurrency: int, requests: int, *, warm_up: int | None = None
) -> _Round:
    # Warm-up: open every connection the cell will use, fill caches (and, when asked,
    # oswitch's trace store).
    if warm_up is None:
        warm_up = warm_up_requests(concurrency)
    await _closed_loop(call, concurrency, warm_up, [], [])
    gc.collect()
    latencies: list[float] = []
    ttfts: list[float] = []
    peak = [current_rss_mb()]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_sample_rss, peak)
        cpu, wall = time.process_time(), time.perf_counter()
        errors = await _closed_loop(call, concurrency, requests, latencies, ttfts)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        nursery.cancel_scope.cancel()
    return _Round(
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


async def _run_aiohttp(
    upstream_url: str, streamed: bool, concurrency: int, requests: int
) -> _Round:
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


def _child_round(figures: dict[str, Any], *, cpu_s: float | None = None) -> _Round:
    return _Round(
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
) -> _Round:
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


async def _run_variant(
    variant: str,
    upstream_url: str,
    streamed: bool,
    concurrency: int,
    requests: int,
    *,
    steady_state: bool = False,
) -> _Round:
    from oswitch.sidecar.serve import serve_sidecar

    warm_up = cell_warm_up(variant, concurrency, steady_state=steady_state)
    if variant == FLOOR:
        return await _run_aiohttp(upstream_url, streamed, concurrency, requests)
    if variant == SIDECAR_OWN:
        return await run_sidecar_own(upstream_url, streamed, concurrency, requests, warm_up=warm_up)
    if variant == "httpx":
        async with http_client() as client:
            url = f"{upstream_url}/chat/completions"
            call = http_call(client, url, streamed)
            return await _measure(call, concurrency, requests, warm_up=warm_up)
    if variant == "embedded-httpx":
        transport = httpx.AsyncHTTPTransport(limits=pool_limits())
        try:
            async with open_switcher(embedded_config(upstream_url), transport=transport) as s:
                call = switcher_call(s, streamed)
                return await _measure(call, concurrency, requests, warm_up=warm_up)
        finally:
            await transport.aclose()
    async with open_switcher(embedded_config(upstream_url)) as switcher:
        if variant == "embedded":
            call = switcher_call(switcher, streamed)
            return await _measure(call, concurrency, requests, warm_up=warm_up)
        async with trio.open_nursery() as nursery, http_client() as client:
            port = await nursery.start(functools.partial(serve_sidecar, switcher, port=0))
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            call = http_call(client, url, streamed)
            result = await _measure(call, concurrency, requests, warm_up=warm_up)
            nursery.cancel_scope.cancel()
            return result


def _cell(variant: str, streamed: bool, concurrency: int, rounds: Sequence[_Round]) -> Cell:
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


# ---- routing cost over a null transport --------------------------------------------------

_CANNED = json.dumps(completion("ok", model=MODEL)).encode()


def null_transport() -> httpx.MockTransport:
    """A transport that answers every request at once with a canned completion."""

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=_CANNED, headers={"content-type": "application/json"})

    return httpx.MockTransport(handle)


async def _routing_cell(targets: int, requests: int) -> RoutingCell:
    transport = null_transport()
    if targets == 0:
        async with httpx.AsyncClient(transport=transport) as client:
            call = http_call(client, "https://null.bench.test/v1/chat/completions", False)
            measured = await _measure(call, 1, requests)
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
        measured = await _measure(switcher_call(switcher, False), 1, requests)
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
            rounds: dict[str, list[_Round]] = {v: [] for v in variants}
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
                        await _run_variant(
                            variant,
                            url,
                            streamed,
                            concurrency,
                            settings.requests,
                            steady_state=settings.steady_state,
                        )
                    )
                    done += 1
            cells.extend(_cell(v, streamed, concurrency, rounds[v]) for v in variants)
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
