"""The engine's 'done' scenario: three keys — one rate-limited, one failing, one silent."""

from __future__ import annotations

import random

import trio

from oswitch import AllTargetsFailed, ErrorClass, Overloaded
from oswitch.runtime.switcher import open_switcher
from oswitch.testing import FakeProvider, hang, rate_limited, reply, server_error
from support import chat, config, target


async def test_three_bad_keys_keep_answering_within_deadline(autojump_clock: object) -> None:
    """With one key rate-limited now and then, one returning 500s and one never answering,
    every request ends within its deadline with an answer or a typed error, and its trace
    explains every decision."""
    fake = FakeProvider()
    # Key a answers, but every fourth call is refused for two seconds.
    fake.on("key-limited", *([reply("a", latency=0.2)] * 3 + [rate_limited(2.0)]) * 50)
    fake.on("key-broken", server_error())
    fake.on("key-silent", hang())
    cfg = config(
        target("limited"),
        target("broken"),
        target("silent"),
        max_expected_latency_ms=3000,
        request_timeout_ms=20_000,
    )
    ended: list[tuple[str, float, str | None]] = []
    async with open_switcher(cfg, transport=fake.transport(), rng=random.Random(3)) as switcher:

        async def one(n: int) -> None:
            started = trio.current_time()
            try:
                result = await switcher.complete(chat(text=f"q{n}"), request_id=f"r{n}")
                ended.append(("ok", trio.current_time() - started, result["oswitch"]["target_id"]))
            except (AllTargetsFailed, Overloaded) as exc:
                assert exc.request_id == f"r{n}"
                ended.append((type(exc).__name__, trio.current_time() - started, None))

        async with trio.open_nursery() as nursery:
            for n in range(120):
                nursery.start_soon(one, n)
                await trio.sleep(1.0)

        assert len(ended) == 120
        assert all(duration <= 20.0 for _, duration, _ in ended)
        answered = [e for e in ended if e[0] == "ok"]
        assert len(answered) == 120, ended
        assert {served for _, _, served in answered} == {"limited"}
        views = {v.target_id: v for v in switcher.list_targets()}
        assert views["broken"].breaker_trips >= 1
        assert views["silent"].breaker_trips >= 1
        assert views["limited"].failures_by_class.get("RateLimited", 0) >= 1
        for n in range(120):
            trace = switcher.inspect_request(f"r{n}")
            assert trace.outcome in {"ok", "AllTargetsFailed", "Overloaded"}
            for attempt in trace.attempts:
                assert attempt.decision in {
                    "return",
                    "failover",
                    "backoff",
                    "cooldown",
                    "retry",
                    "fallback",
                }
                if attempt.target_id == "silent":
                    assert attempt.error_class is ErrorClass.TRANSPORT_FAILURE
                    assert attempt.duration_s == 3.0
            if trace.outcome == "ok":
                assert trace.attempts[-1].decision == "return"
