"""Two switchers (replicas) in one process sharing a real redis-server: shared
limits, cooldowns, the breaker's single probe, operator commands, and loud
degradation when the store fails. Real clock (the store is a real socket), every
test under ``trio.fail_after``; counts are asserted, never durations."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import attrs
import pytest
import trio
from redis_server import RedisServer, prefix

from oswitch import AllTargetsFailed, Switcher, open_switcher
from oswitch.config import RateLimitConfig, StoreConfig, SwitcherConfig
from oswitch.core.secret import Secret
from oswitch.runtime.messages import CommandKind
from oswitch.testing.provider import FakeProvider
from oswitch.testing.replies import rate_limited, reply, server_error
from support import breaker, chat, config, target

KEY = "key-a"


def _config(url: str, pre: str, **fields: object) -> SwitcherConfig:
    store = StoreConfig(url=Secret(url), key_prefix=pre, timeout_ms=200.0, expected_replicas=2)
    store = attrs.evolve(store, **fields.pop("store", {}))  # type: ignore[arg-type]
    rate = fields.pop("rate_limit", None)
    return config(
        target("a", KEY, rate_limit=rate, circuit_breaker=fields.pop("circuit_breaker", None)),
        store=store,
        **fields,
    )


@asynccontextmanager
async def replicas(
    cfg: SwitcherConfig, fake: FakeProvider, n: int = 2
) -> AsyncIterator[list[Switcher]]:
    async with AsyncExitStack() as stack:
        switchers = [
            await stack.enter_async_context(open_switcher(cfg, transport=fake.transport()))
            for _ in range(n)
        ]
        yield switchers


async def _until(condition: Callable[[], bool], limit: float = 3.0) -> None:
    with trio.fail_after(limit):
        while not condition():  # noqa: ASYNC110 (polls another replica's view)
            await trio.sleep(0.01)


def _sent(fake: FakeProvider) -> int:
    return fake.calls_to(KEY)


async def test_replicas_share_one_request_budget(redis_server: RedisServer) -> None:
    """Two replicas together send no more than burst + rate × elapsed to one key;
    each alone would have sent its own full budget."""
    fake = FakeProvider().on(KEY, reply())
    rate = RateLimitConfig(requests_per_minute=600, burst=2)  # 10/s
    cfg = _config(redis_server.url, prefix(), rate_limit=rate, max_wait_ms=0.0)
    with trio.fail_after(20):
        async with replicas(cfg, fake) as (one, two):
            start = trio.current_time()

            async def hammer(switcher: Switcher) -> None:
                while trio.current_time() - start < 0.8:
                    try:
                        await switcher.complete(chat())
                    except AllTargetsFailed:
                        await trio.sleep(0.005)

            async with trio.open_nursery() as nursery:
                for switcher in (one, two, one, two):
                    nursery.start_soon(hammer, switcher)
            elapsed = trio.current_time() - start
    assert 0 < _sent(fake) <= 2 + 10 * elapsed + 1


async def test_a_429_seen_by_one_replica_stops_the_other(redis_server: RedisServer) -> None:
    """After one replica's 429 with a 2 s delay, the other sends nothing to that key
    and reports the target cooling down with the shared deadline."""
    fake = FakeProvider().on(KEY, rate_limited(2.0), reply())
    cfg = _config(redis_server.url, prefix(), max_wait_ms=0.0, retry_budget=0)
    with trio.fail_after(10):
        async with replicas(cfg, fake) as (one, two):
            with pytest.raises(AllTargetsFailed):
                await one.complete(chat())
            assert _sent(fake) == 1
            await _until(lambda: two.list_targets()[0].condition == "CoolingDown")
            with pytest.raises(AllTargetsFailed) as failed:
                await two.complete(chat())
            assert _sent(fake) == 1
            assert failed.value.retry_after is not None and 1.0 < failed.value.retry_after <= 2.0
            view = two.list_targets()[0]
            assert view.fleet is not None and view.fleet["set_by"] == one.fleet.replica_id  # type: ignore[union-attr]


async def test_one_probe_per_half_open_interval_for_the_whole_fleet(
    redis_server: RedisServer,
) -> None:
    """A breaker one replica opened keeps the other from sending; when it half-opens,
    exactly one probe reaches the provider from the whole fleet."""
    fake = FakeProvider().on(KEY, server_error())
    cfg = _config(
        redis_server.url,
        prefix(),
        circuit_breaker=breaker(failure_threshold=2, half_open_after_ms=400.0),
        max_wait_ms=0.0,
        retry_budget=1,
        backoff=attrs.evolve(config().backoff, base_ms=1.0, max_ms=1.0),
    )
    with trio.fail_after(10):
        async with replicas(cfg, fake) as (one, two):
            for _ in range(2):
                with pytest.raises(AllTargetsFailed):
                    await one.complete(chat())
            opened_at = _sent(fake)
            assert opened_at == 2
            await _until(lambda: two.list_targets()[0].condition == "CircuitOpen")
            with pytest.raises(AllTargetsFailed):
                await two.complete(chat())
            assert _sent(fake) == opened_at
            await trio.sleep(0.45)  # the open interval is over: probes may go

            async def probe(switcher: Switcher) -> None:
                with pytest.raises(AllTargetsFailed):
                    await switcher.complete(chat())

            async with trio.open_nursery() as nursery:
                for switcher in (one, two, one, two):
                    nursery.start_soon(probe, switcher)
            assert _sent(fake) == opened_at + 1


async def test_a_successful_probe_closes_the_breaker_everywhere(
    redis_server: RedisServer,
) -> None:
    """The fleet's probe succeeding closes the shared breaker: the other replica sends again."""
    fake = FakeProvider().on(KEY, server_error(), server_error(), reply())
    cfg = _config(
        redis_server.url,
        prefix(),
        circuit_breaker=breaker(failure_threshold=2, half_open_after_ms=200.0),
        max_wait_ms=0.0,
        retry_budget=1,
        backoff=attrs.evolve(config().backoff, base_ms=1.0, max_ms=1.0),
    )
    with trio.fail_after(10):
        async with replicas(cfg, fake) as (one, two):
            for _ in range(2):
                with pytest.raises(AllTargetsFailed):
                    await one.complete(chat())
            await _until(lambda: two.list_targets()[0].condition == "CircuitOpen")
            await trio.sleep(0.25)
            await two.complete(chat())  # the probe
            await _until(lambda: one.fleet.shared_state("a").breaker == "closed")  # type: ignore[union-attr]
            await one.complete(chat())
            assert _sent(fake) == 4


