"""Admission, operator commands, reload, hedging, audit and clean shutdown."""

from __future__ import annotations

import json
import logging

import attrs
import httpx
import pytest
import trio
import trio.lowlevel

from oswitch import AllTargetsFailed, Overloaded, UnknownRequest, UnknownTarget
from oswitch.runtime.switcher import open_switcher
from oswitch.testing import FakeProvider, hang, rate_limited, reply, server_error
from support import chat, config, target


async def test_admission_rejects_at_once_when_queue_is_full(autojump_clock: object) -> None:
    """Past concurrency_limit + queue_limit, Overloaded is raised at once, never after a wait."""
    fake = FakeProvider().on("key-a", reply(latency=10.0))
    cfg = config(target("a"), concurrency_limit=1, queue_limit=1, backpressure_threshold=1)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        results: list[float] = []

        async def call() -> None:
            await switcher.complete(chat())
            results.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            nursery.start_soon(call)
            await trio.sleep(1.0)
            stats = switcher.statistics().admission
            assert (stats.in_flight, stats.queued, stats.backpressure) == (1, 1, True)
            with pytest.raises(Overloaded) as caught:
                await switcher.complete(chat(), request_id="shed")
            assert trio.current_time() == 1.0
            assert caught.value.request_id == "shed"
            assert caught.value.retry_after is not None and caught.value.retry_after > 0
        assert results == [10.0, 20.0]
        assert switcher.statistics().admission.rejected == 1


async def test_queue_wait_is_bounded_by_the_request_deadline(autojump_clock: object) -> None:
    """A request queued past its deadline ends with AllTargetsFailed, deadline exceeded."""
    fake = FakeProvider().on("key-a", reply(latency=10.0))
    cfg = config(target("a"), concurrency_limit=1, queue_limit=5, request_timeout_ms=60_000)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(switcher.complete, chat(text="holds the only slot for 10 s"))
            await trio.sleep(1.0)
            # Requests admitted from now on get 3 s; the one in flight keeps its 60 s.
            await switcher.reload_config(attrs.evolve(cfg, request_timeout_ms=3000))
            with pytest.raises(AllTargetsFailed, match="while queued") as caught:
                await switcher.complete(chat())
            assert trio.current_time() == 4.0
    assert caught.value.deadline_exceeded
    assert trio.current_time() == 10.0


async def test_disable_cancels_in_flight_attempt_and_fails_over(autojump_clock: object) -> None:
    """disable_target cancels the attempt in flight; the request fails over at no budget cost."""
    fake = FakeProvider().on("key-a", reply("slow a", latency=20.0)).on("key-b", reply("b"))
    cfg = config(target("a", operator_priority=1), target("b"), retry_budget=0, failover_budget=0)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        async with trio.open_nursery() as nursery:
            box: dict[str, object] = {}

            async def call() -> None:
                box["reply"] = await switcher.complete(chat())

            nursery.start_soon(call)
            await trio.sleep(1.0)
            await switcher.disable_target("a")
        result = box["reply"]
        assert isinstance(result, dict)
        assert result["oswitch"]["target_id"] == "b"
        assert trio.current_time() == 1.0
        trace = switcher.inspect_request(result["oswitch"]["request_id"])
        assert [(a.target_id, a.note) for a in trace.attempts] == [
            ("a", "cancelled: operator"),
            ("b", ""),
        ]
        views = {v.target_id: v for v in switcher.list_targets()}
        assert (views["a"].state, views["a"].in_flight) == ("Disabled", 0)
    assert fake.cancelled == 1


