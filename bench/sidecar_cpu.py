"""The sidecar's own CPU per request, measured directly, beside the embedded engine's.

``python -m bench.sidecar_cpu [--requests N] [--rounds N] [--concurrency C ...]
[--upstream-latency-ms MS] [--json]``

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
the default, 0, is what ``--overhead`` uses). Needs aiohttp
(``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence

import trio

from bench.overhead import (
    _measure,
    _run_aiohttp,
    embedded_config,
    run_sidecar_own,
    switcher_call,
    upstream_process,
)
from oswitch import open_switcher


async def sidecar_round(
    upstream_url: str, streamed: bool, concurrency: int, requests: int
) -> float:
    """CPU ms per request of this process serving the sidecar to an aiohttp caller in
    a child process, over its counted calls only (``bench.overhead.run_sidecar_own``).

    Blocks until the child exits; raises RuntimeError if it fails or any call failed.
    """
    measured = await run_sidecar_own(upstream_url, streamed, concurrency, requests)
    if measured.errors:
        raise RuntimeError(f"{measured.errors} calls to the sidecar failed")
    return measured.cpu_s * 1000.0 / requests


async def embedded_round(
    upstream_url: str, streamed: bool, concurrency: int, requests: int
) -> float:
    """CPU ms per request of the embedded engine on the same upstream."""
    async with open_switcher(embedded_config(upstream_url)) as switcher:
        measured = await _measure(switcher_call(switcher, streamed), concurrency, requests)
    if measured.errors:
        raise RuntimeError(f"{measured.errors} embedded calls failed")
    return measured.cpu_s * 1000.0 / requests


async def aiohttp_round(
    upstream_url: str, streamed: bool, concurrency: int, requests: int
) -> float:
    """CPU ms per request of aiohttp's client alone on the same upstream (the floor),
    in a fresh process. Raises RuntimeError if it fails or any call failed."""
    measured = await _run_aiohttp(upstream_url, streamed, concurrency, requests)
    if measured.errors:
        raise RuntimeError(f"{measured.errors} aiohttp calls failed")
    return measured.cpu_s * 1000.0 / requests


async def _run(
    port: int, concurrencies: Sequence[int], requests: int, rounds: int
) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/v1"
    rows: list[dict[str, object]] = []
    for streamed in (False, True):
        for concurrency in concurrencies:
            embedded: list[float] = []
            sidecar: list[float] = []
            floor: list[float] = []
            for _ in range(rounds):
                embedded.append(await embedded_round(url, streamed, concurrency, requests))
                sidecar.append(await sidecar_round(url, streamed, concurrency, requests))
                floor.append(await aiohttp_round(url, streamed, concurrency, requests))
            e, s, a = (statistics.median(x) for x in (embedded, sidecar, floor))
            rows.append(
                {
                    "mode": "stream" if streamed else "plain",
                    "concurrency": concurrency,
                    "aiohttp_ms": round(a, 4),
                    "embedded_ms": round(e, 4),
                    "embedded_vs_aiohttp": round(e / a, 2),
                    "sidecar_own_ms": round(s, 4),
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
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    with upstream_process(latency_ms=args.upstream_latency_ms) as port:
        rows = trio.run(_run, port, args.concurrency or [1, 32, 256], args.requests, args.rounds)
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    print(f"upstream latency {args.upstream_latency_ms:g} ms")
    print(
        "mode    conc  aiohttp ms  embedded ms  ÷ aiohttp  gate        "
        "sidecar own ms  ÷ embedded  gate"
    )
    for row in rows:
        floor_verdict = "met" if float(row["embedded_vs_aiohttp"]) <= 1.25 else "MISSED"  # type: ignore[arg-type]
        verdict = "met" if float(row["ratio"]) <= float(row["gate"]) else "MISSED"  # type: ignore[arg-type]
        print(
            f"{row['mode']:<7} {row['concurrency']:<5} {row['aiohttp_ms']:<11} "
            f"{row['embedded_ms']:<12} {row['embedded_vs_aiohttp']:<10} 1.25x {floor_verdict:<6} "
            f"{row['sidecar_own_ms']:<15} {row['ratio']:<11} {row['gate']}x {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
