"""Operator-facing state stays true and bounded: the key list used for scrubbing holds
each key once, a draining target stays listed until it is done, and what reaches a
target's inbox is applied in the order it was sent."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from oswitch import classify
from oswitch.runtime.messages import (
    AttemptOrder,
    AttemptOutcome,
    Command,
    CommandKind,
    OutcomeKind,
)
from oswitch.runtime.switcher import open_switcher
from oswitch.runtime.target import TURN_MESSAGES, TargetActor, TargetState
from oswitch.testing import FakeProvider, invalid_key, reply, stream
from support import chat, config, target


async def test_401_cycles_with_an_unchanged_key_do_not_grow_the_secrets(
    autojump_clock: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every 401 re-reads the key; re-reading the same key (and resuming the target) many
    times leaves one entry per distinct key in the list used to scrub messages."""
    monkeypatch.setenv("FAKE_KEY_A", "same-key-a")
    fake = FakeProvider().on("same-key-a", invalid_key()).on("key-b", reply())
    cfg = config(
        target("a", api_key=None, api_key_env="FAKE_KEY_A", operator_priority=1), target("b")
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        for _ in range(20):
            await switcher.complete(chat())
            assert {v.target_id: v.condition for v in switcher.list_targets()}["a"] == (
                "ReauthRequired"
            )
            await switcher.resume_target("a")
        assert fake.calls_to("same-key-a") == 20
        assert sorted(s.reveal() for s in switcher._secrets) == ["key-b", "same-key-a"]
        monkeypatch.setenv("FAKE_KEY_A", "rotated-key-a")
        fake.on("rotated-key-a", reply("fresh"))
        result = await switcher.complete(chat())  # 401, the new key read, sent again at once
        assert result["oswitch"]["target_id"] == "a"
        assert len(switcher._secrets) == 3  # a new key is added (the old may still be quoted)


async def test_a_target_removed_by_reload_is_listed_draining_until_idle(
    autojump_clock: object,
) -> None:
    """A target a reload removes while it has an attempt in flight stays in
    ``list_targets`` as Draining, then leaves the listing once that attempt ended."""
    fake = FakeProvider().on("key-a", stream("slow answer here", chunk_latency=1.0))
    fake.on("key-b", reply("b"))
    first = config(target("a", operator_priority=1), target("b"))
    async with open_switcher(first, transport=fake.transport()) as switcher:
        async with switcher.stream(chat()) as chunks:
            await chunks.__anext__()
            await switcher.reload_config(attrs.evolve(first, targets=(target("b"),)))
            views = {v.target_id: v for v in switcher.list_targets()}
            assert set(views) == {"a", "b"}
            assert (views["a"].state, views["a"].in_flight) == ("Draining", 1)
            assert (await switcher.complete(chat()))["oswitch"]["target_id"] == "b"
            text = "".join([c["choices"][0]["delta"].get("content") or "" async for c in chunks])
        assert [v.target_id for v in switcher.list_targets()] == ["b"]
    assert text.endswith("answer here")


async def test_an_operator_drain_lists_draining_then_disabled(autojump_clock: object) -> None:
    """drain_target with a stream in flight: listed Draining with it in flight, then
    Disabled (still listed) once it ended."""
    fake = FakeProvider().on("key-a", stream("slow answer here", chunk_latency=1.0))
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        async with switcher.stream(chat()) as chunks:
            await chunks.__anext__()
            await switcher.drain_target("a")
            (view,) = switcher.list_targets()
            assert (view.state, view.in_flight) == ("Draining", 1)
            [c async for c in chunks]
        (view,) = switcher.list_targets()
        assert (view.state, view.in_flight) == ("Disabled", 0)


async def test_a_listing_counts_orders_waiting_in_the_inbox_as_routing_does() -> None:
    """in_flight is one count: an order sent to a target but not yet picked up is in the
    listing's in_flight exactly as in the load routing sees."""
    fake = FakeProvider().on("key-a", reply())
    actor = TargetActor(target("a"), config(target("a")), transport=fake.transport(), secrets=set())
    order = AttemptOrder(request=chat(), model="gpt-4o", stream=False, deadline=1e9, request_id="r")
    assert await actor.send(order)  # the actor is not running: the order waits in its inbox
    now = trio.current_time()
    assert (actor.view(now).in_flight, actor.in_flight, actor.candidate(now).in_flight) == (1, 1, 1)


async def test_queued_orders_and_commands_are_applied_in_the_order_sent() -> None:
    """The actor takes several queued messages per turn, still in order: an order sent
    before a pause is granted, the orders sent after it are refused, and orders past
    one turn's share are answered in the next."""
    fake = FakeProvider().on("key-a", reply())
    actor = TargetActor(target("a"), config(target("a")), transport=fake.transport(), secrets=set())

    def order(n: int) -> AttemptOrder:
        return AttemptOrder(
            request=chat(), model="gpt-4o", stream=False, deadline=1e9, request_id=f"r{n}"
        )

    granted = [order(n) for n in range(TURN_MESSAGES + 2)]
    pause = Command(CommandKind.PAUSE)
    refused = [order(n) for n in range(100, 102)]
    for message in (*granted, pause, *refused):
        assert await actor.send(message)  # not running yet: all wait in the inbox
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await pause.done.wait()
        await trio.testing.wait_all_tasks_blocked()  # the inbox emptied
        kinds = [o.reply.peek() for o in (*granted, *refused)]
        assert [k.kind if k else None for k in kinds] == [OutcomeKind.GRANTED] * len(granted) + [
            OutcomeKind.REFUSED
        ] * len(refused)
        assert actor.state is TargetState.PAUSED
        for o in granted:
            actor.end_attempt(o, None, started=0.0)
        nursery.cancel_scope.cancel()


async def test_an_attempt_settled_after_its_actor_stopped_starts_nothing() -> None:
    """A caller's task may settle its attempt after the target's actor has stopped (the
    switcher closed meanwhile): a 401 then leaves the target ReauthRequired, and starts
    no credential watcher in the actor's closed nursery."""
    fake = FakeProvider().on("key-a", reply())
    actor = TargetActor(target("a"), config(target("a")), transport=fake.transport(), secrets=set())
    order = AttemptOrder(request=chat(), model="gpt-4o", stream=False, deadline=1e9, request_id="r")
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        assert await actor.send(order)
        granted = await order.reply.wait()
        nursery.cancel_scope.cancel()
    assert granted.kind is OutcomeKind.GRANTED and actor.stopped
    bad_key = classify(401, {}, b'{"error": {"message": "bad key", "code": "invalid_api_key"}}')
    failed = AttemptOutcome(
        kind=OutcomeKind.FAILED,
        target_id="a",
        served_model="gpt-4o",
        started_at=0.0,
        classification=bad_key,
    )
    settled = actor.end_attempt(order, failed, started=0.0)
    assert settled.kind is OutcomeKind.FAILED
    view = actor.view(trio.current_time())
    assert (view.condition, view.in_flight) == ("ReauthRequired", 0)