async def test_operator_commands_apply_fleet_wide(redis_server: RedisServer) -> None:
    """Pausing a target on one replica pauses it on the other; resume resumes both;
    disable disables both, and the listing says which replica did it."""
    fake = FakeProvider().on(KEY, reply())
    cfg = _config(redis_server.url, prefix())
    with trio.fail_after(10):
        async with replicas(cfg, fake) as (one, two):
            await one.pause_target("a")
            await _until(lambda: two.list_targets()[0].state == "Paused")
            await two.resume_target("a")
            await _until(lambda: one.list_targets()[0].state == "Active")
            await one.complete(chat())
            await two.disable_target("a")
            await _until(lambda: one.list_targets()[0].state == "Disabled")
            fleet = one.list_targets()[0].fleet
            assert fleet is not None and fleet["op"] == "Disabled"
            assert fleet["set_by"] == two.fleet.replica_id  # type: ignore[union-attr]


async def test_a_dead_store_degrades_loudly_and_no_request_fails(own_redis: RedisServer) -> None:
    """With the store killed, requests still succeed under each replica's share of the
    limit, the store breaker trips, and an event says so; after a restart the link
    recovers by itself."""
    fake = FakeProvider().on(KEY, reply())
    rate = RateLimitConfig(requests_per_minute=6000, burst=20)
    cfg = _config(own_redis.url, prefix(), rate_limit=rate)
    with trio.fail_after(20):
        async with replicas(cfg, fake, n=1) as (one,):
            assert one.fleet is not None
            with one.events.subscribe() as events:
                await one.complete(chat())
                own_redis.kill()
                for _ in range(10):
                    await one.complete(chat())
                assert one.fleet.degraded
                names = []
                while True:
                    try:
                        names.append(events.receive_nowait().name)
                    except trio.WouldBlock:
                        break
                assert "store_degraded" in names
                assert one.fleet.statistics().degraded_decisions >= 7
                own_redis.start()
                await _until(lambda: not one.fleet.degraded, limit=5.0)  # type: ignore[union-attr]
                await one.complete(chat())
    assert _sent(fake) == 12


async def test_a_degraded_replica_enforces_its_share(own_redis: RedisServer) -> None:
    """While the store is down, ``local`` admits at most 1/expected_replicas of the
    limit per replica (burst 4 → 2 at once)."""
    fake = FakeProvider().on(KEY, reply())
    rate = RateLimitConfig(requests_per_minute=60, burst=4)
    cfg = _config(own_redis.url, prefix(), rate_limit=rate, max_wait_ms=0.0)
    own_redis.kill()
    with trio.fail_after(10):
        async with replicas(cfg, fake, n=1) as (one,):
            outcomes = []
            for _ in range(8):
                try:
                    await one.complete(chat())
                    outcomes.append("ok")
                except AllTargetsFailed:
                    outcomes.append("refused")
    assert outcomes.count("ok") <= 2 + 3  # the share, plus the calls before the trip
    assert one.fleet is not None and one.fleet.degraded


