"""A fleet of real ``oswitch serve`` processes over loopback: N sidecars sharing one
redis-server (or each on its own, the control), behind one fake provider that logs
every arrival on one clock. Used by ``python -m bench --fleet N`` and by
tests/test_fleet_sidecars.py.

Nothing here downloads anything or talks beyond 127.0.0.1; every process started
is stopped on the way out.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import trio

from oswitch.testing.provider import FakeProvider
from oswitch.testing.serve import serve_fake_provider

# A replica run with its clocks moved: wall, monotonic and perf_counter (trio's clock)
# all read ``skew`` seconds ahead, before anything imports them.
_SKEWED = """
import sys, time
skew = float(sys.argv[1])
for name in ("time", "monotonic", "perf_counter"):
    real = getattr(time, name)
    setattr(time, name, (lambda real: lambda: real() + skew)(real))
for name in ("time_ns", "monotonic_ns", "perf_counter_ns"):
    real = getattr(time, name)
    setattr(time, name, (lambda real: lambda: real() + int(skew * 1e9))(real))
sys.argv = ["oswitch", *sys.argv[2:]]
from oswitch.cli import main
sys.exit(main(sys.argv[1:]))
"""


@attrs.frozen(kw_only=True)
class FleetTarget:
    """One target of the fleet's config: its key (the fake provider's route) and limits."""

    target_id: str
    key: str
    requests_per_minute: float | None = None
    burst: int | None = None
    failure_threshold: int = 5
    half_open_after_ms: float = 30000.0


def fleet_config(
    targets: Sequence[FleetTarget],
    *,
    provider_port: int,
    store_url: str | None,
    prefix: str,
    timeout_ms: float = 50.0,
    replicas: int = 3,
    max_wait_ms: float = 3000.0,
) -> str:
    """The TOML every replica reads (a ``store`` section only with ``store_url``)."""
    lines = [
        f"max_wait_ms = {max_wait_ms}",
        "request_timeout_ms = 8000",
        "retry_budget = 0",
        "failover_budget = 0",
        "queue_limit = 1000",
        "concurrency_limit = 100",
        "backpressure_threshold = 1000",
    ]
    if store_url is not None:
        lines += [
            "[store]",
            f'url = "{store_url}"',
            f'key_prefix = "{prefix}"',
            f"timeout_ms = {timeout_ms}",
            f"expected_replicas = {replicas}",
        ]
    for target in targets:
        lines += [
            "[[targets]]",
            f'target_id = "{target.target_id}"',
            'provider_id = "openai"',
            f'base_url = "http://127.0.0.1:{provider_port}/v1"',
            f'api_key = "{target.key}"',
            f'model = "{target.target_id}"',
            "concurrency_limit = 50",
        ]
        if target.requests_per_minute is not None:
            lines += [
                "[targets.rate_limit]",
                f"requests_per_minute = {target.requests_per_minute}",
                f"burst = {target.burst or 1}",
            ]
        lines += [
            "[targets.circuit_breaker]",
            f"failure_threshold = {target.failure_threshold}",
            f"half_open_after_ms = {target.half_open_after_ms}",
        ]
    return "\n".join(lines) + "\n"


@attrs.define
class Replica:
    """One running sidecar: its base URL and what it printed."""

    base: str
    process: trio.Process
    skew_s: float = 0.0
    stdout: list[str] = attrs.Factory(list)  # NDJSON audit events, one per line

    def event_names(self) -> list[str]:
        names = []
        for line in self.stdout:
            try:
                names.append(str(json.loads(line).get("event")))
            except (ValueError, AttributeError):
                continue
        return names


async def _read_lines(stream: trio.abc.ReceiveStream, sink: list[str]) -> None:
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        sink.extend(line.decode("utf-8", "replace") for line in lines)


async def _start_replica(config: Path, nursery: trio.Nursery, skew_s: float) -> Replica:
    argv = ["serve", "--config", str(config), "--port", "0", "--log-format", "text"]
    if skew_s:
        command = [sys.executable, "-c", _SKEWED, str(skew_s), *argv]
    else:
        command = [sys.executable, "-m", "oswitch", *argv]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    assert process.stdout is not None and process.stderr is not None
    out: list[str] = []
    err: list[str] = []
    nursery.start_soon(_read_lines, process.stdout, out)
    nursery.start_soon(_read_lines, process.stderr, err)
    with trio.fail_after(30):
        while True:
            listening = [line for line in err if "sidecar_listening" in line]
            if listening:
                break
            if process.poll() is not None:
                raise RuntimeError("oswitch serve exited: " + "\n".join(err[-5:]))
            await trio.sleep(0.02)
    base = listening[0].split("note=")[1].split()[0]
    return Replica(base=base, process=process, skew_s=skew_s, stdout=out)


@asynccontextmanager
async def open_fleet(
    toml: str, directory: Path, *, replicas: int = 3, skews: Sequence[float] = ()
) -> AsyncIterator[list[Replica]]:
    """Start ``replicas`` sidecars on ``toml`` (replica i's clocks moved by
    ``skews[i]``), in parallel; SIGTERM them all on the way out (kill after 5 s)."""
    config = directory / "fleet.toml"
    config.write_text(toml)
    async with trio.open_nursery() as nursery:
        started: list[Replica] = []

        async def start(index: int) -> None:
            skew = skews[index] if index < len(skews) else 0.0
            started.append(await _start_replica(config, nursery, skew))

        try:
            async with trio.open_nursery() as starting:
                for index in range(replicas):
                    starting.start_soon(start, index)
            yield started
        finally:
            with trio.CancelScope(shield=True):
                for replica in started:
                    if replica.process.returncode is None:
                        replica.process.send_signal(signal.SIGTERM)
                with trio.move_on_after(5):
                    for replica in started:
                        await replica.process.wait()
                for replica in started:
                    if replica.process.returncode is None:
                        replica.process.kill()
                        await replica.process.wait()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_provider(fake: FakeProvider) -> AsyncIterator[int]:
    """Serve ``fake`` on a free loopback port; yields the port."""
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(serve_fake_provider, fake)
        yield port
        nursery.cancel_scope.cancel()


@attrs.frozen(kw_only=True)
class Drive:
    """What the clients saw: status per request, and each request's latency."""

    statuses: list[int]
    latencies: list[float]
    sent: list[float]  # seconds from start, per request
    failures: list[tuple[float, int, str]]  # (seconds from start, status, body head)
    started_at: float
    ended_at: float