async def test_a_non_streamed_attempt_runs_in_the_callers_task(autojump_clock: object) -> None:
    """The target grants the attempt and the caller's own task makes the upstream call:
    no task is started per attempt, and the slot is free when ``complete`` returns."""
    fake = FakeProvider().on("key-a", reply("a", latency=1.0))
    callers: list[trio.lowlevel.Task] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        callers.append(trio.lowlevel.current_task())
        return await fake.handle(request)

    async with open_switcher(config(target("a")), transport=httpx.MockTransport(handler)) as s:
        me = trio.lowlevel.current_task()
        tasks_before = len(list(_all_tasks(me)))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(s.complete, chat())
            await trio.sleep(0.5)  # the attempt is in flight
            in_flight = s.list_targets()[0].in_flight
            tasks_during = len(list(_all_tasks(me)))
        assert (await s.complete(chat()))["oswitch"]["target_id"] == "a"
        assert s.list_targets()[0].in_flight == 0
    assert callers[1] is me
    assert callers[0] is not me and callers[0].parent_nursery is nursery
    # The request's own task is the only one added while its attempt is in flight.
    assert (in_flight, tasks_during - tasks_before) == (1, 1)


def _all_tasks(task: trio.lowlevel.Task) -> list[trio.lowlevel.Task]:
    """Every task of the run, found from the root down."""
    root = task
    while root.parent_nursery is not None:
        root = root.parent_nursery.parent_task
    found, pending = [], [root]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(t for n in current.child_nurseries for t in n.child_tasks)
    return found