async def test_closed_refuses_every_attempt_while_the_store_is_down(
    own_redis: RedisServer,
) -> None:
    """``on_store_error = closed``: no attempt is sent while the store is unreachable."""
    fake = FakeProvider().on(KEY, reply())
    cfg = _config(own_redis.url, prefix(), store={"on_store_error": "closed"}, max_wait_ms=0.0)
    own_redis.kill()
    with trio.fail_after(10):
        async with replicas(cfg, fake, n=1) as (one,):
            for _ in range(5):
                with pytest.raises(AllTargetsFailed):
                    await one.complete(chat())
    assert _sent(fake) == 0


async def test_a_paused_store_costs_each_request_at_most_the_timeout_until_it_trips(
    own_redis: RedisServer,
) -> None:
    """SIGSTOP: admission gives up after timeout_ms, three failures trip the store
    breaker, and every request still succeeds; after SIGCONT the link recovers with
    no connection leaked."""
    fake = FakeProvider().on(KEY, reply())
    cfg = _config(own_redis.url, prefix())
    with trio.fail_after(20):
        async with replicas(cfg, fake, n=1) as (one,):
            assert one.fleet is not None
            await one.complete(chat())
            own_redis.pause()
            try:
                for _ in range(6):
                    await one.complete(chat())
                assert one.fleet.degraded
            finally:
                own_redis.resume()
            await _until(lambda: not one.fleet.degraded, limit=5.0)  # type: ignore[union-attr]
            listed = await trio.to_thread.run_sync(own_redis.command, "CLIENT", "LIST")
            # No connection left behind by the calls that timed out: the replica's
            # command connection and its subscription, and this one.
            assert isinstance(listed, str) and len(listed.splitlines()) <= 3
    assert _sent(fake) == 7


async def test_without_a_store_there_is_no_fleet() -> None:
    """No ``store``: no link, and listings carry no fleet state."""
    fake = FakeProvider().on(KEY, reply())
    async with open_switcher(config(target("a", KEY)), transport=fake.transport()) as switcher:
        assert switcher.fleet is None
        assert switcher.list_targets()[0].fleet is None
        assert not math.isnan(switcher.list_targets()[0].health)


async def test_an_unset_url_variable_starts_degraded_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``url_env`` unset: the replica starts, degraded from the start, the event names
    the variable, and requests are served under the local share."""
    monkeypatch.delenv("OSWITCH_TEST_STORE_URL", raising=False)
    fake = FakeProvider().on(KEY, reply())
    store = StoreConfig(url_env="OSWITCH_TEST_STORE_URL")
    with trio.fail_after(10):
        async with open_switcher(
            config(target("a", KEY), store=store), transport=fake.transport()
        ) as one:
            assert one.fleet is not None and one.fleet.degraded
            stats = one.fleet.statistics()
            assert stats.store.last_error == "$OSWITCH_TEST_STORE_URL is not set"
            await one.complete(chat())
            view = one.list_targets()[0].fleet
            assert view is not None and view["store_degraded"] is True
            from oswitch.metrics import SwitcherMetrics

            rendered = SwitcherMetrics(one).render().decode()
            assert "oswitch_store_degraded 1.0" in rendered
    assert _sent(fake) == 1


def test_list_targets_shows_the_fleet_column_only_with_a_store() -> None:
    """ctl's table gains FLEET (shared breaker, state, who changed it) with a store."""
    from oswitch.control.ctl import format_targets

    base = {
        "target_id": "a",
        "state": "Paused",
        "condition": "Healthy",
        "breaker_state": "Closed",
        "health": 1.0,
        "in_flight": 0,
        "concurrency_limit": 10,
        "cooldown_remaining_s": None,
    }
    assert "FLEET" not in format_targets([base])[0]
    fleet = {
        "breaker": "open",
        "op": "Paused",
        "blocked": "",
        "set_by": "h:1:ab",
        "change": "op",
        "store_degraded": False,
    }
    lines = format_targets([dict(base, fleet=fleet)])
    assert lines[0].rstrip().endswith("FLEET")
    assert lines[-1].rstrip().endswith("open, Paused, op by h:1:ab")


