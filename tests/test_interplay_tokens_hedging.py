"""How token budgets (#15) meet hedging, never-twice and resume (#13), on virtual time:
reservations of raced attempts, usage of the winner only, hedges and resumes kept off
keys the learned limits say are exhausted, and a stream_options refusal in a race."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
import trio
from token_fakes import answering

from oswitch.config import RateLimitConfig
from oswitch.core.tokens import estimate_request
from oswitch.metrics import SwitcherMetrics
from oswitch.runtime.messages import AttemptOrder, Command, CommandKind, OutcomeKind
from oswitch.runtime.switcher import Switcher, open_switcher
from oswitch.testing import Behaviour, FakeProvider, hang, stream
from support import chat, config, target

USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
EXHAUSTED = {
    "x-ratelimit-limit-tokens": "10000",
    "x-ratelimit-remaining-tokens": "0",
    "x-ratelimit-reset-tokens": "60s",
}


def usage_stream(
    seen: list[Mapping[str, Any]] | None = None,
    *,
    text: str = "hi there",
    latency: float = 0.0,
    usage: Mapping[str, int] = USAGE,
) -> Behaviour:
    """An OpenAI stream of ``text`` (one chunk per word) that ends with a usage chunk
    when the request asks for one, as OpenAI does; each body is recorded in ``seen``."""

    async def respond(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        if seen is not None:
            seen.append(body)
        asked = (body.get("stream_options") or {}).get("include_usage") is True
        extra: dict[str, Any] = {"usage": None} if asked else {}

        def chunk(choices: list[Any], **more: Any) -> bytes:
            payload = {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o"}
            return f"data: {json.dumps({**payload, 'choices': choices, **more})}\n\n".encode()

        words = text.split(" ")
        events = [
            chunk(
                [
                    {
                        "index": 0,
                        "delta": {"content": (" " if n else "") + word},
                        "finish_reason": None,
                    }
                ],
                **extra,
            )
            for n, word in enumerate(words)
        ]
        events.append(chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}], **extra))
        if asked:
            events.append(chunk([], usage=dict(usage)))
        content = b"".join(events) + b"data: [DONE]\n\n"
        return httpx.Response(  # noqa: ASYNC910
            200, headers={"content-type": "text/event-stream"}, content=content
        )

    return Behaviour(name="usage_stream", respond=respond, latency=latency)


def refuse_stream_options(seen: list[Mapping[str, Any]]) -> Behaviour:
    """A 400 naming stream_options, as servers that do not know the field answer."""
    refusal = {
        "error": {
            "message": "Unrecognized request argument supplied: stream_options",
            "type": "invalid_request_error",
        }
    }

    async def respond(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        seen.append(body)
        return httpx.Response(400, json=refusal)  # noqa: ASYNC910

    return Behaviour(name="refuse_stream_options", respond=respond)


def tpm(tokens: float) -> RateLimitConfig:
    return RateLimitConfig(tokens_per_minute=tokens, burst_tokens=tokens)


async def collect(switcher: Switcher, request: Mapping[str, Any]) -> tuple[str, list[Any], str]:
    """Stream ``request``: the caller's text, every chunk, and the request id."""
    async with switcher.stream(request) as chunks:
        got = [chunk async for chunk in chunks]
    text = "".join(
        (c["choices"][0].get("delta") or {}).get("content") or "" for c in got if c["choices"]
    )
    return text, got, chunks.request_id


def views(switcher: Switcher) -> dict[str, Any]:
    return {view.target_id: view for view in switcher.list_targets()}


# ---- a hedged stream on token budgets ----------------------------------------------


