"""``token_storm``: three keys of one model with small token budgets, and requests of
mixed sizes at a rate near the sum of the budgets.

The fake upstream enforces each key's budget (:class:`~oswitch.testing.metered.TokenMeter`:
a continuously refilled bucket of ``KEY_TPM`` tokens a minute, a request admitted
only when its prompt plus its ``max_tokens`` fit) and reports what is left on every
reply, in OpenAI-style headers (or Anthropic-style in the ``_anthropic`` variants).
Each variant runs with header learning on and off (``learn_rate_limits``), so the
upstream 429s provoked per 1,000 requests can be compared side by side
(:func:`side_by_side`, ``python -m bench --token-storm``).

Checked with learning on: every request answered; at most ``MAX_429_PER_1000``
upstream 429s per 1,000 requests; no key answered more in any 60-second window than
its bucket allows (a minute's budget held plus a minute's refill; the peak is
reported); the tokens in ``oswitch_tokens_total`` equal the upstream's count.
With learning off only what must hold anyway is checked (every 429 was the upstream
enforcing its budget, the usage totals agree); its 429 figure is the comparison.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from bench.harness import (
    MODEL,
    WIRE,
    Check,
    Env,
    Observed,
    Scenario,
    ScenarioResult,
    TargetSpec,
)
from oswitch.testing import FakeProvider
from oswitch.testing.metered import HeaderStyle, TokenMeter, metered

KEY_TPM = 6_000  # each key's budget: tokens per minute, as the fake enforces it
KEYS = ("a", "b", "c")
# Requests: a prompt of one of these sizes (characters: 4 per token, so 50 to 1,000
# prompt tokens) and one of these completion limits; the fake's completion is half of
# the limit. On average a request is admitted for ~770 tokens and uses ~600, so a key's
# bucket holds about ten.
PROMPT_CHARS = (200, 800, 2000, 4000)
MAX_TOKENS = (100, 300, 600)
# 0.45 requests a second use ~270 tokens a second, ~16,300 a minute: 90% of the three
# budgets' 18,000 (Poisson arrivals: some minutes ask for more).
RATE_PER_S = 0.45
DURATION_S = 2100.0
LATENCY_S = 0.5
ANSWER = "Within budget."
MAX_429_PER_1000 = 5.0

# The meters of each variant's latest run, by scenario name (for side_by_side).
METERS: dict[str, dict[str, TokenMeter]] = {}


def storm_request(n: int) -> dict[str, Any]:
    """The ``n``-th request: its size drawn from a generator seeded by ``n``."""
    rng = random.Random(n)
    chars = rng.choice(PROMPT_CHARS)
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": ("token storm " * chars)[:chars]}],
        "max_tokens": rng.choice(MAX_TOKENS),
    }


def _metric_tokens(o: Observed) -> int | None:
    """The prompt + completion tokens in ``oswitch_tokens_total``, all targets."""
    if o.metrics is None:
        return None
    total = 0.0
    for family in o.metrics.registry.collect():
        if family.name != "oswitch_tokens":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("kind") in (
                "prompt",
                "completion",
            ):
                total += sample.value
    return round(total)


def per_thousand(o: Observed, meters: Mapping[str, TokenMeter]) -> float:
    """Upstream 429s provoked per 1,000 requests."""
    rejected = sum(m.rejected for m in meters.values())
    return 1000.0 * rejected / max(1, o.figures.requests)


def _checks(o: Observed, meters: Mapping[str, TokenMeter], *, learning: bool) -> list[Check]:
    f = o.figures
    rate = per_thousand(o, meters)
    counted = sum(m.prompt_tokens + m.completion_tokens for m in meters.values())
    in_metrics = _metric_tokens(o)
    budget = next(iter(meters.values())).tokens_per_minute
    peaks = {key: m.window_peak() for key, m in meters.items()}
    rejected = {key: m.rejected for key, m in meters.items()}
    seen = sum(n for key, n in o.recorder.attempt_errors.items() if key.endswith(":RateLimited"))
    checks = [
        Check(
            name="usage totals in oswitch_tokens_total equal the upstream's count",
            passed=in_metrics == counted,
            detail=f"metrics {in_metrics}, upstream {counted} tokens",
        ),
        Check(
            name="every 429 oswitch saw was the upstream enforcing its budget",
            passed=seen == sum(rejected.values()),
            detail=f"{seen} RateLimited attempts, upstream refused {rejected}",
        ),
    ]
    if not learning:
        return checks
    return [
        Check(
            name="every request answered",
            passed=f.requests > 0 and f.succeeded == f.requests,
            detail=f"{f.succeeded}/{f.requests} ok; errors {dict(f.errors) or 'none'}",
        ),
        Check(
            name=f"upstream 429s per 1,000 requests <= {MAX_429_PER_1000:g}",
            passed=rate <= MAX_429_PER_1000,
            detail=f"{rate:.1f} per 1,000 ({sum(rejected.values())} of {f.requests}); "
            f"by key {rejected}",
        ),
        Check(
            name="no key answered past its budget in any minute window (its bucket of "
            "one minute's tokens plus a minute's refill)",
            passed=all(peak <= 2 * budget for peak in peaks.values()),
            detail=f"most tokens in any 60 s, by key: {peaks} (per-minute budget {budget:g})",
        ),
        *checks,
    ]


def token_storm(*, headers: HeaderStyle = "openai", learning: bool = True) -> Scenario:
    """The scenario with ``headers``-style limit headers and learning on or off."""
    meters: dict[str, TokenMeter] = {}

    def script(fake: FakeProvider, env: Env) -> None:
        # Over the wire the load is scaled down (WIRE.load_scale) and time sped up
        # (env.s): the budgets keep their size, which requests must fit, and the
        # meter's minute stretches so that they refill at the scaled load's pace.
        load_scale = WIRE.load_scale if env.wire else 1.0
        meters.clear()
        for name in KEYS:
            meter = TokenMeter(
                tokens_per_minute=KEY_TPM,
                headers=headers,
                completion_fraction=0.5,
                time_scale=env.s / load_scale,
            )
            meters[f"key-{name}"] = meter
            fake.on(f"sk-bench-{name}", metered(meter, ANSWER, latency=LATENCY_S * env.s))

    def expect(o: Observed) -> list[Check]:
        return _checks(o, meters, learning=learning)

    style = "" if headers == "openai" else "_anthropic"
    learned = "" if learning else "_no_learning"
    METERS[f"token_storm{style}{learned}"] = meters
    shown = "OpenAI-style" if headers == "openai" else "Anthropic-style"
    return Scenario(
        name=f"token_storm{style}{learned}",
        title=f"Token budgets near full, {shown} headers, learning {'on' if learning else 'off'}",
        proves="With the providers' rate-limit headers learned, oswitch holds each key "
        "back until its reported tokens cover the request and prefers the key with the "
        "most left, so a 429 is the exception, not how the limit is found; every token "
        "the upstream counted is in the metrics."
        if learning
        else "The comparison: the same load with learn_rate_limits = false finds each "
        "key's limit only by its 429s.",
        targets=tuple(TargetSpec(target_id=f"key-{name}", key=f"sk-bench-{name}") for name in KEYS),
        settings={
            "concurrency_limit": 64,
            "queue_limit": 256,
            "learn_rate_limits": learning,
            "max_wait_ms": 30_000,
        },
        load=((DURATION_S, RATE_PER_S),),
        stream_share=0.0,
        answer=ANSWER,
        script=script,
        expect=expect,
        bucket_s=10.0,
        request=storm_request,
    )


VARIANTS = (
    token_storm(),
    token_storm(learning=False),
    token_storm(headers="anthropic"),
    token_storm(headers="anthropic", learning=False),
)


def side_by_side(results: Mapping[str, ScenarioResult]) -> list[str]:
    """The variants' figures, learning on beside learning off, as text lines:
    requests, upstream 429s per 1,000, callers failed, p99 latency."""
    lines = [
        f"{'variant':<40} {'requests':>8} {'429s/1000':>10} {'failed':>7} {'p99 ms':>9}",
    ]
    for name, result in results.items():
        meters = METERS.get(name, {})
        f = result.figures
        rejected = sum(m.rejected for m in meters.values())
        rate = 1000.0 * rejected / max(1, f.requests)
        p99 = "n/a" if f.latency.p99 is None else f"{f.latency.p99:.0f}"
        lines.append(
            f"{name:<40} {f.requests:>8} {rate:>10.1f} {f.requests - f.succeeded:>7} {p99:>9}"
        )
    return lines
