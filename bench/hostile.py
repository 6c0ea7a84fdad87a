"""The soak's hostile stage: clients and upstreams that try to hurt everyone else.

Two parts. In virtual time, mixed into the soak's own traffic: embedded callers that
send values JSON cannot carry (NaN, a set, a lone surrogate), 1 MB model names, and
streams they stop reading; upstream answers that never end an SSE event or flood
empty chunks. Over real loopback sockets through the sidecar: request bodies that
stall, stream clients that never read, unencodable bodies and huge strings, beside
legitimate clients. What is checked: every legitimate request answered, no target
charged for a client's fault (no attempt, no breaker event), peak memory bounded and
open descriptors back to where they started.
"""

from __future__ import annotations

import json
import os
import random
import resource
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from functools import partial
from typing import Any

import attrs
import httpx
import trio
import trio.lowlevel

from bench.callers import WireCaller
from bench.faults import by_stream_flag
from bench.harness import MODEL, VIRTUAL_BASE_URL, Check
from bench.record import current_rss_mb
from oswitch import SwitcherError, UnknownRequest, open_switcher, parse_config
from oswitch.runtime.switcher import Switcher
from oswitch.sidecar.serve import serve_sidecar
from oswitch.testing import Behaviour, FakeProvider, reply, stream

HUGE_MODEL_CHARS = 1_000_000
LONG_ANSWER_WORDS = 40_000  # ~300 KB of SSE: more than a non-reading client's socket holds


# ---- hostile upstreams ---------------------------------------------------------------


def endless_event(piece_bytes: int = 4096) -> Behaviour:
    """A 200 stream whose first event never ends: ``data:`` lines and no blank line."""

    async def body() -> AsyncIterator[bytes]:
        line = b"data: " + b"x" * piece_bytes + b"\n"
        while True:
            yield line
            await trio.lowlevel.checkpoint()

    async def respond(request: httpx.Request, _: Mapping[str, Any]) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    return Behaviour(name="endless_event", respond=respond)


def empty_chunk_flood(every_s: float = 0.1) -> Behaviour:
    """A 200 stream of role-only chunks (no content, ever), one every ``every_s``."""
    chunk = b'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'

    async def body() -> AsyncIterator[bytes]:
        while True:
            yield chunk
            await trio.sleep(every_s)

    async def respond(request: httpx.Request, _: Mapping[str, Any]) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    return Behaviour(name="empty_chunk_flood", respond=respond)


# ---- hostile embedded callers (virtual time, inside the soak) ------------------------