async def test_token_reservations_are_settled_against_the_replys_usage(
    redis_server: RedisServer,
) -> None:
    """Each attempt reserves its estimate from the shared token bucket and the reply's
    usage refunds the rest: requests that together reserve twice the bucket all pass
    one after another, while two reserved at once leave no room for a third."""
    fake = FakeProvider().on(KEY, reply())
    rate = RateLimitConfig(
        requests_per_minute=6000, burst=50, tokens_per_minute=600.0, burst_tokens=1000.0
    )
    cfg = _config(redis_server.url, prefix(), rate_limit=rate, max_wait_ms=0.0)
    big = chat(max_tokens=400)  # about 410 tokens reserved, about 10 used
    with trio.fail_after(10):
        async with replicas(cfg, fake) as (one, two):
            for index, switcher in enumerate((one, two, one, two, one)):
                await switcher.complete(big)
                link = switcher.fleet
                assert link is not None
                await _until(lambda link=link, index=index: link.statistics().writes > index // 2)
            held = [one.fleet, two.fleet]
            assert all(link is not None and link.statistics().denied == 0 for link in held)
    fresh = FakeProvider().on(KEY, reply(latency=0.5))
    cfg = _config(redis_server.url, prefix(), rate_limit=rate, max_wait_ms=0.0)
    with trio.fail_after(10):
        async with replicas(cfg, fresh) as (one, two):
            outcomes: list[str] = []

            async def send(switcher: Switcher) -> None:
                try:
                    await switcher.complete(big)
                    outcomes.append("ok")
                except AllTargetsFailed:
                    outcomes.append("refused")

            async with trio.open_nursery() as nursery:
                for switcher in (one, two, one):
                    nursery.start_soon(send, switcher)
    assert sorted(outcomes) == ["ok", "ok", "refused"]


async def test_a_streamed_attempt_is_admitted_by_the_store_too(redis_server: RedisServer) -> None:
    """A stream asks the store before it is sent: with the shared bucket emptied behind
    the replica's back (nothing published), the stream is refused and nothing is sent."""
    from oswitch.fleet.keys import target_keys
    from oswitch.testing.streams import stream

    fake = FakeProvider().on(KEY, stream("one two three"))
    pre = prefix()
    rate = RateLimitConfig(requests_per_minute=6000, burst=1)  # 100/s
    cfg = _config(redis_server.url, pre, rate_limit=rate, max_wait_ms=0.0)
    with trio.fail_after(10):
        async with replicas(cfg, fake, n=1) as (one,):
            async with one.stream(chat()) as chunks:
                async for _ in chunks:
                    pass
            seconds, micros = await trio.to_thread.run_sync(redis_server.command, "TIME")
            tat = int(seconds) * 1_000_000 + int(micros) + 30_000_000
            await trio.to_thread.run_sync(
                redis_server.command, "SET", target_keys(pre, "a").requests, str(tat)
            )
            await trio.sleep(0.05)  # the replica's own bucket refills (10 ms)
            with pytest.raises(AllTargetsFailed):
                async with one.stream(chat()) as chunks:
                    async for _ in chunks:
                        pass
    assert _sent(fake) == 1


async def test_cooldowns_seen_while_degraded_are_republished_on_reconnect(
    own_redis: RedisServer,
) -> None:
    """A 429 met while the store is down cools the key here; once the store is back,
    the replica re-publishes it, so the store holds that cooldown for the fleet."""
    from oswitch.fleet.keys import target_keys
    from oswitch.fleet.scripts import parse_state

    fake = FakeProvider().on(KEY, rate_limited(30.0))
    pre = prefix()
    cfg = _config(own_redis.url, pre, max_wait_ms=0.0, retry_budget=0)
    with trio.fail_after(15):
        async with replicas(cfg, fake, n=1) as (one,):
            assert one.fleet is not None
            own_redis.kill()
            for _ in range(3):
                await one.fleet.operator("a", CommandKind.PAUSE)  # trips the store breaker
            assert one.fleet.degraded
            with pytest.raises(AllTargetsFailed):
                await one.complete(chat())
            own_redis.start()
            await _until(lambda: not one.fleet.degraded, limit=5.0)  # type: ignore[union-attr]
            key = target_keys(pre, "a").state

            def cooled() -> bool:
                fields = own_redis.command("HGETALL", key)
                return isinstance(fields, list) and parse_state(fields).cool_until_us > 0

            await _until(cooled, limit=5.0)


async def test_a_lost_subscription_converges_by_the_resync(redis_server: RedisServer) -> None:
    """With its pub/sub connection killed, a replica still learns of another's
    cooldown within about one resync interval (and resubscribes)."""
    fake = FakeProvider().on(KEY, rate_limited(5.0), reply())
    cfg = _config(redis_server.url, prefix(), max_wait_ms=0.0, retry_budget=0)
    with trio.fail_after(15):
        async with replicas(cfg, fake) as (one, two):
            await trio.sleep(0.2)  # both subscribed
            await trio.to_thread.run_sync(redis_server.command, "CLIENT", "KILL", "TYPE", "pubsub")
            with pytest.raises(AllTargetsFailed):
                await one.complete(chat())
            await _until(lambda: two.list_targets()[0].condition == "CoolingDown", limit=3.0)