async def test_pause_stops_new_routing_and_resume_restores(autojump_clock: object) -> None:
    """A paused target takes no new work; resume brings it back with breaker and cooldown reset."""
    fake = FakeProvider().on("key-a", rate_limited(300.0), reply("a")).on("key-b", reply("b"))
    cfg = config(target("a", operator_priority=1), target("b"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        await switcher.complete(chat())
        await switcher.pause_target("a")
        assert {v.target_id: v.state for v in switcher.list_targets()}["a"] == "Paused"
        assert (await switcher.complete(chat()))["oswitch"]["target_id"] == "b"
        await switcher.resume_target("a")
        view = {v.target_id: v for v in switcher.list_targets()}["a"]
        assert (view.state, view.condition, view.cooldown_until) == ("Active", "Healthy", None)
        assert (await switcher.complete(chat()))["oswitch"]["target_id"] == "a"


async def test_drain_lets_in_flight_finish_then_disables(autojump_clock: object) -> None:
    """A drained target finishes its in-flight attempt, takes nothing new, then is Disabled."""
    fake = FakeProvider().on("key-a", reply("a", latency=5.0)).on("key-b", reply("b"))
    cfg = config(target("a", operator_priority=1), target("b"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        async with trio.open_nursery() as nursery:
            box: dict[str, object] = {}

            async def call() -> None:
                box["reply"] = await switcher.complete(chat())

            nursery.start_soon(call)
            await trio.sleep(1.0)
            await switcher.drain_target("a")
            assert {v.target_id: v.state for v in switcher.list_targets()}["a"] == "Draining"
            assert (await switcher.complete(chat()))["oswitch"]["target_id"] == "b"
        result = box["reply"]
        assert isinstance(result, dict) and result["oswitch"]["target_id"] == "a"
        assert trio.current_time() == 5.0
        assert {v.target_id: v.state for v in switcher.list_targets()}["a"] == "Disabled"


async def test_unknown_ids_raise_lookup_errors(autojump_clock: object) -> None:
    """Operator calls on unknown ids raise UnknownTarget / UnknownRequest (LookupErrors)."""
    fake = FakeProvider().on("key-a", reply())
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        with pytest.raises(UnknownTarget, match="unknown target: 'nope'"):
            await switcher.pause_target("nope")
        with pytest.raises(LookupError):
            switcher.inspect_request("req_missing")
        with pytest.raises(UnknownRequest):
            switcher.inspect_request("req_missing")


async def test_trace_ring_buffer_is_bounded(autojump_clock: object) -> None:
    """Only the last trace_capacity traces are kept; older ones are evicted."""
    fake = FakeProvider().on("key-a", reply())
    cfg = config(target("a"), trace_capacity=3)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        for n in range(5):
            await switcher.complete(chat(), request_id=f"r{n}")
        assert switcher.statistics().traces_kept == 3
        with pytest.raises(UnknownRequest):
            switcher.inspect_request("r1")
        assert switcher.inspect_request("r4").outcome == "ok"


async def test_reload_keeps_state_starts_new_and_retires_removed(autojump_clock: object) -> None:
    """A reload keeps unchanged targets' state, starts new targets and retires removed ones."""
    fake = FakeProvider().on("key-a", rate_limited(100.0)).on("key-b", reply("b"))
    fake.on("key-c", reply("c")).on("key-d", reply("d"))
    first = config(target("a", operator_priority=2), target("b"), target("c"))
    async with open_switcher(first, transport=fake.transport()) as switcher:
        await switcher.complete(chat())
        second = attrs.evolve(
            first,
            targets=(
                target("a", operator_priority=2),
                target("b"),
                target("d", operator_priority=1),
            ),
            retry_budget=1,
        )
        await switcher.reload_config(second)
        views = {v.target_id: v for v in switcher.list_targets()}
        assert set(views) == {"a", "b", "d"}
        assert views["a"].condition == "CoolingDown"
        assert views["a"].cooldown_remaining_s == 100.0
        assert views["a"].failures_by_class == {"RateLimited": 1}
        assert (await switcher.complete(chat()))["oswitch"]["target_id"] == "d"
        assert switcher.config.retry_budget == 1


async def test_reload_with_invalid_config_changes_nothing(autojump_clock: object) -> None:
    """A bad config is refused with ConfigError naming the path; the old config stays."""
    from oswitch import ConfigError

    fake = FakeProvider().on("key-a", reply())
    first = config(target("a"))
    async with open_switcher(first, transport=fake.transport()) as switcher:
        bad = attrs.evolve(first, targets=(target("a"), target("a")))
        with pytest.raises(ConfigError) as caught:
            await switcher.reload_config(bad)
        assert any("$.targets[1].target_id" in path for path, _ in caught.value.problems)
        assert switcher.config is first
        assert len(switcher.list_targets()) == 1


async def test_hedge_starts_second_target_and_cancels_loser(autojump_clock: object) -> None:
    """With hedge_after_ms, a slow first target is raced by the next; the loser is cancelled."""
    fake = FakeProvider().on("key-a", reply("slow", latency=10.0))
    fake.on("key-b", reply("fast", latency=1.0))
    cfg = config(target("a", operator_priority=1), target("b"), hedge_after_ms=2000)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        result = await switcher.complete(chat())
        assert trio.current_time() == 3.0
        trace = switcher.inspect_request(result["oswitch"]["request_id"])
        views = {v.target_id: v for v in switcher.list_targets()}
    assert result["choices"][0]["message"]["content"] == "fast"
    assert sorted((a.target_id, a.decision) for a in trace.attempts) == [
        ("a", "hedge_lost"),
        ("b", "return"),
    ]
    assert views["a"].failures_by_class == {}  # losing a race is not a failure
    assert fake.cancelled == 1


async def test_hedge_never_starts_when_failover_budget_is_spent(autojump_clock: object) -> None:
    """Hedging counts against failover_budget: with none left, the first attempt runs alone."""
    fake = FakeProvider().on("key-a", reply("slow", latency=10.0)).on("key-b", reply("fast"))
    cfg = config(
        target("a", operator_priority=1), target("b"), hedge_after_ms=2000, failover_budget=0
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        result = await switcher.complete(chat())
    assert result["choices"][0]["message"]["content"] == "slow"
    assert fake.calls_to("key-b") == 0


async def test_audit_log_has_one_event_per_decision_and_no_key(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    """Every routing decision is one audit record with its fields; keys never appear."""
    fake = FakeProvider().on("sk-secret-A", server_error()).on("sk-secret-B", reply())
    cfg = config(
        target("a", key="sk-secret-A", operator_priority=1), target("b", key="sk-secret-B")
    )
    caplog.set_level(logging.INFO, logger="oswitch.audit")
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        await switcher.complete(chat(), request_id="r-audit")
    attempts = [r for r in caplog.records if r.getMessage() == "attempt"]
    assert [(r.target_id, r.error_class, r.decision) for r in attempts] == [  # type: ignore[attr-defined]
        ("a", "TransientServerFailure", "backoff"),
        ("b", None, "return"),
    ]
    assert all(r.request_id == "r-audit" for r in attempts)  # type: ignore[attr-defined]
    dumped = json.dumps([r.__dict__ for r in caplog.records], default=str)
    assert "sk-secret" not in dumped


async def test_given_transport_is_never_closed(autojump_clock: object) -> None:
    """oswitch leaves a transport it was given open for its owner."""
    fake = FakeProvider().on("key-a", reply("again"))
    transport = fake.transport()
    async with open_switcher(config(target("a")), transport=transport) as switcher:
        await switcher.complete(chat())
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.post(
            "https://api.fake.test/v1/chat/completions",
            headers={"authorization": "Bearer key-a"},
            json=chat(),
        )
    assert response.status_code == 200


async def test_a_thousand_concurrent_requests_all_end_and_leak_no_task(
    autojump_clock: object,
) -> None:
    """1,000 concurrent requests over flaky keys all end (reply or typed error), no task left."""
    fake = FakeProvider()
    fake.on("key-a", reply(latency=0.5), server_error(), reply(latency=0.2))
    fake.on("key-b", rate_limited(1.0), reply(latency=0.3))
    fake.on("key-c", hang(), reply(latency=0.1))
    cfg = config(
        target("a", concurrency_limit=50),
        target("b", concurrency_limit=50),
        target("c", concurrency_limit=50),
        concurrency_limit=100,
        queue_limit=1000,
        backpressure_threshold=500,
        max_expected_latency_ms=5000,
    )
    before = trio.lowlevel.current_statistics().tasks_living
    outcomes: list[str] = []
    async with open_switcher(cfg, transport=fake.transport()) as switcher:

        async def call(n: int) -> None:
            try:
                await switcher.complete(chat(), request_id=f"r{n}")
                outcomes.append("ok")
            except (AllTargetsFailed, Overloaded) as exc:
                outcomes.append(type(exc).__name__)

        async with trio.open_nursery() as nursery:
            for n in range(1000):
                nursery.start_soon(call, n)
        assert switcher.statistics().admission.in_flight == 0
        assert all(v.in_flight == 0 for v in switcher.list_targets())
    assert len(outcomes) == 1000
    assert outcomes.count("ok") >= 990
    assert trio.lowlevel.current_statistics().tasks_living == before


async def test_hedge_attempts_are_flagged_in_the_trace(autojump_clock: object) -> None:
    """The trace marks which attempt was the hedge."""
    fake = FakeProvider().on("key-a", reply("slow", latency=10.0))
    fake.on("key-b", reply("fast", latency=1.0))
    cfg = config(target("a", operator_priority=1), target("b"), hedge_after_ms=2000)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        result = await switcher.complete(chat())
        trace = switcher.inspect_request(result["oswitch"]["request_id"])
    assert sorted((a.target_id, a.hedge) for a in trace.attempts) == [("a", False), ("b", True)]


async def test_request_racing_a_retirement_is_answered(autojump_clock: object) -> None:
    """Orders sent to a target being retired by a reload are refused, never left hanging."""
    fake = FakeProvider().on("key-a", reply("a", latency=5.0)).on("key-b", reply("b"))
    first = config(target("a", operator_priority=1), target("b"))
    async with open_switcher(first, transport=fake.transport()) as switcher:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(switcher.complete, chat())
            await trio.sleep(1.0)
            await switcher.reload_config(attrs.evolve(first, targets=(target("b"),)))
            with trio.fail_after(1):
                result = await switcher.complete(chat())
        assert result["oswitch"]["target_id"] == "b"
        assert [v.target_id for v in switcher.list_targets()] == ["b"]
