"""``python -m bench --fleet N``: N sidecars over loopback, sharing a real
redis-server when one is on PATH, against the same N each on its own.

It reports, per one-second window, what reached the provider for one key against
the key's limit — shared store vs per-replica limits — and a fault timeline on the
shared fleet (``SCRIPT FLUSH``, ``SIGSTOP``/``SIGCONT``, ``SIGKILL`` of the store)
with the clients' failures and latency in each phase. Writes ``fleet.json`` and
``fleet.svg`` (the chart) to the output directory.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from bench.fleet import (
    Drive,
    FleetTarget,
    drive,
    fleet_config,
    open_fleet,
    open_provider,
    per_window,
    window_bound,
)
from bench.redis_server import RedisServer, server_binary
from oswitch.testing.provider import FakeProvider
from oswitch.testing.replies import reply

RATE, BURST = 10.0, 2
LIMITED = FleetTarget(target_id="limited", key="key-limited", requests_per_minute=600, burst=BURST)
# No limit of its own: its latency shows what the store adds, phase by phase.
FREE = FleetTarget(target_id="free", key="key-free")
RUN_S = 4.0
# The fault timeline, seconds from the start of the run.
FAULTS = ((1.0, "SCRIPT FLUSH"), (2.0, "SIGSTOP"), (3.0, "SIGCONT"), (4.0, "SIGKILL"))
TIMELINE_S = 6.0


@attrs.frozen(kw_only=True)
class FleetRun:
    label: str
    windows: list[int]  # arrivals at the provider per window
    client_failures: int  # any answer but 200 or a 503 after max_wait_ms
    over_limit: int  # 503: the limit kept the request waiting past max_wait_ms
    requests: int
    latency_p50_ms: float
    latency_p99_ms: float


def _summary(label: str, fake: FakeProvider, result: Drive, window: float) -> FleetRun:
    arrivals = [call.at for call in fake.calls if call.route == LIMITED.key]
    latencies = sorted(result.latencies) or [0.0]
    return FleetRun(
        label=label,
        windows=per_window(arrivals, result.started_at, result.ended_at, window),
        client_failures=sum(1 for status in result.statuses if status not in (200, 503)),
        over_limit=sum(1 for status in result.statuses if status == 503),
        requests=len(result.statuses),
        latency_p50_ms=round(statistics.median(latencies) * 1000, 2),
        latency_p99_ms=round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 2),
    )


async def _run(n: int, directory: Path, store: RedisServer | None, label: str) -> FleetRun:
    fake = FakeProvider().on(LIMITED.key, reply())
    async with open_provider(fake) as port:
        toml = fleet_config(
            [LIMITED],
            provider_port=port,
            store_url=store.url if store else None,
            prefix="bench",
            replicas=n,
        )
        async with open_fleet(toml, directory, replicas=n) as fleet:
            result = await drive(fleet, "limited", duration=RUN_S, per_replica=2)
    return _summary(label, fake, result, 1.0)


def _phase_latency(free: Drive, phases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The unlimited key's client latency (p50, p99, max, in ms) in each fault phase."""
    edges = [0.0, *(p["at_s"] for p in phases), TIMELINE_S + 10]
    names = ["normal", *(p["fault"] for p in phases)]
    rows = []
    for name, low, high in zip(names, edges, edges[1:], strict=False):
        got = sorted(
            lat for at, lat in zip(free.sent, free.latencies, strict=True) if low <= at < high
        ) or [0.0]
        rows.append(
            {
                "phase": name,
                "requests": len(got),
                "p50_ms": round(statistics.median(got) * 1000, 2),
                "p99_ms": round(got[int(0.99 * (len(got) - 1))] * 1000, 2),
                "max_ms": round(got[-1] * 1000, 2),
            }
        )
    return rows


async def _timeline(
    n: int, directory: Path, store: RedisServer
) -> tuple[FleetRun, list[dict[str, Any]], list[dict[str, Any]]]:
    fake = FakeProvider().on(LIMITED.key, reply()).on(FREE.key, reply())
    phases: list[dict[str, Any]] = []
    free: list[Drive] = []
    async with open_provider(fake) as port:
        toml = fleet_config(
            [LIMITED, FREE], provider_port=port, store_url=store.url, prefix="tl", replicas=n
        )
        async with open_fleet(toml, directory, replicas=n) as fleet:
            async with trio.open_nursery() as nursery:
                start = trio.current_time()

                async def faults() -> None:
                    for at, fault in FAULTS:
                        await trio.sleep_until(start + at)
                        if fault == "SCRIPT FLUSH":
                            await trio.to_thread.run_sync(store.command, "SCRIPT", "FLUSH")
                        elif fault == "SIGSTOP":
                            store.pause()
                        elif fault == "SIGCONT":
                            store.resume()
                        else:
                            store.kill()
                        phases.append({"at_s": at, "fault": fault})

                async def unlimited() -> None:
                    free.append(await drive(fleet, "free", duration=TIMELINE_S, per_replica=1))

                nursery.start_soon(faults)
                nursery.start_soon(unlimited)
                result = await drive(fleet, "limited", duration=TIMELINE_S, per_replica=2)
    timeline = _summary("shared store, faults", fake, result, 0.5)
    return timeline, phases, _phase_latency(free[0], phases)


