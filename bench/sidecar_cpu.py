"""The sidecar's own CPU per request, measured directly, beside the embedded engine's.

``python -m bench.sidecar_cpu [--requests N] [--rounds N] [--concurrency C ...]
[--upstream-latency-ms MS] [--gc-threshold N] [--json]``

The sidecar runs alone in this process and the caller is aiohttp's client in a child
process (``bench.aiohttp_baseline``), so this process's CPU is the sidecar's: its HTTP
server, the engine and its upstream client (``python -m bench --overhead`` measures
the same way in its ``sidecar-own`` cells). The upstream is ``bench.upstream`` in
another process. Each cell alternates embedded and sidecar rounds (interleaved, so
drift hits both alike) and reports medians, and the sidecar's ratio to embedded:
the issue's gates are 1.5x non-streamed and 2x streamed. Each round also runs aiohttp's
client alone on the upstream (the floor, in a fresh process), so the embedded engine's
ratio to it (gate 1.25x) is measured in the same sitting. ``--upstream-latency-ms``
makes the upstream answer that long after each request (the issue measured at 20 ms;
the default, 0, is what ``--overhead`` uses). The sidecar runs with the collector
setting ``oswitch serve`` uses; ``--gc-threshold N`` sets another (0: Python's own), to
measure what it saves; beside the sidecar's CPU it prints how long the collector ran per
request in its rounds. Needs aiohttp
(``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import time
from collections.abc import Iterator, Sequence

import trio

from bench.rounds import measure, run_aiohttp, run_sidecar_own
from bench.subjects import embedded_config, switcher_call, upstream_process
from oswitch import open_switcher
from oswitch.sidecar.collector import GATEWAY_YOUNG_THRESHOLD, collector_threshold


async def sidecar_round_collected(
    upstream_url: str,
    streamed: bool,
    concurrency: int,
    requests: int,
    *,
    young_threshold: int = GATEWAY_YOUNG_THRESHOLD,
) -> tuple[float, float]:
    """CPU ms per request of this process serving the sidecar to an aiohttp caller in a
    child process, over its counted calls only (``bench.rounds.run_sidecar_own``), and
    the milliseconds per request the cyclic collector ran in this process over the whole
    round (its warm-up included).

    Blocks until the child exits; raises RuntimeError if it fails or any call failed."""
    with collector_time() as spent:
        measured = await run_sidecar_own(
            upstream_url, streamed, concurrency, requests, young_threshold=young_threshold
        )
    if measured.errors:
        raise RuntimeError(f"{measured.errors} calls to the sidecar failed")
    return measured.cpu_s * 1000.0 / requests, spent[0] * 1000.0 / requests


@contextlib.contextmanager
def collector_time() -> Iterator[list[float]]:
    """Yield a one-item list that holds, once the block ends, the seconds the cyclic
    collector spent in this process during it (timed by ``gc.callbacks``)."""
    spent = [0.0]
    started = [0.0]

    def watch(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            spent[0] += time.perf_counter() - started[0]

    gc.callbacks.append(watch)
    try:
        yield spent
    finally:
        gc.callbacks.remove(watch)


async def embedded_round(
    upstream_url: str, streamed: bool, concurrency: int, requests: int
) -> float:
    """CPU ms per request of the embedded engine on the same upstream."""
    async with open_switcher(embedded_config(upstream_url)) as switcher:
        measured = await measure(switcher_call(switcher, streamed), concurrency, requests)
    if measured.errors:
        raise RuntimeError(f"{measured.errors} embedded calls failed")
    return measured.cpu_s * 1000.0 / requests


async def aiohttp_round(
    upstream_url: str, streamed: bool, concurrency: int, requests: int
) -> float:
    """CPU ms per request of aiohttp's client alone on the same upstream (the floor),
    in a fresh process. Raises RuntimeError if it fails or any call failed."""
    measured = await run_aiohttp(upstream_url, streamed, concurrency, requests)
    if measured.errors:
        raise RuntimeError(f"{measured.errors} aiohttp calls failed")
    return measured.cpu_s * 1000.0 / requests


async def _run(
    port: int,
    concurrencies: Sequence[int],
    requests: int,
    rounds: int,
    young_threshold: int = GATEWAY_YOUNG_THRESHOLD,
) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/v1"
    rows: list[dict[str, object]] = []
    for streamed in (False, True):
        for concurrency in concurrencies:
            embedded: list[float] = []
            sidecar: list[float] = []
            collected: list[float] = []
            floor: list[float] = []
            for _ in range(rounds):
                embedded.append(await embedded_round(url, streamed, concurrency, requests))
                own, collector = await sidecar_round_collected(
                    url, streamed, concurrency, requests, young_threshold=young_threshold
                )
                sidecar.append(own)
                collected.append(collector)
                floor.append(await aiohttp_round(url, streamed, concurrency, requests))
            e, s, c, a = (statistics.median(x) for x in (embedded, sidecar, collected, floor))
            rows.append(
                {
                    "mode": "stream" if streamed else "plain",
                    "concurrency": concurrency,
                    "aiohttp_ms": round(a, 4),
                    "embedded_ms": round(e, 4),
                    "embedded_vs_aiohttp": round(e / a, 2),
                    "sidecar_own_ms": round(s, 4),
                    "sidecar_collector_ms": round(c, 4),
                    "ratio": round(s / e, 2),
                    "gate": 2.0 if streamed else 1.5,
                }
            )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print one line per cell (and the rows as JSON with ``--json``)."""
    parser = argparse.ArgumentParser(prog="python -m bench.sidecar_cpu", description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, action="append")
    parser.add_argument(
        "--upstream-latency-ms",
        type=float,
        default=0.0,
        help="the upstream answers this long after each request (the issue measured at 20)",
    )
    parser.add_argument(
        "--gc-threshold",
        type=collector_threshold,
        default=GATEWAY_YOUNG_THRESHOLD,
        metavar="N",
        help="the sidecar's collector threshold, as `oswitch serve --gc-threshold` takes it "
        f"(default: serve's, {GATEWAY_YOUNG_THRESHOLD}; 0: Python's own setting)",
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    concurrencies = args.concurrency or [1, 32, 256]
    with upstream_process(latency_ms=args.upstream_latency_ms) as port:
        rows = trio.run(_run, port, concurrencies, args.requests, args.rounds, args.gc_threshold)
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    print(f"upstream latency {args.upstream_latency_ms:g} ms")
    print(
        "mode    conc  aiohttp ms  embedded ms  ÷ aiohttp  gate        "
        "sidecar own ms  ÷ embedded  gate        collector ms"
    )
    for row in rows:
        floor_verdict = "met" if float(row["embedded_vs_aiohttp"]) <= 1.25 else "MISSED"  # type: ignore[arg-type]
        verdict = "met" if float(row["ratio"]) <= float(row["gate"]) else "MISSED"  # type: ignore[arg-type]
        print(
            f"{row['mode']:<7} {row['concurrency']:<5} {row['aiohttp_ms']:<11} "
            f"{row['embedded_ms']:<12} {row['embedded_vs_aiohttp']:<10} 1.25x {floor_verdict:<6} "
            f"{row['sidecar_own_ms']:<15} {row['ratio']:<11} {row['gate']}x {verdict:<6} "
            f"{row['sidecar_collector_ms']}"
        )
    print(
        "(collector ms: per request, the time Python's cyclic collector ran in the "
        "sidecar's process over its rounds, warm-up included)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