def unencodable_request(rng: random.Random) -> dict[str, Any]:
    """A chat request carrying one value JSON cannot encode."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "hostile"}]
    kind = rng.randrange(4)
    if kind == 0:
        return {"model": MODEL, "messages": messages, "temperature": float("nan")}
    if kind == 1:
        return {"model": MODEL, "messages": messages, "top_p": float("inf")}
    if kind == 2:
        return {"model": MODEL, "messages": messages, "stop": {"a", "b"}}
    return {"model": MODEL, "messages": [{"role": "user", "content": "lone \ud800 surrogate"}]}


@attrs.define
class HostileTally:
    """How the embedded hostile callers fared, by kind: refused as expected or not."""

    sent: dict[str, int] = attrs.field(factory=dict)
    refused: dict[str, int] = attrs.field(factory=dict)
    charged: int = 0  # refused requests that nevertheless reached a target
    surprises: list[str] = attrs.field(factory=list)

    def note(self, kind: str, *, refused: bool, detail: str = "") -> None:
        self.sent[kind] = self.sent.get(kind, 0) + 1
        if refused:
            self.refused[kind] = self.refused.get(kind, 0) + 1
        elif len(self.surprises) < 5:
            self.surprises.append(f"{kind}: {detail}")


def _attempts_of(switcher: Switcher, request_id: str) -> int:
    try:
        return len(switcher.inspect_request(request_id).attempts)
    except UnknownRequest:
        return 0


async def hostile_call(
    switcher: Switcher, kind: str, n: int, rng: random.Random, tally: HostileTally, *, idle_s: float
) -> None:
    """Play one hostile embedded caller of ``kind`` and record how oswitch treated it.

    ``unencodable`` and ``huge_model`` must be refused with ``RequestFailed`` before any
    attempt; ``non_reading`` pulls one chunk, then stays away ``idle_s`` (past the
    request deadline) and must get a typed error at its next pull.
    """
    request_id = f"hostile-{n}"
    if kind == "non_reading":
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"hostile {n}"}]}
        try:
            async with switcher.stream(body, request_id=request_id) as chunks:
                await chunks.__anext__()
                await trio.sleep(idle_s)
                async for _ in chunks:
                    pass
        except SwitcherError:
            tally.note(kind, refused=True)
            return
        tally.note(kind, refused=False, detail="the stream went on after the request deadline")
        return
    if kind == "unencodable":
        body = unencodable_request(rng)
    else:
        body = {
            "model": "m" * HUGE_MODEL_CHARS,
            "messages": [{"role": "user", "content": "hostile"}],
        }
    try:
        await switcher.complete(body, request_id=request_id)
    except SwitcherError as error:
        refused = (
            getattr(error, "error_class", None) is not None
            and str(
                error.error_class  # type: ignore[attr-defined]
            )
            == "InvalidRequest"
        )
        tally.note(kind, refused=refused, detail=f"{type(error).__name__}: {str(error)[:80]}")
    else:
        tally.note(kind, refused=False, detail="answered")
    if _attempts_of(switcher, request_id):
        tally.charged += 1


def hostile_checks(tally: HostileTally, peak_growth_mb: float, bound_mb: float) -> list[Check]:
    """The checks of the virtual-time hostile mix."""
    sent = sum(tally.sent.values())
    refused = sum(tally.refused.values())
    return [
        Check(
            name="every hostile caller refused with a typed error (none answered, none hung)",
            passed=sent > 0 and refused == sent,
            detail=f"{refused}/{sent} refused "
            f"({', '.join(f'{k} {tally.refused.get(k, 0)}/{v}' for k, v in tally.sent.items())})"
            + (f"; {tally.surprises}" if tally.surprises else ""),
        ),
        Check(
            name="no target charged for a client's fault (refused before any attempt)",
            passed=tally.charged == 0,
            detail=f"{tally.charged} refused requests reached a target",
        ),
        Check(
            name=f"peak resident memory stays within {bound_mb:.0f} MB of the warm-up "
            "despite endless upstream events and 1 MB model names",
            passed=peak_growth_mb <= bound_mb,
            detail=f"peak RSS {peak_growth_mb:+.1f} MB over the first tenth",
        ),
    ]


def peak_rss_mb() -> float:
    """The process's peak resident set size so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---- the loopback edge stage (real clock, through the sidecar) -----------------------

EDGE_ANSWER = "An edge answer, whole."
EDGE_LIMIT_MS = 300  # body and write limits the edge stage runs with (scaled down)
EDGE_FD_SETTLE_S = 3.0
EDGE_RSS_BOUND_MB = 64.0
NON_READERS_HELD = 8
HOSTILE_BODIES = {
    "unencodable": b'{"model": "bench-model", "temperature": NaN, '
    b'"messages": [{"role": "user", "content": "x"}]}',
    "huge_model": json.dumps(
        {"model": "m" * HUGE_MODEL_CHARS, "messages": [{"role": "user", "content": "x"}]}
    ).encode(),
}  # non-reading sockets kept open at once (each holds a descriptor)


@attrs.frozen(kw_only=True)
class EdgeResult:
    """What the loopback stage saw: legitimate answers, hostile outcomes, fds and memory."""

    legit: int
    legit_answered: int
    hostile: dict[str, int]
    hostile_refused: dict[str, int]
    breaker_events: int
    slots_held_by_non_readers: int
    fds_before: int
    fds_after: int
    rss_growth_mb: float
    wall_s: float
    checks: tuple[Check, ...]


def open_fds() -> int:
    """How many file descriptors this process has open now."""
    return len(os.listdir("/proc/self/fd"))


async def _poll_until(condition: Callable[[], bool], limit_s: float) -> None:
    """Look every 50 ms until ``condition()`` holds or ``limit_s`` passed (then give up:
    the caller's check reports what it sees)."""
    for _ in range(max(1, int(limit_s / 0.05))):
        if condition():
            return
        await trio.sleep(0.05)


async def _raw_post(port: int, head: bytes, body: bytes) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(head + body)
    return stream


