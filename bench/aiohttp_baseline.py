"""aiohttp's own client on asyncio: the floor the overhead benchmark holds oswitch to.

``python -m bench.aiohttp_baseline --url URL --concurrency N --requests N [--stream]
[--warmup N]`` runs the overhead benchmark's closed loop with ``aiohttp.ClientSession``
(its C HTTP parser, the fastest Python client we know of) on asyncio: a warm-up
(``--warmup`` calls, by default ``bench.record.warm_up_requests``), then ``N``
requests by ``N`` workers with the same body and headers as the other variants, each
reply parsed (every SSE event, when streamed). It prints one JSON object on stdout:
``cpu_s``, ``wall_s``, ``latencies`` and ``ttfts`` (seconds), ``errors``,
``peak_rss_mb``.

It runs in its own process, launched once per round by ``bench.rounds.run_aiohttp``, so that
``time.process_time`` counts aiohttp and asyncio only: the driver is trio, the
upstream is another process. Needs the optional extra ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp

from bench.record import PHASE_COUNTED, PHASE_COUNTING, current_rss_mb, warm_up_requests
from bench.upstream import OVERHEAD_KEY, overhead_request

Call = Callable[[], Awaitable[float | None]]


def aiohttp_call(session: aiohttp.ClientSession, url: str, streamed: bool) -> Call:
    """One call the way ``bench.subjects.http_call`` makes it, with aiohttp."""
    headers = {"authorization": f"Bearer {OVERHEAD_KEY}"}
    body = overhead_request(streamed)

    async def plain() -> float | None:
        async with session.post(url, json=body, headers=headers) as response:
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
            (await response.json())["choices"][0]["message"]["content"]
        return None

    async def stream() -> float | None:
        started = time.perf_counter()
        ttft: float | None = None
        async with session.post(url, json=body, headers=headers) as response:
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
            async for raw in response.content:
                line = raw.rstrip(b"\r\n")
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                choices = chunk.get("choices") or ()
                if ttft is None and choices and (choices[0].get("delta") or {}).get("content"):
                    ttft = time.perf_counter() - started
        return ttft

    return stream if streamed else plain


async def closed_loop(
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

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return errors


async def _sample_rss(peak: list[float]) -> None:
    while True:
        peak[0] = max(peak[0], current_rss_mb())
        await asyncio.sleep(0.02)


async def measure(
    url: str,
    streamed: bool,
    concurrency: int,
    requests: int,
    *,
    phases: bool = False,
    warm_up: int | None = None,
) -> dict[str, Any]:
    """Warm up, then time ``requests`` calls at ``concurrency``; the figures as JSON data
    (with ``phases``, ``bench.record``'s phase lines printed around the timed calls,
    for ``bench.rounds.run_sidecar_own``)."""
    # The same pool size and (absent) timeouts as the bare httpx client's.
    connector = aiohttp.TCPConnector(limit=512, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        call = aiohttp_call(session, url, streamed)
        if warm_up is None:
            warm_up = warm_up_requests(concurrency)
        await closed_loop(call, concurrency, warm_up, [], [])
        gc.collect()
        latencies: list[float] = []
        ttfts: list[float] = []
        peak = [current_rss_mb()]
        sampler = asyncio.create_task(_sample_rss(peak))
        if phases:
            print(PHASE_COUNTING.decode(), flush=True)
        cpu, wall = time.process_time(), time.perf_counter()
        errors = await closed_loop(call, concurrency, requests, latencies, ttfts)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if phases:
            print(PHASE_COUNTED.decode(), flush=True)
        sampler.cancel()
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "latencies": latencies,
        "ttfts": ttfts,
        "errors": errors,
        "peak_rss_mb": peak[0],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.aiohttp_baseline")
    parser.add_argument("--url", required=True, help="the upstream's chat completions URL")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument(
        "--warmup", type=int, default=None, help="uncounted calls first (default max(N, 20))"
    )
    parser.add_argument(
        "--phases", action="store_true", help="print when the counted calls start and end"
    )
    args = parser.parse_args(argv)
    figures = asyncio.run(
        measure(
            args.url,
            args.stream,
            args.concurrency,
            args.requests,
            phases=args.phases,
            warm_up=args.warmup,
        )
    )
    json.dump(figures, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
