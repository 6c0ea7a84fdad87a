"""Tokens in the engine: budgets reserved and settled, limits learned from headers,
requests too large for every key refused unsent, usage accounted everywhere."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import httpx
import pytest
import trio
from token_fakes import answering, streaming

from oswitch import ErrorClass, RequestFailed
from oswitch.config import RateLimitConfig
from oswitch.core.tokens import estimate_request
from oswitch.metrics import SwitcherMetrics
from oswitch.runtime.switcher import open_switcher
from oswitch.testing import Behaviour, FakeProvider, reply
from oswitch.testing.metered import TokenMeter, metered
from support import chat, config, target


def tokens_per_minute(tpm: float) -> RateLimitConfig:
    return RateLimitConfig(tokens_per_minute=tpm)


# ---- configured budgets ------------------------------------------------------------


async def test_unused_reservations_are_refunded(autojump_clock: object) -> None:
    """Each request reserves its estimate and is refunded down to its real usage, so
    three requests of 300 estimated tokens fit a 600-token budget at once."""
    fake = FakeProvider().on("key-a", reply("ok"))
    cfg = config(target("a", rate_limit=tokens_per_minute(600)))
    request = chat(max_tokens=291)
    assert estimate_request(request).total_tokens == 300
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        start = trio.current_time()
        for _ in range(3):
            await switcher.complete(request)
        assert trio.current_time() - start == 0.0
        (view,) = switcher.list_targets()
    assert view.token_budget_available == 600 - 3 * 2  # each reply used 1 + 1 tokens


async def test_usage_over_the_estimate_is_charged(autojump_clock: object) -> None:
    """A reply that used more than its reservation is charged the difference: the next
    request waits exactly until the budget has refilled enough for it."""
    fake = FakeProvider().on(
        "key-a", answering(usage={"prompt_tokens": 9, "completion_tokens": 591})
    )
    cfg = config(target("a", rate_limit=tokens_per_minute(600)), max_wait_ms=60_000)
    request = chat(max_tokens=291)  # 300 estimated, 600 used: the budget is empty after
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        await switcher.complete(request)
        start = trio.current_time()
        await switcher.complete(request)
        waited = trio.current_time() - start
    assert waited == pytest.approx(30.0, abs=1e-6)  # 300 tokens at 10 per second


async def test_a_request_too_large_for_every_key_is_refused_unsent(
    autojump_clock: object,
) -> None:
    """A request over every key's whole per-minute budget is RequestTooLarge at once,
    and nothing is sent upstream."""
    fake = FakeProvider().on("key-a", reply()).on("key-b", reply())
    cfg = config(
        target("a", rate_limit=tokens_per_minute(600)),
        target("b", rate_limit=tokens_per_minute(800)),
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        with pytest.raises(RequestFailed) as caught:
            await switcher.complete(chat(max_tokens=1000))
    assert caught.value.error_class is ErrorClass.REQUEST_TOO_LARGE
    assert "not sent" in str(caught.value)
    assert fake.calls == []


async def test_a_large_request_goes_to_the_key_that_can_take_it(autojump_clock: object) -> None:
    """A request over one key's whole budget goes to a sibling whose budget holds it."""
    fake = FakeProvider().on("key-a", reply()).on("key-b", reply())
    cfg = config(
        target("a", operator_priority=1, rate_limit=tokens_per_minute(600)),
        target("b", rate_limit=tokens_per_minute(6000)),
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        result = await switcher.complete(chat(max_tokens=1000))
    assert result["oswitch"]["target_id"] == "b"
    assert fake.calls_to("key-a") == 0


# ---- learned limits ----------------------------------------------------------------


EMPTY_OPENAI = {
    "x-ratelimit-limit-tokens": "10000",
    "x-ratelimit-remaining-tokens": "0",
    "x-ratelimit-reset-tokens": "2s",
}


async def test_a_key_reported_empty_waits_until_it_has_refilled(autojump_clock: object) -> None:
    """A key whose headers say no tokens are left is not sent the next request until
    enough has refilled (OpenAI refills continuously: 10,000 tokens over 2 s), and no
    429 is provoked."""
    fake = FakeProvider().on("key-a", answering(headers=EMPTY_OPENAI))
    cfg = config(target("a"))
    request = chat(max_tokens=91)  # 100 estimated tokens
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        await switcher.complete(request)
        start = trio.current_time()
        await switcher.complete(request)
        waited = trio.current_time() - start
        (view,) = switcher.list_targets()
    assert waited == pytest.approx(100 / 5000, abs=1e-6)
    assert view.provider_limits["tokens"]["limit"] == 10000
    assert len(fake.calls) == 2


async def test_a_fixed_window_key_waits_for_its_reset(autojump_clock: object) -> None:
    """Plain X-RateLimit headers (OpenRouter style) reporting none left hold the key
    until the reported reset."""
    headers = {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "3"}
    fake = FakeProvider().on("key-a", answering(headers=headers))
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        await switcher.complete(chat())
        start = trio.current_time()
        await switcher.complete(chat())
        waited = trio.current_time() - start
    assert waited == pytest.approx(3.0, abs=1e-6)


async def test_learning_can_be_turned_off(autojump_clock: object) -> None:
    """With learn_rate_limits = false the provider's headers do not hold a key back."""
    fake = FakeProvider().on("key-a", answering(headers=EMPTY_OPENAI))
    cfg = config(target("a"), learn_rate_limits=False)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        await switcher.complete(chat())
        start = trio.current_time()
        await switcher.complete(chat())
        assert trio.current_time() - start == 0.0
        (view,) = switcher.list_targets()
    assert view.provider_limits == {}


async def test_the_key_with_more_headroom_is_preferred(autojump_clock: object) -> None:
    """Of two keys that can both take a request, the one whose provider reports more
    left gets it, so the emptier one is not run dry."""
    low = {
        "x-ratelimit-limit-tokens": "10000",
        "x-ratelimit-remaining-tokens": "1000",
        "x-ratelimit-reset-tokens": "1m0s",
    }
    high = {**low, "x-ratelimit-remaining-tokens": "9000"}
    fake = FakeProvider().on("key-a", answering(headers=low)).on("key-b", answering(headers=high))
    async with open_switcher(
        config(target("a"), target("b")), transport=fake.transport()
    ) as switcher:
        await switcher.pause_target("b")
        await switcher.complete(chat())
        await switcher.resume_target("b")
        await switcher.pause_target("a")
        await switcher.complete(chat())
        await switcher.resume_target("a")
        served = [(await switcher.complete(chat()))["oswitch"]["target_id"] for _ in range(6)]
    assert served == ["b"] * 6


async def test_no_429_under_a_metered_key(autojump_clock: object) -> None:
    """Against a fake key enforcing 2,000 tokens a minute, requests sent faster than
    that are held back by what its headers report: none is refused upstream."""
    meter = TokenMeter(tokens_per_minute=2000)
    fake = FakeProvider().on("key-a", metered(meter))
    cfg = config(target("a"), max_wait_ms=60_000)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        for _ in range(10):
            await switcher.complete(chat(max_tokens=491))
        (view,) = switcher.list_targets()
    assert (meter.admitted, meter.rejected) == (10, 0)
    assert view.tokens_used["prompt"] == meter.prompt_tokens
    assert view.tokens_used["completion"] == meter.completion_tokens


# ---- usage accounting ----------------------------------------------------------------


async def test_usage_reaches_trace_audit_metrics_and_listing(autojump_clock: object) -> None:
    """A reply's usage and its cost at the target's prices are in the attempt's trace,
    its audit event, the token and cost counters and the target's listing."""
    fake = FakeProvider().on(
        "key-a",
        answering(
            usage={
                "prompt_tokens": 100,
                "completion_tokens": 20,
                "prompt_tokens_details": {"cached_tokens": 40},  # type: ignore[dict-item]
            }
        ),
    )
    cfg = config(target("a", price_per_million_input=2.0, price_per_million_output=8.0))
    events: list[tuple[str, dict[str, Any]]] = []
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        metrics = SwitcherMetrics(switcher)
        switcher.events.add_listener(lambda name, fields: events.append((name, fields)))
        result = await switcher.complete(chat())
        trace = switcher.inspect_request(result["oswitch"]["request_id"])
        (view,) = switcher.list_targets()
        text = metrics.render().decode()
    cost = (100 * 2.0 + 20 * 8.0) / 1e6
    (attempt,) = trace.attempts
    assert (attempt.prompt_tokens, attempt.completion_tokens, attempt.cached_tokens) == (
        100,
        20,
        40,
    )
    assert attempt.cost == pytest.approx(cost)
    (fields,) = [f for name, f in events if name == "attempt"]
    assert (fields["prompt_tokens"], fields["completion_tokens"]) == (100, 20)
    assert fields["cost"] == pytest.approx(cost)
    assert 'oswitch_tokens_total{kind="prompt",model="gpt-4o",target_id="a"} 100.0' in text
    assert 'oswitch_tokens_total{kind="cached",model="gpt-4o",target_id="a"} 40.0' in text
    assert 'oswitch_cost_total{model="gpt-4o",target_id="a"}' in text
    assert view.tokens_used == {"prompt": 100, "completion": 20, "cached": 40}
    assert view.tokens_per_minute == 120
    assert view.cost == pytest.approx(cost)


async def test_a_stream_asks_for_usage_and_hides_the_extra_chunk(autojump_clock: object) -> None:
    """A stream to a known provider asks for usage when the caller did not; the usage
    chunk is accounted but not shown to the caller."""
    seen: list[Mapping[str, Any]] = []
    fake = FakeProvider().on("key-a", streaming(seen))
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        async with switcher.stream(chat(stream=True)) as chunks:
            got = [chunk async for chunk in chunks]
        trace = switcher.inspect_request(chunks.request_id)
    assert seen[0]["stream_options"] == {"include_usage": True}
    assert all(chunk["choices"] and "usage" not in chunk for chunk in got)
    (attempt,) = trace.attempts
    assert (attempt.prompt_tokens, attempt.completion_tokens) == (7, 3)


async def test_a_caller_that_asks_for_usage_gets_the_usage_chunk(autojump_clock: object) -> None:
    """A caller's own include_usage is passed on and its usage chunk reaches it."""
    seen: list[Mapping[str, Any]] = []
    fake = FakeProvider().on("key-a", streaming(seen))
    request = chat(stream=True, stream_options={"include_usage": True})
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        async with switcher.stream(request) as chunks:
            got = [chunk async for chunk in chunks]
    assert got[-1]["choices"] == [] and got[-1]["usage"]["total_tokens"] == 10


async def test_an_unknown_provider_is_not_asked_for_stream_usage(autojump_clock: object) -> None:
    """A target of a provider not known to take stream_options is not sent it, unless
    it opts in with stream_usage = true."""
    seen: list[Mapping[str, Any]] = []
    fake = FakeProvider().on("key-a", streaming(seen)).on("key-b", streaming(seen))
    cfg = config(
        attrs.evolve(target("a", operator_priority=1), provider_id="acme"),
        attrs.evolve(target("b", stream_usage=True), provider_id="acme"),
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        async with switcher.stream(chat(stream=True)) as chunks:
            [chunk async for chunk in chunks]
        await switcher.pause_target("a")
        async with switcher.stream(chat(stream=True)) as chunks:
            [chunk async for chunk in chunks]
    assert "stream_options" not in seen[0]
    assert seen[1]["stream_options"] == {"include_usage": True}


async def test_a_refused_stream_options_is_dropped_and_remembered(autojump_clock: object) -> None:
    """A 400 naming stream_options is retried at once without it, charged to nobody,
    and the target is not asked again."""
    seen: list[Mapping[str, Any]] = []
    refusal = {
        "error": {
            "message": "Unrecognized request argument supplied: stream_options",
            "type": "invalid_request_error",
            "code": None,
        }
    }

    async def refuse(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        seen.append(body)
        return httpx.Response(400, json=refusal)  # noqa: ASYNC910

    fake = FakeProvider().on("key-a", Behaviour(name="refuse", respond=refuse), streaming(seen))
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        for _ in range(2):
            async with switcher.stream(chat(stream=True)) as chunks:
                got = [chunk async for chunk in chunks]
            assert got[0]["choices"][0]["delta"]["content"] == "hi"
        (view,) = switcher.list_targets()
        trace = switcher.inspect_request(chunks.request_id)
    assert ["stream_options" in body for body in seen] == [True, False, False]
    assert view.failures_by_class == {}
    assert view.attempts == 2
    assert len(trace.attempts) == 1


async def test_too_large_for_a_model_walks_its_fallbacks(autojump_clock: object) -> None:
    """A request too large for every key of its model goes to a fallback model whose
    keys can take it, unsent to the small ones."""
    fake = FakeProvider().on("key-a", reply()).on("key-big", reply())
    cfg = config(
        target("a", rate_limit=tokens_per_minute(600)),
        target("big", model="gpt-4o-large", rate_limit=tokens_per_minute(60_000)),
        fallbacks={"gpt-4o": ("gpt-4o-large",)},
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        result = await switcher.complete(chat(max_tokens=1000))
    assert result["oswitch"]["target_id"] == "big"
    assert fake.calls_to("key-a") == 0


async def test_a_reload_resizes_the_token_budget(autojump_clock: object) -> None:
    """A reload that changes tokens_per_minute takes effect for the next request."""
    fake = FakeProvider().on("key-a", reply())
    small = config(target("a", rate_limit=tokens_per_minute(600)))
    large = config(target("a", rate_limit=tokens_per_minute(6000)))
    async with open_switcher(small, transport=fake.transport()) as switcher:
        with pytest.raises(RequestFailed):
            await switcher.complete(chat(max_tokens=1000))
        await switcher.reload_config(large)
        result = await switcher.complete(chat(max_tokens=1000))
        (view,) = switcher.list_targets()
    assert result["oswitch"]["target_id"] == "a"
    assert view.token_budget_available == 6000 - 2


async def test_a_refusal_of_the_callers_own_stream_options_is_not_remembered(
    autojump_clock: object,
) -> None:
    """When the caller sent stream_options of its own, a 400 naming them may be the
    caller's fault: the request is tried once without oswitch's addition, and the
    target is still asked for usage next time."""
    seen: list[Mapping[str, Any]] = []
    refusal = {"error": {"message": "bad stream_options", "type": "invalid_request_error"}}

    async def refuse(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        seen.append(body)
        return httpx.Response(400, json=refusal)  # noqa: ASYNC910

    refusing = Behaviour(name="refuse", respond=refuse)
    fake = FakeProvider().on("key-a", refusing, refusing, streaming(seen))
    own = chat(stream=True, stream_options={"continuous_usage_stats": True})
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        with pytest.raises(RequestFailed) as caught:
            async with switcher.stream(own) as chunks:
                [chunk async for chunk in chunks]
        async with switcher.stream(chat(stream=True)) as chunks:
            [chunk async for chunk in chunks]
    assert caught.value.error_class is ErrorClass.INVALID_REQUEST
    assert [body["stream_options"] for body in seen] == [
        {"continuous_usage_stats": True, "include_usage": True},
        {"continuous_usage_stats": True},
        {"include_usage": True},
    ]
