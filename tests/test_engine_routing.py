"""Routing over time: budgets, cooldowns, breakers, tiers, spreading, fallbacks, deadlines."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import trio
import trio.lowlevel

from oswitch import AllTargetsFailed, ErrorClass
from oswitch.config import BackoffConfig
from oswitch.runtime.switcher import open_switcher
from oswitch.testing import FakeProvider, hang, rate_limited, reply, server_error
from support import breaker, chat, config, target


async def test_budgets_bound_the_attempts(autojump_clock: object) -> None:
    """Three failing keys get exactly 1 + failover_budget + retry_budget attempts."""
    fake = FakeProvider()
    for key in ("key-a", "key-b", "key-c"):
        fake.on(key, server_error())
    cfg = config(target("a"), target("b"), target("c"), retry_budget=3, failover_budget=2)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        with pytest.raises(AllTargetsFailed) as caught:
            await switcher.complete(chat())
        trace = switcher.inspect_request(caught.value.request_id or "")
    assert caught.value.attempts == 6
    assert caught.value.error_class is ErrorClass.TRANSIENT_SERVER_FAILURE
    assert len(fake.calls) == 6
    assert len({a.target_id for a in trace.attempts}) == 3
    assert trace.outcome == "AllTargetsFailed"
    assert "failovers 2/2" in str(caught.value)


async def test_zero_budgets_mean_one_attempt(autojump_clock: object) -> None:
    """With both budgets at zero a failure ends the request after its only attempt."""
    fake = FakeProvider().on("key-a", server_error()).on("key-b", reply())
    cfg = config(target("a", operator_priority=1), target("b"), retry_budget=0, failover_budget=0)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        with pytest.raises(AllTargetsFailed):
            await switcher.complete(chat())
    assert len(fake.calls) == 1


async def test_retry_after_cools_exactly_the_limited_key(autojump_clock: object) -> None:
    """A 429 with a 10 s delay keeps that key out for exactly 10 s while its siblings serve."""
    fake = FakeProvider()
    fake.on("key-a", rate_limited(10.0), reply("a"))
    fake.on("key-b", reply("b")).on("key-c", reply("c"))
    cfg = config(target("a", operator_priority=1), target("b"), target("c"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        await switcher.complete(chat())
        view = {v.target_id: v for v in switcher.list_targets()}["a"]
        assert view.condition == "CoolingDown"
        assert view.cooldown_remaining_s == 10.0
        served: list[tuple[float, str]] = []
        for _ in range(20):
            result = await switcher.complete(chat())
            served.append((trio.current_time(), result["oswitch"]["target_id"]))
            await trio.sleep(1.0)
    before = {tid for at, tid in served if at < 10.0}
    after = {tid for at, tid in served if at >= 10.0}
    assert before == {"b", "c"}
    assert after == {"a"}  # the primary tier takes its traffic back the moment it cools


async def test_breaker_opens_probes_and_closes_through_routing(autojump_clock: object) -> None:
    """Failures open a's breaker (traffic moves to b); after the cool-off one probe closes it."""
    fake = FakeProvider()
    fake.on("key-a", server_error(), server_error(), reply("a is back"))
    fake.on("key-b", reply("b"))
    cb = breaker(failure_threshold=2, half_open_after_ms=5000, success_threshold=1)
    cfg = config(target("a", operator_priority=1, circuit_breaker=cb), target("b"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        for _ in range(2):
            assert (await switcher.complete(chat()))["oswitch"]["target_id"] == "b"
        view = {v.target_id: v for v in switcher.list_targets()}["a"]
        assert (view.breaker_state, view.condition) == ("Open", "CircuitOpen")
        assert (await switcher.complete(chat()))["oswitch"]["target_id"] == "b"
        assert fake.calls_to("key-a") == 2
        await trio.sleep(5.0)
        view = {v.target_id: v for v in switcher.list_targets()}["a"]
        assert view.condition == "HalfOpen"
        result = await switcher.complete(chat())
        assert result["oswitch"]["target_id"] == "a"
        view = {v.target_id: v for v in switcher.list_targets()}["a"]
        assert (view.breaker_state, view.condition, view.breaker_trips) == ("Closed", "Healthy", 1)


async def test_tiers_primary_then_backup_then_primary_again(autojump_clock: object) -> None:
    """Traffic goes to the primary tier, to the backup while it is down, and back after."""
    fake = FakeProvider()
    fake.phases("key-primary", [(30.0, server_error()), (float("inf"), reply("primary"))])
    fake.on("key-backup", reply("backup"))
    cb = breaker(failure_threshold=1, half_open_after_ms=10_000, success_threshold=1)
    cfg = config(
        target("primary", operator_priority=1, circuit_breaker=cb),
        target("backup", operator_priority=0),
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        timeline: list[tuple[float, str]] = []
        for _ in range(60):
            result = await switcher.complete(chat())
            timeline.append((trio.current_time(), result["oswitch"]["target_id"]))
            await trio.sleep(1.0)
    assert timeline[0] == (0.0, "backup")  # the primary failed, the request failed over
    assert {tid for at, tid in timeline if 0 < at < 30} == {"backup"}
    assert {tid for at, tid in timeline if at >= 40} == {"primary"}


async def test_load_spreads_over_equal_keys(autojump_clock: object) -> None:
    """Equal keys serving one model share the traffic; none is hot-spotted."""
    fake = FakeProvider()
    for key in ("key-a", "key-b", "key-c"):
        fake.on(key, reply(latency=0.1))
    cfg = config(target("a"), target("b"), target("c"))
    async with open_switcher(cfg, transport=fake.transport(), rng=random.Random(7)) as switcher:
        counts: Counter[str] = Counter()
        for _ in range(300):
            counts[(await switcher.complete(chat()))["oswitch"]["target_id"]] += 1
    assert set(counts) == {"a", "b", "c"}
    assert all(70 <= n <= 130 for n in counts.values()), counts


async def test_concurrent_requests_spread_by_in_flight(autojump_clock: object) -> None:
    """Concurrent requests go to the least busy of equally good keys."""
    fake = FakeProvider()
    for key in ("key-a", "key-b", "key-c"):
        fake.on(key, reply(latency=1.0))
    cfg = config(target("a"), target("b"), target("c"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        async with trio.open_nursery() as nursery:
            for _ in range(9):
                nursery.start_soon(switcher.complete, chat())
    assert Counter(c.route for c in fake.calls) == {"key-a": 3, "key-b": 3, "key-c": 3}


async def test_silent_provider_is_abandoned_at_first_byte_limit(autojump_clock: object) -> None:
    """A provider that never answers costs exactly max_expected_latency_ms, once."""
    fake = FakeProvider().on("key-silent", hang()).on("key-b", reply("b"))
    cfg = config(target("silent", operator_priority=1), target("b"), max_expected_latency_ms=2000)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        result = await switcher.complete(chat())
        assert trio.current_time() == 2.0
        trace = switcher.inspect_request(result["oswitch"]["request_id"])
    assert result["oswitch"]["target_id"] == "b"
    assert trace.attempts[0].error_class is ErrorClass.TRANSPORT_FAILURE
    assert trace.attempts[0].decision == "failover"
    assert fake.cancelled == 1


async def test_silent_only_target_is_never_waited_on_twice(autojump_clock: object) -> None:
    """With only a silent target the request fails after one first-byte limit, not several."""
    fake = FakeProvider().on("key-silent", hang())
    cfg = config(target("silent"), max_expected_latency_ms=2000)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        with pytest.raises(AllTargetsFailed) as caught:
            await switcher.complete(chat())
        assert trio.current_time() == 2.0
    assert caught.value.error_class is ErrorClass.TRANSPORT_FAILURE
    assert len(fake.calls) == 1


async def test_request_deadline_bounds_everything(autojump_clock: object) -> None:
    """request_timeout_ms ends a request exactly at its deadline, with deadline_exceeded set."""
    fake = FakeProvider().on("key-a", hang())
    cfg = config(target("a"), request_timeout_ms=5000)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        with pytest.raises(AllTargetsFailed) as caught:
            await switcher.complete(chat())
        assert trio.current_time() == 5.0
    assert caught.value.error_class is ErrorClass.TRANSPORT_FAILURE


async def test_callers_tighter_deadline_wins_and_cancels_upstream(autojump_clock: object) -> None:
    """A caller's own trio deadline cancels the request and its upstream attempt."""
    fake = FakeProvider().on("key-a", hang())
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        with trio.move_on_after(1.5) as scope:
            await switcher.complete(chat(), request_id="r-cancel")
        assert scope.cancelled_caught
        await trio.lowlevel.checkpoint()
        assert fake.cancelled == 1
        assert switcher.inspect_request("r-cancel").outcome == "client_cancelled"
        assert switcher.list_targets()[0].in_flight == 0


async def test_backoff_before_retrying_the_only_target(autojump_clock: object) -> None:
    """With no sibling, a transient failure is retried on the same key after its backoff."""
    fake = FakeProvider().on("key-a", server_error(), reply("second time"))
    cfg = config(target("a"), backoff=BackoffConfig(jitter="none"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        result = await switcher.complete(chat())
        assert trio.current_time() == 1.0
    assert result["choices"][0]["message"]["content"] == "second time"


async def test_fallback_chain_never_revisits_a_model(autojump_clock: object) -> None:
    """A '*' chain that names the requested model again cannot loop."""
    fake = FakeProvider().on("key-a", server_error()).on("key-b", server_error())
    cfg = config(
        target("a"),
        target("b", model="gpt-4.1"),
        fallbacks={"*": ("gpt-4.1", "gpt-4o")},
        retry_budget=0,
        failover_budget=5,
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        with pytest.raises(AllTargetsFailed):
            await switcher.complete(chat())
    assert [c.route for c in fake.calls] == ["key-a", "key-b"]


async def test_passthrough_target_cools_per_model(autojump_clock: object) -> None:
    """A passthrough key rate-limited on one model still serves the others."""
    fake = FakeProvider().on("key-p", rate_limited(30.0), reply("ok"))
    cfg = config(target("p", model=None))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        with pytest.raises(AllTargetsFailed):
            await switcher.complete(chat(model="model-x"))
        result = await switcher.complete(chat(model="model-y"))
        view = switcher.list_targets()[0]
    assert result["model"] == "model-y"
    assert view.condition == "Healthy"
    assert view.model_cooldowns == {"model-x": 30.0}


async def test_busy_slots_are_waited_for_within_max_wait(autojump_clock: object) -> None:
    """With the only target's slots full, a request waits for a slot to free, then runs."""
    fake = FakeProvider().on("key-a", reply(latency=5.0))
    cfg = config(target("a", concurrency_limit=1))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        ends: list[float] = []

        async def call() -> None:
            await switcher.complete(chat())
            ends.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            nursery.start_soon(call)
    assert ends == [5.0, 10.0]


async def test_busy_slots_past_max_wait_fail_fast(autojump_clock: object) -> None:
    """A slot that does not free within max_wait_ms ends the request at max_wait_ms."""
    fake = FakeProvider().on("key-a", reply(latency=5.0))
    cfg = config(target("a", concurrency_limit=1), max_wait_ms=2000)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(switcher.complete, chat())
            await trio.sleep(0.5)
            with pytest.raises(AllTargetsFailed, match="became eligible in time"):
                await switcher.complete(chat())
            assert trio.current_time() == 2.5


async def test_large_tiers_are_sampled_but_never_miss_an_eligible_target(
    autojump_clock: object,
) -> None:
    """With many targets per tier, requests still go to the highest tier, spread widely,
    and a lone eligible target in a large tier of paused ones is still found."""
    fake = FakeProvider()
    primaries = [target(f"p{n}", operator_priority=1) for n in range(40)]
    backups = [target(f"b{n}") for n in range(10)]
    for t in (*primaries, *backups):
        fake.on(f"key-{t.target_id}", reply(t.target_id))
    cfg = config(*primaries, *backups)
    async with open_switcher(cfg, transport=fake.transport(), rng=random.Random(5)) as switcher:
        served = Counter()
        for _ in range(200):
            served[(await switcher.complete(chat()))["oswitch"]["target_id"]] += 1
        assert set(served) <= {t.target_id for t in primaries}
        assert len(served) >= 30
        for t in primaries[:-1]:
            await switcher.pause_target(t.target_id)
        for _ in range(5):
            result = await switcher.complete(chat())
            assert result["oswitch"]["target_id"] == primaries[-1].target_id


async def test_busy_sibling_is_waited_for_while_another_key_cools_long(
    autojump_clock: object,
) -> None:
    """With one key cooling past max_wait and its sibling's slots full, a request waits for
    the sibling's slot instead of giving up."""
    fake = FakeProvider().on("key-a", rate_limited(60.0)).on("key-b", reply("b", latency=3.0))
    cfg = config(target("a", operator_priority=1), target("b", concurrency_limit=1))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        ends: list[tuple[float, str]] = []

        async def call() -> None:
            result = await switcher.complete(chat())
            ends.append((trio.current_time(), result["oswitch"]["target_id"]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await trio.sleep(0.5)
            nursery.start_soon(call)
    assert ends == [(3.0, "b"), (6.0, "b")]


async def test_half_open_sibling_gets_its_probe_despite_a_poor_score(
    autojump_clock: object,
) -> None:
    """A half-open target is probed by the next request even though its siblings score
    better; a good probe closes it and it is back in rotation."""
    fake = FakeProvider()
    fake.on("key-a", server_error(), server_error(), reply("a"))
    fake.on("key-b", reply("b"))
    cb = breaker(failure_threshold=2, half_open_after_ms=5000, success_threshold=1)
    cfg = config(target("a", circuit_breaker=cb), target("b", circuit_breaker=cb), retry_budget=0)
    async with open_switcher(cfg, transport=fake.transport(), rng=random.Random(2)) as switcher:
        while fake.calls_to("key-a") < 2:
            await switcher.complete(chat())
        assert {v.target_id: v.breaker_state for v in switcher.list_targets()}["a"] == "Open"
        await trio.sleep(5.0)
        result = await switcher.complete(chat())
        view = {v.target_id: v for v in switcher.list_targets()}["a"]
    assert result["oswitch"]["target_id"] == "a"
    assert (view.breaker_state, view.health) == ("Closed", 1.0)


@pytest.mark.parametrize("half_life_ms", [10_000, 0], ids=["fades", "never"])
async def test_what_a_failure_taught_fades_every_health_half_life(
    autojump_clock: object, half_life_ms: int
) -> None:
    """A target's health, dented by a failure, heals halfway every health_half_life_ms of
    silence (and never with 0), so a recovered target is not starved for good."""
    fake = FakeProvider().on("key-a", server_error(500), reply())
    cfg = config(target("a"), health_half_life_ms=half_life_ms)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        await switcher.complete(chat())
        dented = switcher.list_targets()[0].health
        await trio.sleep(10.0)
        later = switcher.list_targets()[0].health
    assert dented < 1.0
    if half_life_ms:
        assert later == pytest.approx(dented + (1.0 - dented) / 2)
    else:
        assert later == dented


async def test_a_hedge_never_overspends_the_failover_budget(autojump_clock: object) -> None:
    """An attempt's cost is spent as it is sent: once a failover used the last of
    failover_budget, no hedge races it (before, both were charged: 2 moves of 1)."""
    fake = FakeProvider().on("key-a", server_error())
    fake.on("key-b", reply("slow", latency=10.0)).on("key-c", reply("fast", latency=1.0))
    cfg = config(
        target("a", operator_priority=2),
        target("b", operator_priority=1),
        target("c"),
        hedge_after_ms=2000,
        failover_budget=1,
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        result = await switcher.complete(chat())
        assert trio.current_time() == 10.0
        trace = switcher.inspect_request(result["oswitch"]["request_id"])
    assert result["choices"][0]["message"]["content"] == "slow"
    assert [(a.target_id, a.decision, a.hedge) for a in trace.attempts] == [
        ("a", "backoff", False),
        ("b", "return", False),
    ]
    assert fake.calls_to("key-c") == 0
