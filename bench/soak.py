"""Soak: many requests with faults, in virtual time, watching memory from start to end.

Three keys answer with a steady mix of faults (about 7% of upstream answers: rate
limits, 5xx, 529 overloaded, cut streams, silence, refused connections, malformed
bodies, SSE events that never end, floods of empty chunks), and one key also flaps
(down 9 s of every minute). Hostile callers are mixed in beside the legitimate ones
(about 4% more requests: values JSON cannot carry, 1 MB model names, streams nobody
reads), then a shorter stage runs over loopback through the sidecar with stalled
bodies and clients that never read (see :mod:`bench.hostile`). What matters is what
is left at the end: the same resident memory and live objects as after the warm-up,
every request ended, every legitimate one answered, no target charged for a client's
fault, descriptors back to the baseline.
"""

from __future__ import annotations

import gc
import random
import re
import time
from functools import partial

import attrs
import trio
import trio.testing

from bench.callers import EmbeddedCaller
from bench.faults import by_stream_flag, flapping, jittered, lognormal, mixture
from bench.harness import MODEL, VIRTUAL_BASE_URL, Check
from bench.hostile import (
    EdgeResult,
    HostileTally,
    empty_chunk_flood,
    endless_event,
    hostile_call,
    hostile_checks,
    peak_rss_mb,
    run_edge_stage,
)
from bench.progress import Progress
from bench.record import Figures, Recorder, current_rss_mb
from bench.upstream import DiscardCalls
from oswitch import open_switcher, parse_config
from oswitch.testing import (
    FakeProvider,
    connect_error,
    hang,
    malformed,
    model_overloaded,
    rate_limited,
    reply,
    server_error,
    stream,
)

ANSWER = "A soak answer: short, so that the bench measures oswitch rather than strings."
RATE = 50.0  # requests per virtual second
STREAM_SHARE = 0.3
# Hostile callers, as a share of the legitimate requests (they come on top of them).
HOSTILE_SHARES = (("unencodable", 0.02), ("huge_model", 0.01), ("non_reading", 0.01))
REQUEST_TIMEOUT_S = 60.0
PEAK_RSS_BOUND_MB = 64.0
# Errors a legitimate request could only get because of someone else's request.
CLIENT_CAUSED = re.compile(r"InvalidRequest|RequestFailed|Overloaded|^AllTargetsFailed$")
EDGE_SHARE, EDGE_MIN, EDGE_MAX = 0.05, 60, 5000


@attrs.frozen(kw_only=True)
class MemoryPoint:
    """Resident memory and live objects after ``requests`` requests had ended."""

    requests: int
    rss_mb: float
    objects: int


@attrs.frozen(kw_only=True)
class SoakResult:
    """The soak's figures, memory over time and checked expectations."""

    requests: int
    figures: Figures
    memory: tuple[MemoryPoint, ...]
    traces_kept: int
    checks: tuple[Check, ...]
    hostile_sent: dict[str, int] = attrs.field(factory=dict)
    edge: EdgeResult | None = None

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)


def _script(fake: FakeProvider, rng: random.Random) -> None:
    for key in ("sk-soak-a", "sk-soak-b", "sk-soak-c"):
        answer = jittered(
            by_stream_flag(reply(ANSWER), stream(ANSWER, chunk_latency=0.01, split_bytes=32)),
            lognormal(0.3, 0.4, rng),
        )
        faulty = mixture(
            [
                (0.94, answer),
                (0.01, rate_limited(0.5)),
                (0.02, server_error(503)),
                (0.005, model_overloaded()),
                (0.01, by_stream_flag(reply(ANSWER), stream(ANSWER, cut_after=3))),
                (0.005, hang()),
                (0.005, connect_error()),
                (0.005, malformed()),
                (0.005, by_stream_flag(reply(ANSWER), endless_event())),
                (0.005, by_stream_flag(reply(ANSWER), empty_chunk_flood())),
            ],
            rng,
        )
        if key == "sk-soak-c":
            # One key also flaps: down (connections refused) 9 s of every minute.
            faulty = flapping(60.0, faulty, connect_error(), duty=0.85)
        fake.on(key, faulty)


def _objects() -> int:
    gc.collect()
    return len(gc.get_objects())


