"""The switcher's event feed: subscribers get events; slow ones are dropped, never waited on."""

from __future__ import annotations

import trio

from oswitch.runtime.events import EventHub
from oswitch.runtime.switcher import open_switcher
from oswitch.testing import FakeProvider, reply, server_error
from support import chat, config, target


async def test_subscriber_receives_routing_and_target_events(autojump_clock: object) -> None:
    """A subscriber to all topics sees each attempt's decision as it happens."""
    fake = FakeProvider().on("key-a", server_error()).on("key-b", reply())
    cfg = config(target("a", operator_priority=1), target("b"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        with switcher.events.subscribe() as events:
            await switcher.complete(chat(), request_id="r1")
            await switcher.pause_target("a")
            seen = []
            while True:
                try:
                    seen.append(events.receive_nowait())
                except trio.WouldBlock:
                    break
    assert [(e.name, e.fields.get("target_id"), e.fields.get("decision")) for e in seen] == [
        ("attempt", "a", "backoff"),
        ("attempt", "b", "return"),
        ("target_state", "a", None),
    ]
    assert seen[-1].fields["state"] == "Paused"


async def test_topic_filter_limits_what_a_subscriber_gets(autojump_clock: object) -> None:
    """A 'targets' subscriber gets state changes but no per-request routing events."""
    fake = FakeProvider().on("key-a", reply())
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        with switcher.events.subscribe(frozenset({"targets"})) as events:
            await switcher.complete(chat())
            await switcher.drain_target("a")
            names = []
            while True:
                try:
                    names.append(events.receive_nowait().name)
                except trio.WouldBlock:
                    break
    assert names == ["target_state"]


async def test_slow_subscriber_is_dropped_not_waited_on() -> None:
    """A subscriber that never reads is cut off once its buffer is full; emitting never blocks."""
    hub = EventHub()
    with hub.subscribe(buffer=2) as events:
        for n in range(5):
            hub.emit("attempt", request_id=f"r{n}")
        assert hub.subscriber_count == 0
        received = [events.receive_nowait().fields["request_id"] for _ in range(2)]
        assert received == ["r0", "r1"]
        try:
            events.receive_nowait()
        except trio.EndOfChannel:
            ended = True
        assert ended
