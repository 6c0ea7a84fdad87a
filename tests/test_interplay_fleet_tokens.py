"""How the fleet store (#16) meets token budgets (#15): after an attempt settles, the
store's shared token bucket and the replica's own TargetTokens hold the same tokens
in use. A real redis-server, the real clock, every test under ``trio.fail_after``;
tokens in use are compared within a small slack for the refill while the test runs."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest
import trio
from redis_server import RedisServer, prefix
from test_interplay_tokens_hedging import usage_stream
from token_fakes import answering

from oswitch import AllTargetsFailed, RequestFailed, Switcher, open_switcher
from oswitch.config import RateLimitConfig, StoreConfig, SwitcherConfig
from oswitch.core.secret import Secret
from oswitch.core.tokens import estimate_request
from oswitch.fleet.keys import target_keys
from oswitch.testing import FakeProvider, bad_request
from support import chat, config, target

KEY = "key-a"
BURST = 100_000.0  # large, so that no bucket fills up during a test
RATE = RateLimitConfig(tokens_per_minute=600.0, burst_tokens=BURST)  # 10 tokens a second
SLACK = 10.0  # tokens refilled in up to a second of real time
REQUEST = chat(max_tokens=400)
ESTIMATE = estimate_request(REQUEST).total_tokens


def fleet_config(redis: RedisServer, pre: str) -> SwitcherConfig:
    store = StoreConfig(url=Secret(redis.url), key_prefix=pre, timeout_ms=500.0)
    return config(target("a", KEY, rate_limit=RATE), store=store, max_wait_ms=0.0)


async def store_in_use(redis: RedisServer, pre: str) -> float:
    """Tokens the store's GCRA bucket holds in use now: (tat - now) / interval."""
    raw = await trio.to_thread.run_sync(redis.command, "GET", target_keys(pre, "a").tokens)
    seconds, micros = await trio.to_thread.run_sync(redis.command, "TIME")
    if raw in (None, b"", ""):
        return 0.0
    raw_text = raw.decode() if isinstance(raw, bytes) else str(raw)
    now_us = int(seconds) * 1_000_000 + int(micros)
    interval_us = 1e6 * 60.0 / 600.0
    return max(0.0, (float(raw_text) - now_us) / interval_us)


def local_in_use(switcher: Switcher) -> float:
    (view,) = switcher.list_targets()
    assert view.token_budget_available is not None
    return BURST - view.token_budget_available


async def settled(switcher: Switcher, writes: int, limit: float = 3.0) -> None:
    """Wait until the replica's background writer has done ``writes`` store writes."""
    link = switcher.fleet
    assert link is not None
    done: Callable[[], bool] = lambda: link.statistics().writes >= writes  # noqa: E731
    with trio.fail_after(limit):
        while not done():  # noqa: ASYNC110 (the writer runs in the switcher's nursery)
            await trio.sleep(0.01)


async def test_a_completion_settles_alike_in_the_store_and_locally(
    redis_server: RedisServer,
) -> None:
    """A whole reply reserved its estimate in both buckets; its usage settles both to
    the same tokens in use."""
    pre = prefix()
    fake = FakeProvider().on(KEY, answering(usage={"prompt_tokens": 20, "completion_tokens": 30}))
    with trio.fail_after(10):
        async with open_switcher(
            fleet_config(redis_server, pre), transport=fake.transport()
        ) as one:
            await one.complete(REQUEST)
            await settled(one, 1)
            local, shared = local_in_use(one), await store_in_use(redis_server, pre)
    assert ESTIMATE > 400
    assert local == pytest.approx(50.0, abs=SLACK)
    assert shared == pytest.approx(50.0, abs=SLACK)


async def test_a_stream_settles_alike_in_the_store_and_locally(
    redis_server: RedisServer,
) -> None:
    """A stream's usage (its last chunk, which oswitch asked for) settles the store's
    reservation as it settles the replica's own."""
    pre = prefix()
    fake = FakeProvider().on(KEY, usage_stream())
    with trio.fail_after(10):
        async with open_switcher(
            fleet_config(redis_server, pre), transport=fake.transport()
        ) as one:
            async with one.stream(chat(stream=True, max_tokens=400)) as chunks:
                async for _ in chunks:
                    pass
            await settled(one, 1)
            local, shared = local_in_use(one), await store_in_use(redis_server, pre)
    assert local == pytest.approx(10.0, abs=SLACK)
    assert shared == pytest.approx(10.0, abs=SLACK)


async def test_a_refused_request_is_refunded_in_the_store_as_locally(
    redis_server: RedisServer,
) -> None:
    """A 400 from the provider used no tokens: the replica refunds its reservation
    whole, and so does the store."""
    pre = prefix()
    fake = FakeProvider().on(KEY, bad_request("no such parameter"))
    with trio.fail_after(10):
        async with open_switcher(
            fleet_config(redis_server, pre), transport=fake.transport()
        ) as one:
            with pytest.raises(RequestFailed):
                await one.complete(REQUEST)
            await trio.sleep(0.1)  # any settlement write has been done by then
            local, shared = local_in_use(one), await store_in_use(redis_server, pre)
    assert local == pytest.approx(0.0, abs=SLACK)
    assert shared == pytest.approx(0.0, abs=SLACK)


async def test_a_store_refusal_leaves_the_local_budget_whole(redis_server: RedisServer) -> None:
    """An attempt the store refuses is not sent: the replica's own token budget is
    given back its reservation, as when the local budget itself refuses."""
    pre = prefix()
    fake = FakeProvider().on(KEY, answering(usage={"prompt_tokens": 20, "completion_tokens": 30}))
    full = attrs.evolve(RATE, burst_tokens=1000.0)
    store = StoreConfig(url=Secret(redis_server.url), key_prefix=pre, timeout_ms=500.0)
    cfg = config(target("a", KEY, rate_limit=full), store=store, max_wait_ms=0.0)
    with trio.fail_after(10):
        async with open_switcher(cfg, transport=fake.transport()) as one:
            # Another replica has used the whole shared bucket (nothing published).
            seconds, micros = await trio.to_thread.run_sync(redis_server.command, "TIME")
            tat = int(seconds) * 1_000_000 + int(micros) + 100_000_000  # 1000 tokens
            await trio.to_thread.run_sync(
                redis_server.command, "SET", target_keys(pre, "a").tokens, str(tat)
            )
            with pytest.raises(AllTargetsFailed):
                await one.complete(REQUEST)
            (view,) = one.list_targets()
    assert fake.calls_to(KEY) == 0
    assert view.token_budget_available == pytest.approx(1000.0, abs=SLACK)