async def drive(
    replicas: Sequence[Replica],
    model: str,
    *,
    duration: float,
    per_replica: int = 3,
) -> Drive:
    """``per_replica`` clients per replica send ``model`` requests one after another
    for ``duration`` seconds (round-robin is each client's own replica)."""
    statuses: list[int] = []
    latencies: list[float] = []
    failures: list[tuple[float, int, str]] = []
    sent_at: list[float] = []
    start = trio.current_time()
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(timeout=15.0) as client:

        async def one_client(base: str) -> None:
            while trio.current_time() - start < duration:
                sent = trio.current_time()
                try:
                    response = await client.post(f"{base}/v1/chat/completions", json=body)
                    status, text = response.status_code, response.text[:200]
                except httpx.HTTPError as exc:
                    status, text = 0, repr(exc)
                if status != 200:
                    failures.append((round(sent - start, 3), status, f"{base} {text}"))
                statuses.append(status)
                latencies.append(trio.current_time() - sent)
                sent_at.append(sent - start)
                if status != 200:
                    await trio.sleep(0.05)

        async with trio.open_nursery() as nursery:
            for replica in replicas:
                for _ in range(per_replica):
                    nursery.start_soon(one_client, replica.base)
    return Drive(
        statuses=statuses,
        latencies=latencies,
        sent=sent_at,
        failures=failures,
        started_at=start,
        ended_at=trio.current_time(),
    )


def max_in_window(times: Sequence[float], window: float) -> int:
    """The most arrivals in any window of ``window`` seconds."""
    ordered = sorted(times)
    best, j = 0, 0
    for i, at in enumerate(ordered):
        while ordered[j] < at - window + 1e-9:
            j += 1
        best = max(best, i - j + 1)
    return best


def window_bound(rate_per_s: float, burst: int, window: float) -> float:
    """What a GCRA limit admits at most in ``window`` seconds: burst + rate × window
    (+1 for a boundary arrival)."""
    return burst + rate_per_s * window + 1


def per_window(times: Sequence[float], start: float, end: float, window: float) -> list[int]:
    """Arrivals in consecutive windows of ``window`` seconds from ``start``."""
    count = max(1, math.ceil((end - start) / window))
    buckets = [0] * count
    for at in times:
        index = int((at - start) // window)
        if 0 <= index < count:
            buckets[index] += 1
    return buckets


async def healthz(client: httpx.AsyncClient, replica: Replica) -> dict[str, object]:
    body: dict[str, object] = (await client.get(f"{replica.base}/healthz")).json()
    return body
