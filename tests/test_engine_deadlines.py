"""Deadlines that learn (issue 13), through the engine on virtual time: never twice,
hedge before abandoning, learned first-token / chunk-gap / response deadlines, and
each one visible in listings and traces."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio

from bench.faults import first_token_after
from oswitch import AllTargetsFailed
from oswitch.config import SwitcherConfig
from oswitch.core.deadline_learning import DeadlinePolicies, DeadlineSource
from oswitch.runtime.switcher import Switcher, open_switcher
from oswitch.testing import FakeProvider, hang, reply, stream
from support import chat, config, target

ANSWER = " ".join(f"w{n}" for n in range(40))
FALLBACK = "gpt-4o-mini"


def with_fallback(*primaries: str, **fields: Any) -> SwitcherConfig:
    """Targets serving gpt-4o (keys ``key-<id>``) and one fallback target ``fb``."""
    return config(
        *(target(name) for name in primaries),
        target("fb", model=FALLBACK),
        fallbacks={"gpt-4o": (FALLBACK,)},
        **fields,
    )


async def collect(switcher: Switcher, **extra: Any) -> tuple[str, dict[str, Any], str]:
    """Stream one request; the caller's text, the last chunk and the request id."""
    async with switcher.stream(chat(**extra)) as chunks:
        received = [chunk async for chunk in chunks]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in received)
    return text, received[-1], chunks.request_id


def fast(latency: float = 0.5) -> Any:
    return stream(ANSWER, latency=latency)


async def test_a_silent_primary_is_hedged_at_the_cold_first_token_deadline(
    autojump_clock: object,
) -> None:
    """A target that accepts and never answers costs the cold first-token deadline
    (10 s) once: the fallback is started then and answers, not after 30 s."""
    fake = FakeProvider().on("key-a", hang()).on("key-fb", fast())
    async with open_switcher(with_fallback("a"), transport=fake.transport()) as switcher:
        text, last, request_id = await collect(switcher)
        assert trio.current_time() == 10.5
        trace = switcher.inspect_request(request_id)
        views = {v.target_id: v for v in switcher.list_targets()}
    assert text == ANSWER
    assert last["oswitch"]["target_id"] == "fb"
    assert fake.calls_to("key-a") == 1
    assert sorted((a.target_id, a.decision, a.hedge) for a in trace.attempts) == [
        ("a", "hedge_lost", False),
        ("fb", "return", True),
    ]
    lost = next(a for a in trace.attempts if a.target_id == "a")
    assert lost.deadline == "first_token 10.000s cold_start (0 observations)"
    # Silence before the headers is not a first-token sample: a dead key is not "slow".
    (learned,) = views["a"].deadlines
    assert (learned.model, learned.first_token.observations) == ("gpt-4o", 0)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):  # they are the engine's own
        learned.response_headers.seconds = 0.0  # type: ignore[misc]


async def test_a_late_first_token_is_hedged_and_the_loser_feeds_its_estimate(
    autojump_clock: object,
) -> None:
    """Headers at once and the first token after 20 s: hedged at 10 s, the fallback
    wins, and the lost attempt is a censored sample (first token > 10.5 s)."""
    fake = FakeProvider().on("key-a", first_token_after(fast(0.0), lambda: 20.0))
    fake.on("key-fb", fast())
    async with open_switcher(with_fallback("a"), transport=fake.transport()) as switcher:
        text, last, _ = await collect(switcher)
        assert trio.current_time() == 10.5
        views = {v.target_id: v for v in switcher.list_targets()}
    assert (text, last["oswitch"]["target_id"]) == (ANSWER, "fb")
    assert fake.calls_to("key-a") == 1 and fake.cancelled == 1
    (learned,) = views["a"].deadlines
    assert learned.first_token.observations == 1
    assert learned.first_token.quantile_s is not None and learned.first_token.quantile_s >= 10.5


