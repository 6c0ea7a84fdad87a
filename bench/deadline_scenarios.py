"""The deadline scenarios of issue 13: silent, slow and stalled targets, a slow but
healthy reasoning model, and a key whose first token slowly gets worse.

The first three are the issue's rows, each run twice: with one target per model
and a fallback model, and with three sibling keys (one faulty) beside the
fallback. Every request streams (the rows are about first tokens and chunk gaps;
a non-streamed call's deadline is its response's, docs/deadlines.md). Each checks
that every caller got the exact whole answer, that the faulty target was tried at
most once per request, and that no answer took longer than the careful client of
the issue's right-hand column (10.9 s, 10.9 s, 11.2 s).

Healthy keys and the fallback answer with their headers after a fixed 0.3 s and
12 chunks 20 ms apart (0.54 s in all), so each bound is the cold deadline (10 s)
plus that, with room to spare.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx
import trio

from bench.faults import by_stream_flag, first_token_after, jittered, timeline
from bench.harness import MODEL, Check, Env, Observed, Scenario, TargetSpec
from oswitch.testing import Behaviour, FakeProvider, hang, reply, stream
from oswitch.testing.playback import PlayedBody

ANSWER = (
    "Routing is the easy part. The hard part is keeping every promise when a key is "
    "rate limited, a provider browns out, a stream dies halfway or a credential is "
    "revoked: the caller still gets one whole answer, or one clear typed error."
)
FALLBACK_MODEL = "fallback-mini"
HEALTHY_S = 0.3  # headers after this, then 12 chunks 20 ms apart
CHUNK_S = 0.02
COLD_S = 10.0  # the cold first-token and chunk-gap deadlines (docs/deadlines.md)
SILENT_BAR_S = 10.9  # the careful client, row by row
SLOW_BAR_S = 10.9
STALL_BAR_S = 11.2
SETTINGS: Mapping[str, Any] = {
    "concurrency_limit": 64,
    "queue_limit": 256,
    "fallbacks": {MODEL: [FALLBACK_MODEL]},
}


def _answering(env: Env, *, words_per_chunk: int = 4, **faults: object) -> Behaviour:
    return by_stream_flag(
        reply(ANSWER),
        stream(
            ANSWER,
            words_per_chunk=words_per_chunk,
            chunk_latency=CHUNK_S * env.s,
            split_bytes=64,
            **faults,  # type: ignore[arg-type]
        ),
    )


def healthy(env: Env) -> Behaviour:
    """Headers after 0.3 s, the whole answer by 0.54 s."""
    return jittered(_answering(env), lambda: HEALTHY_S * env.s)


# Room for a faulty target's attempts: a silent one holds a slot for 10 s each, and
# at the default of 10 slots new requests would queue for it (this is not about capacity).
SLOTS: Mapping[str, Any] = {"concurrency_limit": 64}


def _spec(target_id: str, key: str, model: str = MODEL) -> TargetSpec:
    return TargetSpec(target_id=target_id, key=key, model=model, extra=SLOTS)


def _single() -> tuple[TargetSpec, ...]:
    return (
        _spec("primary", "sk-bench-primary"),
        _spec("fallback", "sk-bench-fallback", FALLBACK_MODEL),
    )


def _siblings() -> tuple[TargetSpec, ...]:
    return (
        _spec("key-a", "sk-bench-a"),
        _spec("key-b", "sk-bench-b"),
        _spec("key-c", "sk-bench-c"),
        _spec("fallback", "sk-bench-fallback", FALLBACK_MODEL),
    )


# ---- expectations ----------------------------------------------------------------------


def answered_whole(o: Observed) -> list[Check]:
    f = o.figures
    return [
        Check(
            name="every request answered",
            passed=f.requests > 0 and f.succeeded == f.requests,
            detail=f"{f.succeeded}/{f.requests} ok; errors {dict(f.errors) or 'none'}",
        ),
        Check(
            name="every answer whole (caller text == expected answer)",
            passed=f.text_mismatches == 0,
            detail=f"{f.text_mismatches} answers differed from the expected text",
        ),
    ]


def tried_once(o: Observed, faulty: str) -> Check:
    repeats = o.recorder.repeated_attempts[faulty]
    tried = o.figures.attempts_by_target.get(faulty, 0)
    return Check(
        name=f"never twice: {faulty} is tried at most once per request",
        passed=tried > 0 and repeats == 0,
        detail=f"{tried} attempts on {faulty}, {repeats} of them repeats within a request",
    )


def slowest_within(o: Observed, bar_s: float, why: str) -> Check:
    worst = o.figures.latency.max
    limit_ms = (bar_s + o.mode.tolerance_s) * 1000.0
    return Check(
        name=f"no answer later than {limit_ms:.0f} ms ({why})",
        passed=worst is not None and worst <= limit_ms,
        detail=f"slowest {worst} ms, p50 {o.figures.latency.p50} ms",
    )


def _row(faulty: str, bar_s: float, why: str) -> Callable[[Observed], list[Check]]:
    def expect(o: Observed) -> list[Check]:
        return [*answered_whole(o), tried_once(o, faulty), slowest_within(o, bar_s, why)]

    return expect


def _scripted(
    faulty_key: str, faulty: Callable[[Env], Behaviour]
) -> Callable[[FakeProvider, Env], None]:
    def script(fake: FakeProvider, env: Env) -> None:
        for key in ("sk-bench-b", "sk-bench-c", "sk-bench-fallback"):
            fake.on(key, healthy(env))
        fake.on(faulty_key, faulty(env))

    return script


def _silent(env: Env) -> Behaviour:
    return hang()  # accepts the connection, never answers


def _slow_first_token(env: Env) -> Behaviour:
    # Headers at once, the first token after 20 s.
    return first_token_after(_answering(env), lambda: 20.0 * env.s)


def _stall(env: Env) -> Behaviour:
    # Headers after 0.1 s, 20 words (one per chunk, 10 ms apart), then silence.
    streamed = stream(
        ANSWER,
        words_per_chunk=1,
        chunk_latency=0.01 * env.s,
        split_bytes=64,
        stall_after=20,
    )
    return jittered(by_stream_flag(reply(ANSWER), streamed), lambda: 0.1 * env.s)


def _rows() -> list[Scenario]:
    rows = []
    for name, title, faulty, bar, why in (
        (
            "silent",
            "A target that never answers",
            _silent,
            SILENT_BAR_S,
            "accepts and never answers: a careful client has the answer by 10.9 s",
        ),
        (
            "slow_first_token",
            "A target whose first token comes after 20 s",
            _slow_first_token,
            SLOW_BAR_S,
            "headers at once, first token after 20 s: 10.9 s from the fallback",
        ),
        (
            "stall",
            "A stream that stalls after 20 words",
            _stall,
            STALL_BAR_S,
            "20 tokens then a stall: 11.2 s, resumed on the fallback",
        ),
    ):
        for variant, targets, faulty_id, faulty_key in (
            ("", _single(), "primary", "sk-bench-primary"),
            ("_siblings", _siblings(), "key-a", "sk-bench-a"),
        ):
            where = (
                "one target per model and a fallback model"
                if not variant
                else "three sibling keys (one faulty) and a fallback model"
            )
            rows.append(
                Scenario(
                    name=name + variant,
                    title=f"{title} ({where})",
                    proves=f"With {where} — {why}. Every caller gets the whole "
                    "answer, the faulty target is tried once per request (never twice), "
                    "and no answer is later than that, with cold deadlines (10 s).",
                    targets=targets,
                    settings=SETTINGS,
                    # 20 requests in 20 s: the slow first token is checked cold (each
                    # lost hedge is an observation; 20 make a learned deadline).
                    load=((20.0, 1.0),),
                    stream_share=1.0,
                    answer=ANSWER,
                    script=_scripted(faulty_key, faulty),
                    expect=_row(faulty_id, bar, why),
                    bucket_s=2.0,
                )
            )
    return rows


# ---- reasoning: slow but healthy ------------------------------------------------------

REASONING_MODEL = MODEL
# Requests sent from here on find the model warm, in virtual time and over the wire
# (where a quarter of the load arrives, so its observations come in more slowly).
WARM_AFTER_S = 250.0
PAUSE_S = 8.0  # every fourth chunk comes after this pause


def _events(text: str, model: str) -> list[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

    words = text.split(" ")
    pieces = [" ".join(words[i : i + 4]) for i in range(0, len(words), 4)]
    pieces = [piece + " " for piece in pieces[:-1]] + pieces[-1:]
    return [
        chunk({"role": "assistant", "content": ""}),
        *(chunk({"content": piece}) for piece in pieces),
        chunk({}, "stop") + b"data: [DONE]\n\n",
    ]


def thinking(env: Env, rng: random.Random) -> Behaviour:
    """A reasoning model: headers at once, the first token after 25-45 s, then a
    pause of up to 8 s before every fourth chunk (the others 20 ms apart)."""

    async def respond(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        first = rng.uniform(25.0, 45.0) * env.s
        events = _events(ANSWER, str(body.get("model") or MODEL))
        # Content chunks are events 1..n: a long pause before every fourth one.
        delays = [
            rng.uniform(0.5 * PAUSE_S, PAUSE_S) * env.s if index % 4 == 0 else CHUNK_S * env.s
            for index in range(len(events))
        ]

        async def body_bytes() -> AsyncIterator[bytes]:
            await trio.sleep(first)
            for index, event in enumerate(events):
                if index > 1:
                    await trio.sleep(delays[index])
                yield event

        await trio.lowlevel.checkpoint()
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=PlayedBody(body_bytes())
        )

    return Behaviour(name="thinking", respond=respond)


def _reasoning_script(fake: FakeProvider, env: Env) -> None:
    fake.on("sk-bench-reasoner", thinking(env, env.rng))
    fake.on("sk-bench-fallback", healthy(env))


def _reasoning_expect(o: Observed) -> list[Check]:
    origin = o.recorder.origin
    s = o.s
    hedges = [(call.at - origin) / s for call in o.fake.calls if call.route == "sk-bench-fallback"]
    warm_hedges = [at for at in hedges if at >= WARM_AFTER_S]
    stalls = o.recorder.attempt_errors.get("reasoner:InterruptedExecution", 0)
    served = o.recorder.served_share(["reasoner"], WARM_AFTER_S, o.recorder.now())
    view = o.views["reasoner"]
    learned = next((d for d in view.deadlines if d.model == REASONING_MODEL), None)
    deadline = "none" if learned is None else learned.first_token.describe()
    return [
        *answered_whole(o),
        Check(
            name=f"warm from {WARM_AFTER_S:g} s: no request hedged to the fallback",
            passed=not warm_hedges,
            detail=f"{len(hedges)} hedged during warm-up (before {WARM_AFTER_S:g} s), "
            f"{len(warm_hedges)} after; first-token deadline at the end: {deadline}",
        ),
        Check(
            name="no stream of the slow model cut as a stall (pauses up to 8 s)",
            passed=stalls == 0,
            detail=f"{stalls} stalls",
        ),
        Check(
            name=f"slow but healthy keeps its traffic: reasoner serves every answer "
            f"sent from {WARM_AFTER_S:g} s",
            passed=served == 1.0,
            detail=f"share {served}",
        ),
    ]


REASONING = Scenario(
    name="reasoning",
    title="A slow but healthy reasoning model",
    proves="A model whose first token always takes 25-45 s (headers at once) and whose "
    "streams pause up to 8 s is hedged to its fast fallback only while cold: each lost "
    "hedge is a censored sample that moves its estimate up, so within its first few "
    "dozen requests (20 at the 10 s cold deadline, a few more at the first learned one) "
    "its deadline passes 45 s and it keeps every request after that, never cut as a stall.",
    targets=(
        _spec("reasoner", "sk-bench-reasoner"),
        _spec("fallback", "sk-bench-fallback", FALLBACK_MODEL),
    ),
    settings={**SETTINGS, "request_timeout_ms": 180_000},
    load=((400.0, 0.5),),
    stream_share=1.0,
    answer=ANSWER,
    script=_reasoning_script,
    expect=_reasoning_expect,
    bucket_s=20.0,
)


# ---- brown-out in latency: one key's first token climbs from 0.5 s to 8 s -----------------

CLIMB = (20.0, 60.0)  # key-a's first token climbs linearly between these times


def _first_token_of_a(elapsed_s: float) -> float:
    start, end = CLIMB
    share = min(1.0, max(0.0, (elapsed_s - start) / (end - start)))
    return 0.5 + share * 7.5


def _brownout_latency_script(fake: FakeProvider, env: Env) -> None:
    s = env.s
    for key in ("sk-bench-b", "sk-bench-c"):
        fake.on(key, first_token_after(_answering(env), lambda: 0.5 * s))

    def key_a(elapsed: float) -> Behaviour:
        delay = _first_token_of_a(elapsed / s) * s
        return first_token_after(_answering(env), lambda: delay)

    fake.on("sk-bench-a", timeline(key_a))


def _brownout_latency_expect(o: Observed) -> list[Check]:
    f = o.figures
    worst = f.ttft.max
    bar_s = 8.0 + 0.5 + o.mode.tolerance_s
    now = o.recorder.now()
    window = o.recorder.window(CLIMB[1], now)
    served = {t: window.served[t] for t in ("key-a", "key-b", "key-c")}
    total = sum(served.values())
    third = 1.0 / 3.0
    slack = 2.0 * (third * (1.0 - third) / total) ** 0.5 if total else 0.0
    view = o.views["key-a"]
    learned = next((d for d in view.deadlines if d.model == MODEL), None)
    return [
        *answered_whole(o),
        Check(
            name=f"no caller waits past a deadline: first token by {bar_s * 1000:.0f} ms",
            passed=worst is not None and worst <= bar_s * 1000.0,
            detail=f"TTFT p50 {f.ttft.p50} ms, p99 {f.ttft.p99} ms, max {worst} ms",
        ),
        Check(
            name="routing does not favour the slow key: once at 8 s, key-a serves at "
            "most an even third of the answers (plus two standard errors)",
            passed=total > 0 and served["key-a"] / total <= third + slack,
            detail=f"answers from {CLIMB[1]:g} s: {served} (allowed {third + slack:.1%})",
        ),
        Check(
            name="key-a's deadline followed it up: learned above its 8 s first token",
            passed=learned is not None and learned.first_token.seconds > 8.0 * o.s,
            detail="none" if learned is None else learned.first_token.describe(),
        ),
        tried_once(o, "key-a"),
    ]


BROWNOUT_LATENCY = Scenario(
    name="brownout_latency",
    title="One key's first token climbs from 0.5 s to 8 s",
    proves="As one key's first token slows from 0.5 s to 8 s over 40 s, its learned "
    "deadline (2 s while it was fast) rises with it, so it is not hedged while it still "
    "answers within its own history, routing does not favour it, and no caller waits "
    "past a deadline. A key that slows gradually is learned as slow: a sudden "
    "slowdown is what the hedge catches (slow_first_token, and the floor test).",
    targets=(
        _spec("key-a", "sk-bench-a"),
        _spec("key-b", "sk-bench-b"),
        _spec("key-c", "sk-bench-c"),
    ),
    settings={"concurrency_limit": 64, "queue_limit": 256},
    load=((90.0, 5.0),),
    stream_share=1.0,
    answer=ANSWER,
    script=_brownout_latency_script,
    expect=_brownout_latency_expect,
    bucket_s=5.0,
)

DEADLINE_SCENARIOS: tuple[Scenario, ...] = (*_rows(), REASONING, BROWNOUT_LATENCY)