async def test_a_hedged_stream_reserves_on_both_keys_and_settles_each(
    autojump_clock: object,
) -> None:
    """Both raced attempts reserve the estimate; the winner is settled down to its usage,
    the lost hedge (cancelled, no usage) keeps its reservation, as a cancel does."""
    request = chat(stream=True, max_tokens=291)
    assert estimate_request(request).total_tokens == 300
    fake = FakeProvider().on("key-a", hang()).on("key-b", usage_stream())
    cfg = config(
        target("a", operator_priority=1, rate_limit=tpm(600)),
        target("b", rate_limit=tpm(600)),
        hedge_after_ms=1000,
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        text, got, request_id = await collect(switcher, request)
        assert trio.current_time() == 1.0
        seen = views(switcher)
        trace = switcher.inspect_request(request_id)
    assert text == "hi there" and got[-1]["oswitch"]["target_id"] == "b"
    assert sorted((a.target_id, a.decision) for a in trace.attempts) == [
        ("a", "hedge_lost"),
        ("b", "return"),
    ]
    # a: 600 - 300 reserved at 0 s, +10 refilled by 1 s; b: 600 - 300 + (300 - 10).
    assert seen["a"].token_budget_available == pytest.approx(310.0)
    assert seen["b"].token_budget_available == pytest.approx(590.0)


async def test_only_the_winners_usage_is_counted_after_a_hedge(autojump_clock: object) -> None:
    """After a hedge, the usage chunk of the winner alone reaches the trace, the
    listing and oswitch_tokens_total; the lost attempt counts none, and the caller
    never sees the usage chunk oswitch asked for."""
    fake = FakeProvider().on("key-a", hang()).on("key-b", usage_stream())
    cfg = config(target("a", operator_priority=1), target("b"), hedge_after_ms=500)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        metrics = SwitcherMetrics(switcher)
        _, got, request_id = await collect(switcher, chat(stream=True))
        seen = views(switcher)
        trace = switcher.inspect_request(request_id)
        text = metrics.render().decode()
    assert all(chunk["choices"] and "usage" not in chunk for chunk in got)
    won = next(a for a in trace.attempts if a.target_id == "b")
    lost = next(a for a in trace.attempts if a.target_id == "a")
    assert (won.prompt_tokens, won.completion_tokens, won.hedge) == (7, 3, True)
    assert lost.prompt_tokens is None and lost.deadline == "hedge_after_ms 0.500s"
    assert seen["b"].tokens_used == {"prompt": 7, "completion": 3, "cached": 0}
    assert not any(seen["a"].tokens_used.values())
    assert 'oswitch_tokens_total{kind="prompt",model="gpt-4o",target_id="b"} 7.0' in text
    assert 'target_id="a"} ' not in "\n".join(
        line for line in text.splitlines() if line.startswith("oswitch_tokens_total")
    )


async def test_both_streams_beginning_at_once_count_only_the_winners_usage(
    autojump_clock: object,
) -> None:
    """When the first attempt and its hedge both reach content in the same instant,
    the later one is closed as a lost hedge: its usage never counts."""
    fake = FakeProvider()
    fake.on("key-a", usage_stream(latency=1.0, usage={"prompt_tokens": 50, "completion_tokens": 5}))
    fake.on("key-b", usage_stream(latency=0.5))
    cfg = config(target("a", operator_priority=1), target("b"), hedge_after_ms=500)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        _, got, request_id = await collect(switcher, chat(stream=True))
        seen = views(switcher)
        trace = switcher.inspect_request(request_id)
    winner = got[-1]["oswitch"]["target_id"]
    loser = "b" if winner == "a" else "a"
    assert sorted(a.decision for a in trace.attempts) == ["hedge_lost", "return"]
    assert not any(seen[loser].tokens_used.values())
    assert sum(seen[winner].tokens_used.values()) > 0


# ---- learned limits and the choice of a hedge or a resume --------------------------


async def test_a_hedge_never_lands_on_a_key_reported_exhausted(autojump_clock: object) -> None:
    """A key whose provider reported no tokens left is passed over by the hedge, which
    goes to the next key that has room."""
    fake = FakeProvider()
    fake.on("key-a", hang())
    fake.on("key-b", answering(headers=EXHAUSTED), usage_stream())
    fake.on("key-c", usage_stream())
    cfg = config(
        target("b", operator_priority=2),
        target("a", operator_priority=1),
        target("c"),
        hedge_after_ms=1000,
    )
    request = chat(stream=True, max_tokens=1000)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        await switcher.complete(chat())  # b learns it has no tokens left
        assert views(switcher)["b"].provider_limits["tokens"]["remaining"] == 0
        text, got, _ = await collect(switcher, request)
    assert got[-1]["oswitch"]["target_id"] == "c" and text == "hi there"
    assert (fake.calls_to("key-b"), fake.calls_to("key-a")) == (1, 1)


async def test_a_resume_after_a_stall_skips_the_exhausted_key_and_the_stalled_one(
    autojump_clock: object,
) -> None:
    """A stream that stalls is resumed neither on itself (never twice) nor on a key the
    provider reported exhausted, but on the key with room."""
    fake = FakeProvider()
    fake.on("key-a", stream("one two three four five six", stall_after=3))
    fake.on("key-b", answering(headers=EXHAUSTED), usage_stream())
    fake.on("key-c", stream("one two three four five six"))
    cfg = config(
        target("b", operator_priority=2),
        target("a", operator_priority=1),
        target("c"),
        stream_idle_timeout_ms=1000,
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        await switcher.complete(chat())  # b learns it has no tokens left
        text, _, request_id = await collect(switcher, chat(stream=True, max_tokens=1000))
        trace = switcher.inspect_request(request_id)
    assert text == "one two three four five six"
    assert [(a.target_id, a.decision) for a in trace.attempts] == [("a", "resume"), ("c", "return")]
    assert (fake.calls_to("key-a"), fake.calls_to("key-b")) == (1, 1)


async def test_a_stalled_attempt_keeps_its_reservation_and_the_resume_reserves_anew(
    autojump_clock: object,
) -> None:
    """A stall ends without usage: the stalled key keeps the estimate it reserved (the
    provider counted the tokens it generated), and the continuation reserves its own,
    larger estimate on the sibling, settled to that sibling's usage."""
    request = chat(stream=True, max_tokens=291)
    fake = FakeProvider()
    fake.on("key-a", stream("one two three four five six", stall_after=3))
    fake.on("key-b", usage_stream(text="one two three four five six"))
    cfg = config(
        target("a", operator_priority=1, rate_limit=tpm(6000)),
        target("b", rate_limit=tpm(6000)),
        stream_idle_timeout_ms=1000,
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        text, _, request_id = await collect(switcher, request)
        now = trio.current_time()
        seen = views(switcher)
        trace = switcher.inspect_request(request_id)
    assert text == "one two three four five six"
    assert [(a.target_id, a.decision) for a in trace.attempts] == [("a", "resume"), ("b", "return")]
    refill = 100.0 * now  # 6000 a minute
    assert seen["a"].token_budget_available == pytest.approx(min(6000.0, 6000 - 300 + refill))
    assert seen["b"].token_budget_available == pytest.approx(6000.0 - 10)  # its usage
    assert seen["b"].tokens_used == {"prompt": 7, "completion": 3, "cached": 0}


# ---- stream_options refusals in a race ----------------------------------------------


async def test_a_hedge_refusing_stream_options_is_resent_within_the_hedge(
    autojump_clock: object,
) -> None:
    """A hedge whose target answers 400 to the stream_options oswitch added is sent again
    at once without them inside the same attempt: it still wins the race, nothing is
    charged to it, and its budget is refunded for the refused send."""
    seen: list[Mapping[str, Any]] = []
    fake = FakeProvider().on("key-a", hang())
    fake.on("key-b", refuse_stream_options(seen), usage_stream(seen))
    cfg = config(
        target("a", operator_priority=1),
        target("b", rate_limit=tpm(6000)),
        hedge_after_ms=1000,
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        text, got, request_id = await collect(switcher, chat(stream=True, max_tokens=291))
        assert trio.current_time() == 1.0
        seen_views = views(switcher)
        trace = switcher.inspect_request(request_id)
    assert text == "hi there" and got[-1]["oswitch"]["target_id"] == "b"
    assert ["stream_options" in body for body in seen] == [True, False]
    assert seen_views["b"].failures_by_class == {}
    assert sorted((a.target_id, a.decision) for a in trace.attempts) == [
        ("a", "hedge_lost"),
        ("b", "return"),
    ]
    # No usage without stream_options: the reservation stands (the provider counted it).
    assert seen_views["b"].token_budget_available == pytest.approx(6000 - 300 + 0.0)


async def test_a_primary_refusing_stream_options_still_gets_hedged_on_time(
    autojump_clock: object,
) -> None:
    """The resend after a stream_options refusal is part of the first attempt: the hedge
    point counts from the first send, so a resend that then hangs is hedged at 1 s."""
    seen: list[Mapping[str, Any]] = []
    fake = FakeProvider().on("key-a", refuse_stream_options(seen), hang())
    fake.on("key-b", usage_stream())
    cfg = config(target("a", operator_priority=1), target("b"), hedge_after_ms=1000)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        text, got, _ = await collect(switcher, chat(stream=True))
        assert trio.current_time() == 1.0
        seen_views = views(switcher)
    assert text == "hi there" and got[-1]["oswitch"]["target_id"] == "b"
    assert ["stream_options" in body for body in seen] == [True]
    assert fake.calls_to("key-a") == 2
    assert seen_views["a"].failures_by_class == {}


# ---- an order the target refuses after its tokens were reserved --------------------


async def test_an_order_refused_after_its_reservation_leaves_the_learned_headroom_whole(
    autojump_clock: object,
) -> None:
    """An order the target refuses once its tokens were reserved (it was paused in the
    meantime) was never sent: the key's learned headroom is what it was before."""
    half = {
        "x-ratelimit-limit-tokens": "10000",
        "x-ratelimit-remaining-tokens": "5000",
        "x-ratelimit-reset-tokens": "60s",
    }
    fake = FakeProvider().on("key-a", answering(headers=half))
    request = chat(max_tokens=1000)
    estimate = estimate_request(request)
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        await switcher.complete(chat())  # a learns: 5000 of 10000 tokens left
        actor = switcher._router.actors["a"]
        before = actor.headroom(estimate, trio.current_time()).spare
        # A pause, then an order picked while the target was still Active: in this order
        # in the inbox, the order is reserved for and then refused.
        pause = Command(kind=CommandKind.PAUSE)
        order = AttemptOrder(
            request=request,
            model="gpt-4o",
            stream=False,
            deadline=math.inf,
            request_id="r1",
            estimate=estimate,
        )
        assert await actor.send(pause) and await actor.send(order)
        outcome = await order.reply.wait()
        after = actor.headroom(estimate, trio.current_time()).spare
        assert trio.current_time() == 0.0
    assert outcome.kind is OutcomeKind.REFUSED and fake.calls_to("key-a") == 1
    assert after == pytest.approx(before)


async def test_a_hedged_completion_counts_only_the_winners_usage(autojump_clock: object) -> None:
    """hedge_after_ms hedges a non-streamed call too: the winner's reply usage is
    settled and counted, the cancelled first call keeps its reservation and counts none."""
    request = chat(max_tokens=291)
    fake = FakeProvider().on("key-a", hang())
    fake.on("key-b", answering(usage={"prompt_tokens": 20, "completion_tokens": 5}))
    cfg = config(
        target("a", operator_priority=1, rate_limit=tpm(600)),
        target("b", rate_limit=tpm(600)),
        hedge_after_ms=1000,
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        metrics = SwitcherMetrics(switcher)
        result = await switcher.complete(request)
        assert trio.current_time() == 1.0
        seen = views(switcher)
        trace = switcher.inspect_request(result["oswitch"]["request_id"])
        text = metrics.render().decode()
    assert result["oswitch"]["target_id"] == "b"
    assert sorted((a.target_id, a.decision) for a in trace.attempts) == [
        ("a", "hedge_lost"),
        ("b", "return"),
    ]
    assert seen["a"].token_budget_available == pytest.approx(310.0)
    assert seen["b"].token_budget_available == pytest.approx(600.0 - 25)
    assert not any(seen["a"].tokens_used.values())
    assert 'oswitch_tokens_total{kind="completion",model="gpt-4o",target_id="b"} 5.0' in text