def _post_head(length: int, *, path: str = "/v1/chat/completions") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {length}\r\n\r\n"
    ).encode()


async def _status_of(stream: trio.SocketStream) -> int:
    data = b""
    while b"\r\n" not in data:
        piece = await stream.receive_some(65536)
        if not piece:
            return 0
        data += piece
    return int(data.split(b" ", 2)[1])


async def _stalled_body(port: int) -> bool:
    """Send a head and 10 of 1,000 body bytes, then stall: the sidecar must let go."""
    stream = await _raw_post(port, _post_head(1000), b'{"model": ')
    with trio.move_on_after(EDGE_LIMIT_MS / 1000 * 10) as waited:
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass  # closed with a reset: let go all the same
    await stream.aclose()
    return not waited.cancelled_caught


async def _raw_json(port: int, body: bytes) -> int:
    stream = await _raw_post(port, _post_head(len(body)), body)
    try:
        return await _status_of(stream)
    finally:
        await stream.aclose()


async def _non_reader(port: int, held: list[trio.SocketStream]) -> None:
    """Ask for a long stream on a socket with a tiny receive buffer, and never read."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    body = json.dumps(
        {"model": "long", "stream": True, "messages": [{"role": "user", "content": "long"}]}
    ).encode()
    await stream.send_all(_post_head(len(body)) + body)
    held.append(stream)
    if len(held) > NON_READERS_HELD:
        # The oldest has long been cut off by the write limit; a real client would go.
        await held.pop(0).aclose()


async def _edge(requests: int, seed: int) -> EdgeResult:
    rng = random.Random(seed)
    fake = FakeProvider()
    for key in ("sk-edge-a", "sk-edge-b"):
        fake.on(key, by_stream_flag(reply(EDGE_ANSWER), stream(EDGE_ANSWER)))
    long_text = " ".join(f"w{i}" for i in range(LONG_ANSWER_WORDS))
    fake.on("sk-edge-long", stream(long_text, words_per_chunk=20, split_bytes=65536))
    config = parse_config(
        {
            "concurrency_limit": 64,
            "server": {
                "body_timeout_ms": EDGE_LIMIT_MS,
                "write_timeout_ms": EDGE_LIMIT_MS,
                # Room for the 16 callers' keep-alive pool, hostile sockets in flight
                # and the non-readers held: a refusal at the cap would be a false alarm.
                "max_connections": 128,
            },
            "targets": [
                *(
                    {
                        "target_id": f"edge-{name}",
                        "provider_id": "openai",
                        "base_url": VIRTUAL_BASE_URL,
                        "api_key": f"sk-edge-{name}",
                        "model": MODEL,
                        "concurrency_limit": 8,
                    }
                    for name in ("a", "b")
                ),
                {
                    "target_id": "edge-long",
                    "provider_id": "openai",
                    "base_url": VIRTUAL_BASE_URL,
                    "api_key": "sk-edge-long",
                    "model": "long",
                    "concurrency_limit": 4,
                },
            ],
        }
    )
    hostile: dict[str, int] = {}
    refused: dict[str, int] = {}
    legit = answered = 0
    surprises: list[str] = []
    breaker_events = 0
    held: list[trio.SocketStream] = []
    wall = time.perf_counter()
    async with open_switcher(config, transport=fake.transport()) as switcher:

        def on_event(name: str, fields: dict[str, Any]) -> None:
            nonlocal breaker_events
            if name == "breaker":
                breaker_events += 1

        switcher.events.add_listener(on_event)
        async with trio.open_nursery() as server_nursery:
            port = await server_nursery.start(
                partial(serve_sidecar, switcher, host="127.0.0.1", port=0, server=config.server)
            )
            rss_before = current_rss_mb()
            fds_before = open_fds()
            limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30.0
            ) as client:
                caller = WireCaller(client)
                queue_send, queue_receive = trio.open_memory_channel[str](0)

                async def worker() -> None:
                    nonlocal legit, answered
                    async for kind in queue_receive:
                        if kind == "legit":
                            legit += 1
                            body = {
                                "model": MODEL,
                                "messages": [{"role": "user", "content": "edge"}],
                                "stream": rng.random() < 0.3,
                            }
                            answer = await caller.call(body, stream=bool(body.pop("stream")))
                            if answer.outcome == "ok" and answer.text == EDGE_ANSWER:
                                answered += 1
                            elif len(surprises) < 5:
                                surprises.append(f"{answer.outcome}: {answer.text[:40]!r}")
                            continue
                        hostile[kind] = hostile.get(kind, 0) + 1
                        ok = False
                        if kind == "stalled_body":
                            ok = await _stalled_body(port)
                        elif kind in ("unencodable", "huge_model"):
                            status = await _raw_json(port, HOSTILE_BODIES[kind])
                            ok = status == 400
                            if not ok and len(surprises) < 5:
                                surprises.append(f"{kind}: HTTP {status}")
                        elif kind == "non_reading":
                            await _non_reader(port, held)
                            ok = True
                        if ok:
                            refused[kind] = refused.get(kind, 0) + 1

                async with trio.open_nursery() as nursery:
                    for _ in range(16):
                        nursery.start_soon(worker)
                    async with queue_send:
                        kinds = ("stalled_body", "unencodable", "huge_model", "non_reading")
                        for _ in range(requests):
                            draw = rng.random()
                            kind = "legit" if draw >= 0.12 else kinds[int(draw / 0.03)]
                            await queue_send.send(kind)
                # Every non-reader still holds its socket open; their slots must be free.
                await _poll_until(
                    lambda: not sum(view.in_flight for view in switcher.list_targets()),
                    EDGE_LIMIT_MS / 1000 * 20,
                )
                slots_held = sum(view.in_flight for view in switcher.list_targets())
            for stream_ in held:
                await stream_.aclose()
            await _poll_until(lambda: open_fds() <= fds_before, EDGE_FD_SETTLE_S)
            fds_after = open_fds()
            rss_growth = current_rss_mb() - rss_before
            server_nursery.cancel_scope.cancel()
    wall_s = time.perf_counter() - wall
    checks = (
        Check(
            name="edge: every legitimate request answered beside hostile clients",
            passed=legit > 0 and answered == legit,
            detail=f"{answered}/{legit} answered" + (f"; {surprises}" if surprises else ""),
        ),
        Check(
            name="edge: every hostile client refused or cut off "
            f"(stalled body let go within {EDGE_LIMIT_MS * 10} ms, unencodable and huge 400)",
            passed=all(refused.get(kind, 0) == count for kind, count in hostile.items()),
            detail=", ".join(f"{k} {refused.get(k, 0)}/{v}" for k, v in hostile.items())
            + (f"; {surprises}" if surprises else ""),
        ),
        Check(
            name="edge: no breaker moved (every upstream healthy; clients' faults charge nobody)",
            passed=breaker_events == 0,
            detail=f"{breaker_events} breaker events",
        ),
        Check(
            name="edge: clients that never read hold no target slot",
            passed=slots_held == 0,
            detail=f"{slots_held} slots in flight with {len(held)} non-reading sockets open",
        ),
        Check(
            name=f"edge: resident memory grows at most {EDGE_RSS_BOUND_MB:.0f} MB "
            "(1 MB model names, stalled bodies, unread 300 KB streams)",
            passed=rss_growth <= EDGE_RSS_BOUND_MB,
            detail=f"{rss_growth:+.1f} MB",
        ),
        Check(
            name="edge: open descriptors back to the baseline",
            passed=fds_after <= fds_before,
            detail=f"{fds_before} before, {fds_after} after",
        ),
    )
    return EdgeResult(
        legit=legit,
        legit_answered=answered,
        hostile=hostile,
        hostile_refused=refused,
        breaker_events=breaker_events,
        slots_held_by_non_readers=slots_held,
        fds_before=fds_before,
        fds_after=fds_after,
        rss_growth_mb=round(rss_growth, 1),
        wall_s=round(wall_s, 2),
        checks=checks,
    )


def run_edge_stage(requests: int, *, seed: int = 23) -> EdgeResult:
    """Run ``requests`` calls through the sidecar over loopback, ~12% of them hostile.

    Real clock, real sockets on 127.0.0.1; the fake upstream is in-process. Blocks
    until every call ended. Raises ValueError unless ``requests`` >= 1.
    """
    if requests < 1:
        raise ValueError(f"requests must be >= 1 (got {requests})")
    return trio.run(_edge, requests, seed)