async def _soak(requests: int, progress: Progress | None) -> SoakResult:
    rng = random.Random(11)
    fake = FakeProvider()
    # The fake logs every call it gets; a soak must not measure that log.
    fake.calls = DiscardCalls()
    config = parse_config(
        {
            "concurrency_limit": 256,
            "queue_limit": 512,
            "max_expected_latency_ms": 3000,
            "request_timeout_ms": REQUEST_TIMEOUT_S * 1000,
            "circuit_breaker": {"half_open_after_ms": 5000},
            "targets": [
                {
                    "target_id": f"key-{name}",
                    "provider_id": "openai",
                    "base_url": VIRTUAL_BASE_URL,
                    "api_key": f"sk-soak-{name}",
                    "model": MODEL,
                    "concurrency_limit": 100,
                }
                for name in ("a", "b", "c")
            ],
        }
    )
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    memory: list[MemoryPoint] = [MemoryPoint(requests=0, rss_mb=current_rss_mb(), objects=0)]
    async with open_switcher(config, transport=fake.transport(), rng=random.Random(12)) as sw:
        _script(fake, rng)
        caller = EmbeddedCaller(sw)
        duration = requests / RATE
        recorder = Recorder(
            origin=trio.current_time(), bucket_s=max(1.0, duration / 60), clock=trio.current_time
        )
        sw.events.add_listener(recorder.event)
        memory[0] = MemoryPoint(requests=0, rss_mb=round(current_rss_mb(), 1), objects=_objects())
        marks = {max(1, requests * k // 10) for k in range(1, 11)}
        settled_peak: list[float] = []
        tally = HostileTally()
        hostile_rng = random.Random(13)

        async def one(n: int, streamed: bool) -> None:
            sent = trio.current_time()
            body = {"model": MODEL, "messages": [{"role": "user", "content": f"soak {n}"}]}
            answer = await caller.call(body, stream=streamed)
            recorder.call_ended(
                sent_at=sent - recorder.origin,
                latency_s=trio.current_time() - sent,
                answer=answer,
                expected=ANSWER,
            )
            if recorder.requests in marks:
                if not settled_peak:
                    settled_peak.append(peak_rss_mb())
                memory.append(
                    MemoryPoint(
                        requests=recorder.requests,
                        rss_mb=round(current_rss_mb(), 1),
                        objects=_objects(),
                    )
                )
            if progress is not None:
                progress.update(
                    "soak",
                    done=recorder.requests,
                    total=requests,
                    note=f"ok {recorder.outcomes['ok']} rss {current_rss_mb():.0f} MB",
                )

        async with trio.open_nursery() as nursery:
            at = 0.0
            for n in range(requests):
                at += rng.expovariate(RATE)
                await trio.sleep_until(recorder.origin + at)
                nursery.start_soon(one, n, rng.random() < STREAM_SHARE)
                draw = hostile_rng.random()
                for kind, share in HOSTILE_SHARES:
                    if draw < share:
                        nursery.start_soon(
                            partial(
                                hostile_call,
                                sw,
                                kind,
                                n,
                                hostile_rng,
                                tally,
                                idle_s=REQUEST_TIMEOUT_S + 5.0,
                            )
                        )
                        break
                    draw -= share
        clock_s = recorder.now()
        traces_kept = sw.statistics().traces_kept
    figures = recorder.figures(
        cpu_s=time.process_time() - cpu_start,
        wall_s=time.perf_counter() - wall_start,
        clock_s=clock_s,
        target_ids=("key-a", "key-b", "key-c"),
    )
    peak_growth = peak_rss_mb() - (settled_peak[0] if settled_peak else peak_rss_mb())
    checks = [
        *_checks(requests, figures, memory, config.trace_capacity, traces_kept),
        *hostile_checks(tally, peak_growth, PEAK_RSS_BOUND_MB),
    ]
    return SoakResult(
        requests=requests,
        figures=figures,
        memory=tuple(memory),
        traces_kept=traces_kept,
        hostile_sent=dict(tally.sent),
        edge=None,
        checks=tuple(checks),
    )


def _checks(
    requests: int,
    figures: Figures,
    memory: list[MemoryPoint],
    trace_capacity: int,
    traces_kept: int,
) -> list[Check]:
    # Compare the end with the first tenth, once pools, caches and the trace ring
    # buffer have filled: growth after that is a leak.
    settled = memory[1] if len(memory) > 2 else memory[0]
    end = memory[-1]
    rss_growth = end.rss_mb - settled.rss_mb
    object_growth = end.objects - settled.objects
    return [
        Check(
            name="every request ended",
            passed=figures.requests == requests,
            detail=f"{figures.requests}/{requests} ended",
        ),
        Check(
            name=">= 99.99% of legitimate requests answered despite ~7% faulty upstream "
            "answers, a flapping key and hostile callers",
            passed=figures.success_rate >= 0.9999,
            detail=f"{figures.success_rate:.3%} answered; errors {dict(figures.errors) or 'none'}",
        ),
        Check(
            name="no legitimate request failed for a reason a hostile caller could cause "
            "(refused, overloaded, out of time): only upstream faults that outlasted "
            "every budget",
            passed=not any(CLIENT_CAUSED.search(error) for error in figures.errors),
            detail=f"errors {dict(figures.errors) or 'none'}",
        ),
        Check(
            name="every answer whole",
            passed=figures.text_mismatches == 0,
            detail=f"{figures.text_mismatches} answers differed from the expected text",
        ),
        Check(
            name="no leak: resident memory grows <= 10 MB after the first tenth",
            passed=rss_growth <= 10.0,
            detail=f"{settled.rss_mb} MB at {settled.requests} requests, {end.rss_mb} MB at "
            f"{end.requests} ({rss_growth:+.1f} MB)",
        ),
        Check(
            name="no leak: live objects grow <= 5% after the first tenth",
            passed=settled.objects > 0 and object_growth <= 0.05 * settled.objects,
            detail=f"{settled.objects} objects at {settled.requests} requests, {end.objects} at "
            f"{end.requests} ({object_growth:+d})",
        ),
        Check(
            name=f"request traces stay bounded (trace_capacity {trace_capacity})",
            passed=traces_kept <= trace_capacity,
            detail=f"{traces_kept} traces kept",
        ),
    ]


def run_soak(requests: int, *, progress: Progress | None = None, edge: bool = True) -> SoakResult:
    """Run ``requests`` legitimate requests with faults and hostile callers through
    oswitch on a ``MockClock``, then (with ``edge``) the loopback hostile stage with
    ``EDGE_SHARE`` of that many calls (at least ``EDGE_MIN``, at most ``EDGE_MAX``).

    Blocks until both end. Raises ValueError unless ``requests`` >= 1.
    """
    if requests < 1:
        raise ValueError(f"requests must be >= 1 (got {requests})")
    result: SoakResult = trio.run(
        _soak, requests, progress, clock=trio.testing.MockClock(autojump_threshold=0)
    )
    if not edge:
        return result
    if progress is not None:
        progress.say("soak: hostile stage over loopback through the sidecar")
    edge_result = run_edge_stage(min(EDGE_MAX, max(EDGE_MIN, int(requests * EDGE_SHARE))))
    return attrs.evolve(result, edge=edge_result, checks=(*result.checks, *edge_result.checks))