def _svg(
    runs: Sequence[FleetRun], timeline: FleetRun | None, phases: list[dict[str, Any]], n: int
) -> str:
    """Bars per window for each run against the limit, then the fault timeline."""
    width, row_h, pad = 760, 180, 40
    rows = [*runs, *([timeline] if timeline else [])]
    height = pad + row_h * len(rows) + 20
    top = max(max(run.windows or [1]) for run in rows) or 1
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<text x="10" y="20" font-size="14">oswitch fleet: {n} replicas, one key at '
        f"{RATE:g}/s burst {BURST} — requests reaching the provider per window</text>",
    ]
    for index, run in enumerate(rows):
        y0 = pad + index * row_h
        window = 0.5 if run is timeline else 1.0
        limit = window_bound(RATE, BURST, window) - 1
        scale = (row_h - 50) / top
        bar = (width - 80) / max(1, len(run.windows))
        out.append(f'<text x="10" y="{y0 + 12}">{run.label} (window {window:g} s)</text>')
        base = y0 + row_h - 25
        for i, count in enumerate(run.windows):
            h = count * scale
            x = 60 + i * bar
            colour = "#c0392b" if count > limit + 1 else "#2e86c1"
            out.append(
                f'<rect x="{x:.1f}" y="{base - h:.1f}" width="{bar * 0.8:.1f}" '
                f'height="{h:.1f}" fill="{colour}"/>'
            )
            out.append(f'<text x="{x:.1f}" y="{base - h - 3:.1f}">{count}</text>')
        ly = base - limit * scale
        out.append(
            f'<line x1="55" x2="{width - 10}" y1="{ly:.1f}" y2="{ly:.1f}" '
            'stroke="#27ae60" stroke-dasharray="4"/>'
        )
        out.append(
            f'<text x="{width - 120}" y="{ly - 4:.1f}" fill="#27ae60">limit {limit:g}</text>'
        )
        if run is timeline:
            for phase in phases:
                x = 60 + phase["at_s"] / window * bar
                out.append(
                    f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y0 + 18}" y2="{base}" stroke="#555"/>'
                )
                out.append(f'<text x="{x + 2:.1f}" y="{y0 + 30}">{phase["fault"]}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def run_fleet_bench(n: int, out: Path) -> int:
    """Run the fleet bench with ``n`` replicas; print the report, write JSON and SVG."""
    binary = server_binary()
    runs: list[FleetRun] = []
    timeline: FleetRun | None = None
    phases: list[dict[str, Any]] = []
    latency: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)

        async def main() -> None:
            nonlocal timeline, phases, latency
            if binary is not None:
                store = RedisServer(binary, directory)
                try:
                    runs.append(await _run(n, directory, store, "shared store"))
                finally:
                    store.close()
            runs.append(await _run(n, directory, None, "per-replica limits (no store)"))
            if binary is not None:
                store = RedisServer(binary, directory)
                try:
                    timeline, phases, latency = await _timeline(n, directory, store)
                finally:
                    store.close()

        trio.run(main)
    if binary is None:
        print("redis-server not on PATH: the shared-store runs are skipped")
    limit = window_bound(RATE, BURST, 1.0) - 1
    print(f"fleet of {n}: one key at {RATE:g}/s, burst {BURST}: at most {limit:g} per second")
    for run in runs:
        print(
            f"  {run.label:<32} per second {run.windows}  max {max(run.windows or [0])}  "
            f"failures {run.client_failures}/{run.requests}  over the limit {run.over_limit}  "
            f"p50 {run.latency_p50_ms} ms  p99 {run.latency_p99_ms} ms"
        )
    if timeline is not None:
        shown = ", ".join(f"{p['fault']} at {p['at_s']:g}s" for p in phases)
        print(f"  fault timeline ({shown}):")
        print(
            f"    per 0.5 s {timeline.windows} (at most {window_bound(RATE, BURST, 0.5) - 1:g}"
            f" shared)  failures {timeline.client_failures}/{timeline.requests}  "
            f"over the limit {timeline.over_limit}"
        )
        print("    latency of an unlimited key (what the store adds), by phase:")
        for row in latency:
            print(
                f"      {row['phase']:<13} {row['requests']:>4} requests  p50 {row['p50_ms']} ms"
                f"  p99 {row['p99_ms']} ms  max {row['max_ms']} ms"
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / "fleet.json").write_text(
        json.dumps(
            {
                "replicas": n,
                "rate_per_s": RATE,
                "burst": BURST,
                "runs": [attrs.asdict(run) for run in runs],
                "timeline": attrs.asdict(timeline) if timeline else None,
                "faults": phases,
                "latency_by_phase": latency,
            },
            indent=2,
        )
    )
    (out / "fleet.svg").write_text(_svg(runs, timeline, phases, n))
    print(f"wrote {out / 'fleet.json'} and {out / 'fleet.svg'}")
    failed = (timeline.client_failures if timeline else 0) + sum(r.client_failures for r in runs)
    return 0 if failed == 0 else 1
