"""What the engine's shape costs on trio before any of its work: the floor under the speed goal.

``python -m bench.shape_floor [--requests N] [--rounds N] [--concurrency C ...] [--json]``

Each row is CPU ms per non-streamed request of this process, in a closed loop on
``bench.upstream`` (another process), beside aiohttp's client on asyncio (the speed goal's
floor, in a fresh process) and embedded oswitch:

- ``trio socket``: a bare HTTP/1.1 client on trio sockets, one keep-alive connection per
  worker: a prebuilt request written, the head searched for Content-Length, the body
  decoded with ``json.loads``, all under a ``fail_after``. What trio itself costs.
- ``+ inbox``: the same exchange, after a round trip through one actor task's memory
  channel (the request's task sends, the actor takes it and sets an event the request
  waits on). The hop the dispatcher makes to a target's inbox.
- ``+ inbox, spawn``: the actor starts the exchange as a task of its own nursery, which
  sets the event when done: oswitch's shape (admission, dispatcher, target actor,
  attempt task) with none of its work.

Rounds are interleaved (every variant once per round, so drift hits all alike); a
row's figure is the median. The difference between ``+ inbox, spawn`` and oswitch is
what routing, deadlines, classification, health, tokens and traces cost; between it
and aiohttp, what the actor shape on trio costs before any of that.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from typing import Any

import trio

from bench.overhead import aiohttp_available
from bench.rounds import measure
from bench.sidecar_cpu import aiohttp_round, embedded_round
from bench.subjects import upstream_process
from bench.upstream import overhead_request

SHAPES = ("trio socket", "+ inbox", "+ inbox, spawn")
EXCHANGE_TIMEOUT_S = 10.0


def request_bytes(port: int) -> bytes:
    """The overhead request as one HTTP/1.1 POST to ``bench.upstream`` on ``port``."""
    body = json.dumps(overhead_request(False)).encode()
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n"
        b"content-type: application/json\r\nauthorization: Bearer sk-bench-floor\r\n"
        b"content-length: %d\r\n\r\n" % (port, len(body))
    )
    return head + body


class BareClient:
    """A keep-alive HTTP/1.1 client on trio sockets that reads Content-Length replies
    only (what ``bench.upstream`` sends); idle connections are kept in a list."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.request = request_bytes(port)
        self.idle: list[trio.abc.Stream] = []

    async def exchange(self) -> Any:
        """Send the request and return the decoded reply; raises RuntimeError for a
        reply that is not 200 with a Content-Length."""
        if self.idle:
            stream = self.idle.pop()
        else:
            stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        try:
            reply = await self._exchange_on(stream)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        self.idle.append(stream)
        return reply

    async def _exchange_on(self, stream: trio.abc.Stream) -> Any:
        with trio.fail_after(EXCHANGE_TIMEOUT_S):
            await stream.send_all(self.request)
            buffer = b""
            while True:
                received = await stream.receive_some(65536)
                if not received:
                    raise RuntimeError("the upstream closed the connection")
                buffer += received
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    continue
                head = buffer[:end].lower()
                field = head.find(b"content-length:")
                if not head.startswith(b"http/1.1 200") or field < 0:
                    raise RuntimeError(f"unexpected reply head {head[:40]!r}")
                line_end = head.find(b"\r\n", field)
                length = int(head[field + 15 : line_end if line_end > 0 else None])
                if len(buffer) >= end + 4 + length:
                    break
        return json.loads(buffer[end + 4 : end + 4 + length])

    async def aclose(self) -> None:
        for stream in self.idle:
            await stream.aclose()


async def shape_round(port: int, shape: str, concurrency: int, requests: int) -> float:
    """CPU ms per request of ``shape`` (one of :data:`SHAPES`) on the upstream at
    ``port``. Raises RuntimeError if any call failed."""
    client = BareClient(port)
    send, receive = trio.open_memory_channel[tuple[trio.Event, list[Any]]](0)

    async def attempt(done: trio.Event, box: list[Any]) -> None:
        try:
            box.append(await client.exchange())
        except (OSError, RuntimeError, trio.BrokenResourceError, trio.TooSlowError):
            pass  # the box stays empty: the caller counts a failed call
        finally:
            done.set()

    async def actor(nursery: trio.Nursery) -> None:
        async for done, box in receive:
            if shape == "+ inbox, spawn":
                nursery.start_soon(attempt, done, box)
            else:
                done.set()

    async def call() -> None:
        if shape == "trio socket":
            await client.exchange()
            return
        done, box = trio.Event(), list[Any]()
        await send.send((done, box))
        await done.wait()
        if shape == "+ inbox":
            await client.exchange()
        elif not box:
            raise RuntimeError("the attempt failed")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor, nursery)
        measured = await measure(call, concurrency, requests)
        nursery.cancel_scope.cancel()
    await client.aclose()
    if measured.errors:
        raise RuntimeError(f"{measured.errors} calls of {shape!r} failed")
    return measured.cpu_s * 1000.0 / requests


async def _run(
    port: int, concurrencies: Sequence[int], requests: int, rounds: int
) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/v1"
    rows: list[dict[str, object]] = []
    floor = aiohttp_available()
    for concurrency in concurrencies:
        figures: dict[str, list[float]] = {}
        for _ in range(rounds):
            for shape in SHAPES:
                ms = await shape_round(port, shape, concurrency, requests)
                figures.setdefault(shape, []).append(ms)
            ms = await embedded_round(url, False, concurrency, requests)
            figures.setdefault("oswitch embedded", []).append(ms)
            if floor:
                ms = await aiohttp_round(url, False, concurrency, requests)
                figures.setdefault("aiohttp", []).append(ms)
        aiohttp_ms = statistics.median(figures["aiohttp"]) if floor else None
        for variant, rounds_ms in figures.items():
            ms = statistics.median(rounds_ms)
            rows.append(
                {
                    "variant": variant,
                    "concurrency": concurrency,
                    "cpu_ms": round(ms, 4),
                    "vs_aiohttp": None if aiohttp_ms is None else round(ms / aiohttp_ms, 2),
                }
            )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print one line per variant and concurrency (JSON with ``--json``)."""
    parser = argparse.ArgumentParser(prog="python -m bench.shape_floor", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, action="append")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    with upstream_process() as port:
        rows = trio.run(_run, port, args.concurrency or [32, 256], args.requests, args.rounds)
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    if not aiohttp_available():
        print("aiohttp not installed: skipped (pip install -e '.[bench]')")
    print("conc  variant             CPU ms/request  ÷ aiohttp")
    for row in rows:
        ratio = "" if row["vs_aiohttp"] is None else f"{row['vs_aiohttp']}x"
        print(f"{row['concurrency']:<5} {row['variant']:<19} {row['cpu_ms']:<15} {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