async def test_a_stalled_stream_is_resumed_on_the_fallback_never_on_itself(
    autojump_clock: object,
) -> None:
    """20 chunks, then silence: cut at the cold 10 s gap deadline and resumed on the
    fallback model; the stalled target is not tried again (it used to be, twice)."""
    fake = FakeProvider()
    fake.on("key-a", stream(ANSWER, stall_after=20, chunk_latency=0.01))
    fake.on("key-fb", fast(0.2))
    async with open_switcher(with_fallback("a"), transport=fake.transport()) as switcher:
        text, last, request_id = await collect(switcher)
        assert trio.current_time() == pytest.approx(0.2 + 10.0 + 0.2)
        trace = switcher.inspect_request(request_id)
    assert (text, last["oswitch"]["target_id"]) == (ANSWER, "fb")
    assert fake.calls_to("key-a") == 1
    assert [(a.target_id, a.decision) for a in trace.attempts] == [
        ("a", "resume"),
        ("fb", "return"),
    ]
    assert trace.attempts[0].deadline == "chunk_gap 10.000s cold_start (0 observations)"


async def test_a_stall_is_not_tried_again_while_a_sibling_remains(autojump_clock: object) -> None:
    """A stalled target is left out of the rest of the request: the continuation goes
    to its sibling, and to the fallback after that, never back to it."""
    fake = FakeProvider()
    fake.on("key-a", stream(ANSWER, stall_after=5))
    fake.on("key-b", stream(ANSWER, stall_after=5))
    fake.on("key-fb", fast(0.0))
    cfg = with_fallback("a", "b", stream_idle_timeout_ms=1000, failover_budget=4)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        text, last, request_id = await collect(switcher)
        trace = switcher.inspect_request(request_id)
    assert (text, last["oswitch"]["target_id"]) == (ANSWER, "fb")
    assert (fake.calls_to("key-a"), fake.calls_to("key-b")) == (1, 1)
    assert [a.target_id for a in trace.attempts][-1] == "fb"
    assert trace.attempts[0].deadline == "chunk_gap 1.000s override (explicit setting)"


