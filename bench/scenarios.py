"""The seven fault scenarios and the expectations each one checks.

Every scenario serves one model from several keys of a fake upstream, sends an open
loop of requests (some streamed) and checks what callers saw. Times are scenario
seconds; the wire mode compresses them. Each expectation's text says what it
proves; its detail says what was measured.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from bench.deadline_scenarios import DEADLINE_SCENARIOS
from bench.faults import by_stream_flag, jittered, lognormal, mixture, timeline
from bench.harness import Check, Env, Observed, Scenario, TargetSpec
from oswitch.testing import (
    Behaviour,
    FakeProvider,
    connect_error,
    error,
    invalid_key,
    model_overloaded,
    rate_limited,
    reply,
    server_error,
    stream,
)

ANSWER = (
    "Routing is the easy part. The hard part is keeping every promise when a key is "
    "rate limited, a provider browns out, a stream dies halfway or a credential is "
    "revoked: the caller still gets one whole answer, or one clear typed error."
)
WORDS_PER_CHUNK = 4
CHUNK_S = 0.02
# The upstream's latency: log-normal, median 0.5 s, then 20 ms per streamed chunk. Its
# 99th percentile is the bar oswitch must not raise in virtual time, where oswitch
# itself costs no time: any excess is waiting oswitch added.
MEDIAN_S = 0.5
SIGMA = 0.3
STREAM_BODY_S = math.ceil(len(ANSWER.split(" ")) / WORDS_PER_CHUNK) * CHUNK_S
UPSTREAM_P99_S = MEDIAN_S * math.exp(2.326 * SIGMA) + STREAM_BODY_S


def _keys(*names: str, priority: int = 0) -> tuple[TargetSpec, ...]:
    return tuple(
        TargetSpec(target_id=f"key-{name}", key=f"sk-bench-{name}", priority=priority)
        for name in names
    )


def answering(env: Env, *, split_bytes: int = 64, **faults: object) -> Behaviour:
    """Reply with ``ANSWER`` — as JSON, or streamed in 4-word chunks (with ``faults``)."""
    return by_stream_flag(
        reply(ANSWER),
        stream(
            ANSWER,
            words_per_chunk=WORDS_PER_CHUNK,
            chunk_latency=CHUNK_S * env.s,
            split_bytes=split_bytes,
            **faults,  # type: ignore[arg-type]
        ),
    )


def healthy(env: Env, *, median_s: float = MEDIAN_S) -> Behaviour:
    """A healthy key: answers after a log-normal delay."""
    return jittered(answering(env), lognormal(median_s * env.s, SIGMA, env.rng))


# ---- expectations ----------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def every_request_answered(o: Observed) -> Check:
    f = o.figures
    return Check(
        name="every request answered",
        passed=f.requests > 0 and f.succeeded == f.requests,
        detail=f"{f.succeeded}/{f.requests} ok; errors {dict(f.errors) or 'none'}",
    )


def answers_whole(o: Observed) -> Check:
    f = o.figures
    return Check(
        name="every answer whole (caller text == expected answer)",
        passed=f.text_mismatches == 0,
        detail=f"{f.text_mismatches} answers differed from the expected text",
    )


def latency_kept(o: Observed, *, bar_s: float, why: str) -> Check:
    p99 = o.figures.latency.p99
    limit_ms = (bar_s + o.mode.tolerance_s) * 1000.0
    return Check(
        name=f"p99 latency <= {limit_ms:.0f} ms ({why})",
        passed=p99 is not None and p99 <= limit_ms,
        detail=f"p99 {p99} ms, p50 {o.figures.latency.p50} ms",
    )


def sampling_slack(limit: float, count: int) -> float:
    """Two standard errors of a share near ``limit`` measured over ``count`` samples.

    A share checked over a window of a few dozen requests (a wire run sends a quarter
    of the virtual load) moves by several points from run to run by chance alone.
    """
    return 2.0 * math.sqrt(limit * (1.0 - limit) / count) if count else 0.0


def share_at_most(
    o: Observed, targets: Iterable[str], start: float, end: float, limit: float, what: str
) -> Check:
    ids = tuple(targets)
    share = o.recorder.share(ids, start, end)
    count = o.recorder.attempts_in(start, end)
    allowed = limit + sampling_slack(limit, count)
    return Check(
        name=f"{what}: {'+'.join(ids)} gets <= {limit:.0%} of attempts in {start:g}-{end:g} s",
        passed=share is not None and share <= allowed,
        detail=f"share {_pct(share)} of {count} attempts "
        f"(allowed {allowed:.1%}: {limit:.0%} plus two standard errors)",
    )


def share_at_least(
    o: Observed, targets: Iterable[str], start: float, end: float, limit: float, what: str
) -> Check:
    ids = tuple(targets)
    share = o.recorder.served_share(ids, start, end)
    count = o.recorder.answers_in(start, end)
    allowed = limit - sampling_slack(limit, count)
    return Check(
        name=f"{what}: {'+'.join(ids)} serves >= {limit:.0%} of answers in {start:g}-{end:g} s",
        passed=share is not None and share >= allowed,
        detail=f"share {_pct(share)} of {count} answers "
        f"(needed {allowed:.1%}: {limit:.0%} less two standard errors)",
    )


def breaker_states(o: Observed, target_id: str) -> list[str]:
    return [
        t.state for t in o.figures.transitions if t.kind == "breaker" and t.target_id == target_id
    ]


# ---- 1. steady state -------------------------------------------------------------------


def _steady_script(fake: FakeProvider, env: Env) -> None:
    for spec in STEADY.targets:
        fake.on(spec.key, healthy(env))


def _steady_expect(o: Observed) -> list[Check]:
    checks = [every_request_answered(o), answers_whole(o)]
    for target in o.figures.attempts_by_target:
        share = o.recorder.share([target], 0, STEADY.duration_s)
        checks.append(
            Check(
                name=f"load spread: {target} gets 25-42% of attempts",
                passed=share is not None and 0.25 <= share <= 0.42,
                detail=f"share {_pct(share)}",
            )
        )
    transitions = o.figures.transitions
    checks.append(
        Check(
            name="no breaker trips or condition changes",
            passed=not transitions,
            detail=f"{len(transitions)} transitions",
        )
    )
    checks.append(latency_kept(o, bar_s=UPSTREAM_P99_S, why="the upstream's own p99"))
    return checks


STEADY = Scenario(
    name="steady",
    title="Steady state over three keys",
    proves="Load spreads evenly over equally good keys (no hot-spotting one key), every "
    "request is answered, and routing adds no waiting: caller p99 stays the upstream's p99.",
    targets=_keys("a", "b", "c"),
    settings={"concurrency_limit": 64, "queue_limit": 256},
    load=((60.0, 20.0),),
    stream_share=0.3,
    answer=ANSWER,
    script=_steady_script,
    expect=_steady_expect,
)


# ---- 2. rate-limit storm ---------------------------------------------------------------


def _storm_script(fake: FakeProvider, env: Env) -> None:
    s = env.s
    body = {
        "error": {
            "message": "Rate limit reached for requests per min (RPM).",
            "type": "requests",
            "code": "rate_limit_exceeded",
        }
    }
    normal = healthy(env)
    storm_ms = rate_limited(5.0 * s, latency=0.05 * s)
    storm_none = rate_limited(None, latency=0.05 * s)
    storm_header = error(
        429,
        body,
        headers={"retry-after": f"{max(1, round(30 * s))}"},
        latency=0.05 * s,
        name="rate_limited retry-after",
    )

    def key_a(elapsed: float) -> Behaviour:
        t = elapsed / s
        if t < 15 or t >= 50:
            return normal
        if t < 25:
            return storm_ms  # retry-after-ms: 5000
        if t < 40:
            return storm_none  # no delay given: oswitch backs off on its own
        return storm_header  # Retry-After: 30 (seconds), past max_wait_ms

    fake.on("sk-bench-a", timeline(key_a))
    fake.on("sk-bench-b", healthy(env))
    fake.on("sk-bench-c", healthy(env))


def _storm_expect(o: Observed) -> list[Check]:
    rate_limited_seen = sum(n for name, n in o.figures.errors.items() if "RateLimited" in name)
    trips = [s for s in breaker_states(o, "key-a") if s == "Open"]
    limited = o.recorder.attempt_errors.get("key-a:RateLimited", 0)
    return [
        every_request_answered(o),
        answers_whole(o),
        Check(
            name="no caller sees a rate limit",
            passed=rate_limited_seen == 0,
            detail=f"{rate_limited_seen} callers saw RateLimited; key-a answered 429 "
            f"{limited} times",
        ),
        Check(
            name="the storm really hit key-a (it answered 429s)",
            passed=limited > 0,
            detail=f"{limited} 429 answers from key-a",
        ),
        share_at_most(o, ["key-a"], 17, 75, 0.10, "cooldown respected"),
        Check(
            name="a rate limit is not a breaker failure: key-a's breaker never opens",
            passed=not trips,
            detail=f"breaker transitions of key-a: {breaker_states(o, 'key-a') or 'none'}",
        ),
        share_at_least(o, ["key-a"], 85, 100, 0.25, "traffic returns after the storm"),
        latency_kept(o, bar_s=UPSTREAM_P99_S + 0.1, why="failover on 429 is immediate"),
    ]


STORM = Scenario(
    name="rate_limit_storm",
    title="A rate-limit storm on one key",
    proves="A key answering 429 (retry-after-ms 5 s, then no delay at all, then "
    "Retry-After: 30) is cooled down for as long as the provider asks, not hammered and "
    "not counted as broken; with that key out, requests wait briefly for a free slot on "
    "the other two keys (each at its default limit of 10) rather than fail; callers never "
    "see a 429 and the key gets its traffic back when the storm is over.",
    targets=_keys("a", "b", "c"),
    # Without a provider delay, cooldowns back off up to max_ms (8 s here).
    settings={"concurrency_limit": 64, "queue_limit": 256, "backoff": {"max_ms": 8000}},
    load=((100.0, 25.0),),
    stream_share=0.3,
    answer=ANSWER,
    script=_storm_script,
    expect=_storm_expect,
)


# ---- 3. brown-out ----------------------------------------------------------------------


def _brownout_script(fake: FakeProvider, env: Env) -> None:
    s = env.s
    normal = healthy(env)
    rng = env.rng

    def key_a(elapsed: float) -> Behaviour:
        t = elapsed / s
        if t < 10 or t >= 60:
            return normal
        # Rising latency and 5xx: at 50 s the key takes 6 s and fails 60% of calls.
        worse = min(1.0, (t - 10) / 40)
        median = MEDIAN_S + worse * 5.5
        if rng.random() < 0.6 * worse:
            if rng.random() < 0.2:
                return jittered(model_overloaded(), lambda: median * s)
            return server_error(rng.choice((500, 502, 503)), latency=median * s)
        return jittered(answering(env), lognormal(median * s, SIGMA, rng))

    fake.on("sk-bench-a", timeline(key_a))
    fake.on("sk-bench-b", healthy(env))
    fake.on("sk-bench-c", healthy(env))


def _brownout_expect(o: Observed) -> list[Check]:
    errors = o.recorder.attempt_errors
    failed = errors.get("key-a:TransientServerFailure", 0) + errors.get("key-a:ModelUnavailable", 0)
    p95 = o.figures.latency.p95
    bar_ms = (2 * UPSTREAM_P99_S + o.mode.tolerance_s) * 1000
    return [
        every_request_answered(o),
        answers_whole(o),
        Check(
            name="the brown-out was felt: key-a's 5xx were retried elsewhere",
            passed=failed > 0,
            detail=f"{failed} 5xx from key-a; its breaker: "
            f"{breaker_states(o, 'key-a') or 'never opened'}",
        ),
        share_at_most(o, ["key-a"], 30, 55, 0.10, "traffic leaves the slow key"),
        Check(
            name=f"the brown-out hardly shows: p95 latency <= {bar_ms:.0f} ms",
            passed=p95 is not None and p95 <= bar_ms,
            detail=f"p95 {p95} ms, p99 {o.figures.latency.p99} ms",
        ),
        share_at_least(o, ["key-a"], 75, 90, 0.15, "traffic returns after recovery"),
    ]


BROWNOUT = Scenario(
    name="brownout",
    title="A brown-out: rising latency and 5xx",
    proves="As one key slows down (0.5 s to 6 s) and fails more and more (up to 60% "
    "500/502/503/529), latency scoring and the breaker move traffic to the healthy keys before "
    "callers notice; failed calls are retried elsewhere; the key is probed and used "
    "again once it recovers.",
    targets=_keys("a", "b", "c"),
    settings={
        "concurrency_limit": 64,
        "queue_limit": 256,
        "circuit_breaker": {"half_open_after_ms": 10_000},
    },
    load=((90.0, 15.0),),
    stream_share=0.3,
    answer=ANSWER,
    script=_brownout_script,
    expect=_brownout_expect,
)


# ---- 4. blackout and recovery ----------------------------------------------------------


def _blackout_script(fake: FakeProvider, env: Env) -> None:
    s = env.s
    normal = healthy(env)
    down = connect_error()

    def primary(elapsed: float) -> Behaviour:
        return down if 20 <= elapsed / s < 80 else normal

    fake.on("sk-bench-primary", timeline(primary))
    fake.on("sk-bench-b1", healthy(env))
    fake.on("sk-bench-b2", healthy(env))


def _blackout_expect(o: Observed) -> list[Check]:
    states = breaker_states(o, "key-primary")
    recovered = "Open" in states and "Closed" in states[states.index("Open") :]
    backups = ["key-b1", "key-b2"]
    return [
        every_request_answered(o),
        answers_whole(o),
        share_at_least(o, ["key-primary"], 0, 20, 0.95, "priority tiers"),
        share_at_least(o, backups, 22, 80, 0.99, "the backup tier takes over"),
        Check(
            name="the primary's breaker opens, probes and closes again",
            passed=recovered,
            detail=f"breaker transitions of key-primary: {states or 'none'}",
        ),
        share_at_least(o, ["key-primary"], 125, 140, 0.95, "traffic returns to the primary"),
        latency_kept(o, bar_s=UPSTREAM_P99_S + 0.1, why="a refused connection fails over at once"),
    ]


BLACKOUT = Scenario(
    name="blackout",
    title="A blackout and recovery",
    proves="When the primary key refuses connections for 60 s, the backup tier answers "
    "everything at once; the primary's breaker opens, later probes it, closes, and "
    "traffic returns to the primary.",
    targets=(
        TargetSpec(
            target_id="key-primary",
            key="sk-bench-primary",
            priority=1,
            extra={"concurrency_limit": 32},
        ),
        *_keys("b1", "b2"),
    ),
    settings={"concurrency_limit": 64, "queue_limit": 256},
    load=((140.0, 10.0),),
    stream_share=0.3,
    answer=ANSWER,
    script=_blackout_script,
    expect=_blackout_expect,
    bucket_s=4.0,
    outages={"sk-bench-primary": ((20.0, 80.0),)},
)


# ---- 5. stream cuts under load ---------------------------------------------------------


def _cuts_script(fake: FakeProvider, env: Env) -> None:
    s = env.s
    rng = env.rng

    # In-process, bodies arrive in 7-byte pieces to stress SSE parsing; over the wire
    # TCP splits them anyway, and thousands of tiny writes would measure the server.
    split = 64 if env.wire else 7

    def faulty(**faults: object) -> Behaviour:
        return jittered(answering(env, split_bytes=split, **faults), lognormal(0.3 * s, SIGMA, rng))

    # Every key is faulty, so there is no clean key to flee to: streams must be resumed.
    fake.on("sk-bench-a", mixture([(0.75, faulty()), (0.25, faulty(cut_after=3))], rng))
    fake.on(
        "sk-bench-b",
        mixture(
            [
                (0.75, faulty(repeat="tail:12")),
                (0.15, faulty(reset_after=5, repeat="tail:12")),
                (0.10, faulty(malformed_at=4, repeat="tail:12")),
            ],
            rng,
        ),
    )
    fake.on(
        "sk-bench-c",
        mixture(
            [
                (0.75, faulty(repeat="all")),
                (0.10, faulty(stall_after=2, repeat="all")),
                (0.10, faulty(no_terminator=True, repeat="all")),
                (0.05, faulty(cut_after=1, repeat="all")),
            ],
            rng,
        ),
    )


def _cuts_expect(o: Observed) -> list[Check]:
    interrupted = sum(
        n for name, n in o.recorder.attempt_errors.items() if name.endswith("InterruptedExecution")
    )
    f = o.figures
    return [
        every_request_answered(o),
        answers_whole(o),
        Check(
            name="streams really were cut (>= 10% of requests resumed)",
            passed=interrupted >= 0.10 * f.requests,
            detail=f"{interrupted} interrupted attempts over {f.requests} streams",
        ),
        Check(
            name="first token stays prompt: TTFT p95 <= 1.5 s",
            passed=f.ttft.p95 is not None and f.ttft.p95 <= (1.5 + o.mode.tolerance_s) * 1000,
            detail=f"TTFT p50 {f.ttft.p50} ms, p95 {f.ttft.p95} ms, p99 {f.ttft.p99} ms",
        ),
    ]


STREAM_CUTS = Scenario(
    name="stream_cuts",
    title="Stream cuts under load",
    proves="Streams cut after a few chunks, reset, stalled, sent a malformed chunk or "
    "lost their terminator are resumed on another key from the text already sent; "
    "repeated text at the seam (a tail, or the whole answer again) is dropped, so "
    "every caller reads exactly the expected answer.",
    targets=_keys("a", "b", "c"),
    settings={
        "concurrency_limit": 64,
        "queue_limit": 256,
        "stream_idle_timeout_ms": 2000,
        "failover_budget": 4,
    },
    load=((40.0, 10.0),),
    stream_share=1.0,
    answer=ANSWER,
    script=_cuts_script,
    expect=_cuts_expect,
)


# ---- 6. revoked key --------------------------------------------------------------------


def _revoked_script(fake: FakeProvider, env: Env) -> None:
    s = env.s
    normal = healthy(env)
    revoked = invalid_key()
    fake.on("sk-bench-a", timeline(lambda elapsed: normal if elapsed / s < 20 else revoked))
    fake.on("sk-bench-b", healthy(env))
    fake.on("sk-bench-c", healthy(env))


def _revoked_expect(o: Observed) -> list[Check]:
    reauth = [
        t for t in o.figures.transitions if t.target_id == "key-a" and t.state == "ReauthRequired"
    ]
    view = o.views["key-a"]
    after = reauth[0].at if reauth else 20.0
    # The refusal that marked the key arrived at the same instant: count strictly later.
    late_calls = o.calls_to("sk-bench-a", after=after + max(o.mode.tolerance_s, 0.001))
    return [
        every_request_answered(o),
        answers_whole(o),
        Check(
            name="401 makes the key ReauthRequired",
            passed=bool(reauth) and view.condition == "ReauthRequired",
            detail=f"ReauthRequired at {after:.2f} s; condition at the end {view.condition}",
        ),
        Check(
            name="a revoked key is not called again",
            passed=late_calls == 0,
            detail=f"{late_calls} calls reached the revoked key after it was marked",
        ),
        share_at_least(o, ["key-b", "key-c"], 22, 60, 1.0, "traffic moves"),
    ]


REVOKED = Scenario(
    name="revoked_key",
    title="A revoked key",
    proves="A key that starts answering 401 is marked ReauthRequired after its first "
    "refusal and never called again; the failed calls fail over, so callers see nothing.",
    targets=_keys("a", "b", "c"),
    settings={"concurrency_limit": 64, "queue_limit": 256},
    load=((60.0, 15.0),),
    stream_share=0.3,
    answer=ANSWER,
    script=_revoked_script,
    expect=_revoked_expect,
)


# ---- 7. overload -----------------------------------------------------------------------

SERVICE_S = 1.0


def _overload_script(fake: FakeProvider, env: Env) -> None:
    fixed = jittered(answering(env), lambda: SERVICE_S * env.s)
    for spec in OVERLOAD.targets:
        fake.on(spec.key, fixed)


def _overload_expect(o: Observed) -> list[Check]:
    shed = list(o.recorder.latency_by_outcome.get("Overloaded", ()))
    worst_shed = max(shed) if shed else None
    burst = o.recorder.window(20, 30)
    burst_total = sum(burst.outcomes.values())
    burst_shed = burst.outcomes.get("Overloaded", 0)
    calm = sorted(o.recorder.window(0, 20).latencies)
    accepted = sorted(burst.latencies)
    calm_p99 = calm[max(0, math.ceil(0.99 * len(calm)) - 1)] if calm else None
    accepted_p99 = accepted[max(0, math.ceil(0.99 * len(accepted)) - 1)] if accepted else None
    limit = o.config.concurrency_limit
    other = {k: n for k, n in o.figures.errors.items() if not k.startswith("Overloaded")}
    tolerance = o.mode.tolerance_s
    after = o.recorder.window(32, 45)
    after_total = sum(after.outcomes.values())
    # A queue no longer than the concurrency limit costs at most one more service time.
    bar = None if calm_p99 is None else 2.0 * calm_p99 + tolerance
    return [
        Check(
            name="admission sheds the excess (>= 30% of the burst refused)",
            passed=burst_total > 0 and burst_shed >= 0.3 * burst_total,
            detail=f"{burst_shed}/{burst_total} burst requests got Overloaded",
        ),
        Check(
            name="Overloaded is raised at once (no waiting)",
            passed=worst_shed is not None and worst_shed <= tolerance,
            detail=f"slowest refusal {_ms(worst_shed)} ms",
        ),
        Check(
            name="accepted requests keep their latency: burst p99 <= 2 x calm p99",
            passed=accepted_p99 is not None and bar is not None and accepted_p99 <= bar,
            detail=f"calm p99 {_ms(calm_p99)} ms, burst p99 {_ms(accepted_p99)} ms",
        ),
        Check(
            name="no error but Overloaded",
            passed=not other,
            detail=f"other errors: {other or 'none'}",
        ),
        Check(
            name=f"the upstream never sees more than concurrency_limit ({limit}) at once",
            passed=o.fake.max_in_flight <= limit,
            detail=f"max in flight upstream {o.fake.max_in_flight}",
        ),
        Check(
            name="calm again after the burst: every request from 32 s on answered",
            passed=after_total > 0 and after.outcomes.get("ok", 0) == after_total,
            detail=f"{after.outcomes.get('ok', 0)}/{after_total} answered",
        ),
    ]


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f}"


OVERLOAD = Scenario(
    name="overload",
    title="Overload: admission sheds at once",
    proves="Past its concurrency limit and a short queue, oswitch refuses new requests "
    "at once with Overloaded (a 503 with Retry-After through the sidecar) instead of "
    "queueing without bound, so the requests it accepts keep their latency.",
    targets=_keys("a", "b", "c"),
    settings={"concurrency_limit": 30, "queue_limit": 10, "backpressure_threshold": 5},
    load=((20.0, 15.0), (30.0, 120.0), (45.0, 15.0)),
    stream_share=0.3,
    answer=ANSWER,
    script=_overload_script,
    expect=_overload_expect,
    bucket_s=1.0,
    scale_capacity=True,
)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        STEADY,
        STORM,
        BROWNOUT,
        BLACKOUT,
        STREAM_CUTS,
        REVOKED,
        OVERLOAD,
        *DEADLINE_SCENARIOS,
    )
}