async def test_the_hedge_prefers_a_sibling_key_to_the_fallback_model(
    autojump_clock: object,
) -> None:
    """A slow key is hedged with its sibling serving the same model, not the fallback."""
    fake = FakeProvider().on("key-a", hang()).on("key-b", fast()).on("key-fb", fast())
    cfg = config(
        target("a", operator_priority=1),
        target("b"),
        target("fb", model=FALLBACK),
        fallbacks={"gpt-4o": (FALLBACK,)},
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        text, last, _ = await collect(switcher)
        assert trio.current_time() == 10.5
    assert (text, last["oswitch"]["target_id"]) == (ANSWER, "b")
    assert fake.calls_to("key-fb") == 0


async def test_a_slow_but_healthy_model_is_learned_and_keeps_its_traffic(
    autojump_clock: object,
) -> None:
    """A model whose first token always takes 30 s (headers at once) loses its cold
    requests to the fallback, learns from the lost hedges, and from the 22nd request
    on is no longer hedged: it serves its own traffic, after 30 s."""
    fake = FakeProvider().on("key-a", first_token_after(fast(0.0), lambda: 30.0))
    fake.on("key-fb", fast())
    served = []
    async with open_switcher(with_fallback("a"), transport=fake.transport()) as switcher:
        for _ in range(24):
            started = trio.current_time()
            text, last, _ = await collect(switcher)
            assert text == ANSWER
            served.append((last["oswitch"]["target_id"], trio.current_time() - started))
        view = {v.target_id: v for v in switcher.list_targets()}["a"]
    assert served[:20] == [("fb", 10.5)] * 20
    assert [who for who, _ in served[21:]] == ["a", "a", "a"]
    assert all(took == pytest.approx(30.0 + 0.0) for _, took in served[21:])
    assert view.deadlines[0].first_token.source is DeadlineSource.LEARNED
    assert view.deadlines[0].first_token.seconds > 30.0


async def test_an_explicit_first_token_timeout_abandons_instead_of_hedging(
    autojump_clock: object,
) -> None:
    """first_token_timeout_ms is a hard limit: the attempt is abandoned then (a silent
    TransportFailure) and failed over, with no overlap."""
    fake = FakeProvider().on("key-a", hang()).on("key-fb", fast(0.0))
    cfg = with_fallback("a", first_token_timeout_ms=3000)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        text, last, request_id = await collect(switcher)
        assert trio.current_time() == 3.0
        trace = switcher.inspect_request(request_id)
    assert (text, last["oswitch"]["target_id"]) == (ANSWER, "fb")
    first = trace.attempts[0]
    assert (first.target_id, str(first.error_class), first.hedge) == (
        "a",
        "TransportFailure",
        False,
    )
    assert first.deadline == "first_token 3.000s override (explicit setting)"


async def test_hedge_after_ms_overrides_the_learned_hedge_point(autojump_clock: object) -> None:
    """With hedge_after_ms set, a stream is hedged then, not at the learned deadline."""
    fake = FakeProvider().on("key-a", hang()).on("key-fb", fast(0.0))
    cfg = with_fallback("a", hedge_after_ms=1500)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        text, last, _ = await collect(switcher)
        assert trio.current_time() == 1.5
    assert (text, last["oswitch"]["target_id"]) == (ANSWER, "fb")


async def test_the_hedge_point_follows_a_fast_models_history(autojump_clock: object) -> None:
    """After 20 first tokens at 0.5 s, the deadline is the 2 s floor: a key that then
    goes silent is hedged after 2 s, not 10 s."""
    fake = FakeProvider().on("key-a", *([fast()] * 20), hang()).on("key-fb", fast())
    async with open_switcher(with_fallback("a"), transport=fake.transport()) as switcher:
        for _ in range(20):
            await collect(switcher)
        started = trio.current_time()
        text, last, request_id = await collect(switcher)
        assert trio.current_time() - started == 2.5
        trace = switcher.inspect_request(request_id)
        (learned,) = {v.target_id: v for v in switcher.list_targets()}["a"].deadlines
    assert (text, last["oswitch"]["target_id"]) == (ANSWER, "fb")
    assert learned.first_token.source is DeadlineSource.FLOOR
    lost = next(a for a in trace.attempts if a.target_id == "a")
    assert lost.deadline.startswith("first_token 2.000s floor (quantile 0.")


async def test_non_streamed_calls_learn_their_response_deadline(autojump_clock: object) -> None:
    """After 20 replies in 1 s, a reply that never comes is abandoned at the learned
    response deadline (the 5 s floor), not max_expected_latency_ms (30 s)."""
    fake = FakeProvider().on("key-a", *([reply("ok", latency=1.0)] * 20), hang())
    fake.on("key-fb", reply("fallback"))
    async with open_switcher(with_fallback("a"), transport=fake.transport()) as switcher:
        for _ in range(20):
            await switcher.complete(chat())
        started = trio.current_time()
        result = await switcher.complete(chat())
        assert trio.current_time() - started == 5.0
        trace = switcher.inspect_request(result["oswitch"]["request_id"])
    assert result["choices"][0]["message"]["content"] == "fallback"
    assert trace.attempts[0].note == "abandoned: no answer in time"
    assert trace.attempts[0].deadline.startswith("response_headers 5.000s floor")


async def test_a_cold_non_streamed_call_keeps_max_expected_latency(autojump_clock: object) -> None:
    """A target with no history waits max_expected_latency_ms for a non-streamed reply."""
    fake = FakeProvider().on("key-a", hang())
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        with pytest.raises(AllTargetsFailed):
            await switcher.complete(chat())
        assert trio.current_time() == 30.0


async def test_scaled_policies_scale_every_learned_duration(autojump_clock: object) -> None:
    """open_switcher(deadline_policies=DeadlinePolicies().scaled(0.01)) hedges a silent
    target at 0.1 s (the bench's compressed runs and the loopback tests use this)."""
    fake = FakeProvider().on("key-a", hang()).on("key-fb", fast(0.005))
    async with open_switcher(
        with_fallback("a"),
        transport=fake.transport(),
        deadline_policies=DeadlinePolicies().scaled(0.01),
    ) as switcher:
        text, last, _ = await collect(switcher)
        assert trio.current_time() == pytest.approx(0.105)
    assert (text, last["oswitch"]["target_id"]) == (ANSWER, "fb")


async def test_learned_deadlines_are_listed_formatted_and_exported(
    autojump_clock: object,
) -> None:
    """list_targets() shows each target's deadlines per model with their source; `ctl
    list-targets --deadlines` formats them and Prometheus exports them as gauges."""
    from prometheus_client.parser import text_string_to_metric_families

    from oswitch.control.ctl import format_deadlines, format_trace
    from oswitch.control.protocol import to_json, trace_json
    from oswitch.metrics import SwitcherMetrics

    fake = FakeProvider().on("key-a", hang()).on("key-fb", fast())
    async with open_switcher(with_fallback("a"), transport=fake.transport()) as switcher:
        metrics = SwitcherMetrics(switcher)
        _, _, request_id = await collect(switcher)
        views = switcher.list_targets()
        trace = switcher.inspect_request(request_id)
        rendered = metrics.render().decode()
    lines = format_deadlines(to_json(views))
    assert lines == [
        "TARGET  MODEL        FIRST-TOKEN         CHUNK-GAP           RESPONSE            SEEN",
        "a       gpt-4o       10.000s cold_start  10.000s cold_start  30.000s cold_start  0",
        "fb      gpt-4o-mini  10.000s cold_start  10.000s cold_start  30.000s cold_start  1",
    ]
    gauges = {
        (s.labels["target_id"], s.labels["deadline"], s.labels["source"]): s.value
        for family in text_string_to_metric_families(rendered)
        for s in family.samples
        if s.name == "oswitch_target_deadline_seconds"
    }
    assert gauges[("a", "first_token", "cold_start")] == 10.0
    assert gauges[("fb", "response_headers", "cold_start")] == 30.0
    timeline = "\n".join(format_trace(trace_json(trace)))
    assert "deadline first_token 10.000s cold_start (0 observations)" in timeline


async def test_a_cut_stream_is_continued_once_on_its_target_then_elsewhere(
    autojump_clock: object,
) -> None:
    """A stream cut (closed mid-answer) may be resumed once on the same target; cut
    again, the target is passed over and the fallback finishes the answer."""
    fake = FakeProvider().on("key-a", stream(ANSWER, cut_after=5)).on("key-fb", fast(0.0))
    async with open_switcher(with_fallback("a"), transport=fake.transport()) as switcher:
        text, last, request_id = await collect(switcher)
        trace = switcher.inspect_request(request_id)
    assert (text, last["oswitch"]["target_id"]) == (ANSWER, "fb")
    assert fake.calls_to("key-a") == 2
    assert [(a.target_id, a.decision) for a in trace.attempts] == [
        ("a", "resume"),
        ("a", "resume"),
        ("fb", "return"),
    ]


async def test_a_reload_keeps_what_a_target_learned(autojump_clock: object) -> None:
    """Reloading the config (the target unchanged or retuned) keeps its timings."""
    import attrs

    fake = FakeProvider().on("key-a", fast()).on("key-fb", fast())
    cfg = with_fallback("a")
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        for _ in range(3):
            await collect(switcher)
        retuned = attrs.evolve(
            cfg, targets=(attrs.evolve(cfg.targets[0], concurrency_limit=5), cfg.targets[1])
        )
        await switcher.reload_config(retuned)
        (learned,) = {v.target_id: v for v in switcher.list_targets()}["a"].deadlines
    assert learned.first_token.observations == 3
