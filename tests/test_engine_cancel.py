"""A request its caller cancels is seen: traced ``client_cancelled``, logged and
published as ``request_cancelled``, and the cancellation itself is never swallowed."""

from __future__ import annotations

import logging
from typing import Any

import attrs
import pytest
import trio

from oswitch import AllTargetsFailed
from oswitch.config import RateLimitConfig
from oswitch.runtime.messages import AttemptOrder
from oswitch.runtime.switcher import Switcher, open_switcher
from oswitch.testing import FakeProvider, hang, reply, server_error, stream
from support import breaker, chat, config, target

ANSWER = "one two three four five six seven eight nine ten"


def _cancel_events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        {k: getattr(r, k, None) for k in ("request_id", "outcome", "target_id", "attempt")}
        for r in caplog.records
        if r.name == "oswitch.audit" and r.getMessage() == "request_cancelled"
    ]


def _listen(switcher: Switcher) -> list[tuple[str, dict[str, Any]]]:
    heard: list[tuple[str, dict[str, Any]]] = []
    switcher.events.add_listener(
        lambda name, fields: heard.append((name, fields)) if name == "request_cancelled" else None
    )
    return heard


async def test_a_cancelled_complete_is_client_cancelled(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    """A caller's cancel scope firing during ``complete`` is traced, logged and published
    as client_cancelled, and the Cancelled reaches the caller's scope."""
    caplog.set_level(logging.INFO, logger="oswitch.audit")
    fake = FakeProvider().on("key-a", hang())
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        heard = _listen(switcher)
        with trio.move_on_after(2.0) as scope:
            await switcher.complete(chat(), request_id="r-gone")
        assert scope.cancelled_caught
        trace = switcher.inspect_request("r-gone")
        stats = switcher.statistics()
        await trio.lowlevel.checkpoint()
        assert switcher.list_targets()[0].in_flight == 0
    assert (trace.outcome, trace.ended_at) == ("client_cancelled", 2.0)
    assert (stats.cancelled, stats.failed) == (1, 0)
    assert _cancel_events(caplog) == [
        {"request_id": "r-gone", "outcome": "client_cancelled", "target_id": None, "attempt": 0}
    ]
    ((_, fields),) = heard
    assert (fields["outcome"], fields["model"], fields["latency_ms"], fields["stream"]) == (
        "client_cancelled",
        "gpt-4o",
        2000.0,
        False,
    )


@pytest.mark.parametrize("where", ["waiting-for-a-chunk", "in-the-callers-code", "at-enter"])
async def test_a_cancelled_stream_is_client_cancelled(
    autojump_clock: object, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    """A stream whose caller is cancelled, while waiting for a chunk, while busy in its own
    code inside the block, or before the first content, is client_cancelled, once."""
    caplog.set_level(logging.INFO, logger="oswitch.audit")
    latency = 10.0 if where == "at-enter" else 0.0
    fake = FakeProvider().on("key-a", stream(ANSWER, latency=latency, chunk_latency=1.0))
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        with trio.move_on_after(3.5) as scope:
            async with switcher.stream(chat(), request_id="r-gone") as chunks:
                async for _ in chunks:
                    if where == "in-the-callers-code":
                        await trio.sleep(100)
        assert scope.cancelled_caught
        trace = switcher.inspect_request("r-gone")
        view = switcher.list_targets()[0]
    assert trace.outcome == "client_cancelled"
    assert (view.in_flight, view.failures_by_class) == (0, {})
    assert (fake.open_streams, fake.in_flight) == (0, 0)
    (event,) = _cancel_events(caplog)
    assert (event["request_id"], event["outcome"]) == ("r-gone", "client_cancelled")
    if where == "at-enter":
        assert trace.attempts == ()
    else:
        assert [a.decision for a in trace.attempts] == ["cancelled"]
        assert event["target_id"] == "a"


async def test_a_request_made_in_a_cancelled_scope_takes_no_slot_and_sends_nothing(
    autojump_clock: object,
) -> None:
    """A caller whose scope is already cancelled when it calls ``complete`` (a deadline
    passed, a cancel landing just then) takes no admission slot, or gives it back, and
    sends nothing: once ``concurrency_limit`` such calls kept their slots, every later
    request would queue until its deadline."""
    fake = FakeProvider().on("key-a", reply("served"))
    limit = config(target("a")).concurrency_limit
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        for attempt in range(limit + 1):
            with trio.CancelScope() as scope:
                scope.cancel()
                await switcher.complete(chat(), request_id=f"r-early-{attempt}")
            assert scope.cancelled_caught
        assert switcher.statistics().admission.in_flight == 0
        assert fake.calls == []
        with trio.fail_after(1):
            answer = await switcher.complete(chat())
    assert answer["choices"][0]["message"]["content"] == "served"


async def test_a_request_cancelled_in_the_queue_is_client_cancelled(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    """A request cancelled while it waits for an admission slot is client_cancelled too."""
    caplog.set_level(logging.INFO, logger="oswitch.audit")
    fake = FakeProvider().on("key-a", hang())
    cfg = config(attrs.evolve(target("a")), concurrency_limit=1)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(switcher.complete, chat())
            await trio.sleep(1.0)
            with trio.move_on_after(1.0):
                await switcher.complete(chat(), request_id="r-queued")
            assert switcher.inspect_request("r-queued").outcome == "client_cancelled"
            nursery.cancel_scope.cancel()
    assert [e["request_id"] for e in _cancel_events(caplog)][:1] == ["r-queued"]


async def test_leaving_a_stream_early_is_logged_as_cancelled(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    """A caller that leaves the block on its own (break) is traced ``cancelled`` — not a
    client cancellation — and that is logged as request_cancelled as well."""
    caplog.set_level(logging.INFO, logger="oswitch.audit")
    fake = FakeProvider().on("key-a", stream(ANSWER))
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        async with switcher.stream(chat(), request_id="r-left") as chunks:
            async for _ in chunks:
                break
        trace = switcher.inspect_request("r-left")
    assert trace.outcome == "cancelled"
    assert _cancel_events(caplog) == [
        {"request_id": "r-left", "outcome": "cancelled", "target_id": "a", "attempt": 1}
    ]


async def test_an_exception_in_the_callers_block_is_not_a_client_cancel(
    autojump_clock: object,
) -> None:
    """An error raised by the caller's own code inside the block propagates unchanged and
    the request is ``cancelled`` (it left early), not charged as a failure."""
    fake = FakeProvider().on("key-a", stream(ANSWER))
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        with pytest.raises(KeyError):
            async with switcher.stream(chat(), request_id="r-bug") as chunks:
                async for _ in chunks:
                    raise KeyError("caller bug")
        trace = switcher.inspect_request("r-bug")
        stats = switcher.statistics()
    assert (trace.outcome, stats.failed, stats.cancelled) == ("cancelled", 0, 1)


async def test_a_caller_cancelled_as_its_stream_is_granted_gives_the_slot_back(
    autojump_clock: object,
) -> None:
    """A caller cancelled in the instant after a target granted its stream a slot (before
    it could open the stream) does not leave that slot, or a half-open probe, taken."""
    fake = FakeProvider().on("key-a", server_error(), stream(ANSWER))
    cfg = config(
        target("a"),
        circuit_breaker=breaker(failure_threshold=1, half_open_after_ms=1000),
        retry_budget=0,
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        with pytest.raises(AllTargetsFailed):
            await switcher.complete(chat())
        await trio.sleep(2.0)  # the breaker is due to half-open: the next attempt probes
        with trio.CancelScope() as scope:

            def cancel_at_grant(name: str, fields: dict[str, Any]) -> None:
                if name == "breaker" and fields["state"] == "HalfOpen":
                    scope.cancel()  # runs in the actor, as it grants the slot

            switcher.events.add_listener(cancel_at_grant)
            async with switcher.stream(chat(), request_id="r-granted"):
                raise AssertionError("never entered")
        assert scope.cancelled_caught
        view = switcher.list_targets()[0]
        assert (view.in_flight, view.breaker_state) == (0, "HalfOpen")
        assert switcher.inspect_request("r-granted").outcome == "client_cancelled"
        async with switcher.stream(chat()) as chunks:  # the probe slot is free again
            text = "".join([c["choices"][0]["delta"].get("content") or "" async for c in chunks])
    assert text == ANSWER


async def test_a_sidecar_client_that_disconnects_is_client_cancelled() -> None:
    """Over loopback, a sidecar client that disconnects mid-stream cancels its request the
    same way: the trace is client_cancelled and one request_cancelled event says so."""
    from functools import partial

    import httpx

    from oswitch.sidecar.serve import serve_sidecar

    fake = FakeProvider().on("key-a", stream(ANSWER, chunk_latency=0.2))
    shutdown = trio.Event()
    with trio.fail_after(10):
        async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
            heard: list[dict[str, Any]] = []
            cancelled = trio.Event()

            def on_event(name: str, fields: dict[str, Any]) -> None:
                if name == "request_cancelled":
                    heard.append(fields)
                    cancelled.set()

            switcher.events.add_listener(on_event)
            async with trio.open_nursery() as nursery:
                port = await nursery.start(
                    partial(serve_sidecar, switcher, port=0, shutdown_trigger=shutdown)
                )
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                async with (
                    httpx.AsyncClient() as client,
                    client.stream("POST", url, json=chat(stream=True)) as response,
                ):
                    request_id = response.headers["x-oswitch-request-id"]
                    async for line in response.aiter_lines():
                        if line.startswith("data: ") and "two" in line:
                            break
                await cancelled.wait()
                shutdown.set()
            trace = switcher.inspect_request(request_id)
    assert trace.outcome == "client_cancelled"
    (fields,) = heard
    assert (fields["request_id"], fields["outcome"], fields["stream"]) == (
        request_id,
        "client_cancelled",
        True,
    )


async def test_a_caller_deadline_teaches_the_response_deadline_a_censored_sample(
    autojump_clock: object,
) -> None:
    """A non-streamed attempt cut short by the caller's own trio deadline tells the
    learned response deadline that the reply takes longer than that, as an attempt
    whose own deadline fires does; the target's slot is free at once."""
    fake = FakeProvider().on("key-a", reply("late", latency=10.0))
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        with trio.move_on_after(2.0):
            await switcher.complete(chat())
        actor = switcher._router.actors["a"]
        learned = actor.timings.for_model("gpt-4o").response_headers
        stats = learned.statistics(now=trio.current_time())
        assert (actor.in_flight, stats.censored) == (0, 1)


class _UndecidedStore:
    """A fleet whose store never answers: admission waits inside the order's guard, as
    FleetLink.admit_order does, until the attempt is cancelled."""

    def __init__(self) -> None:
        self.tickets_settled: list[object] = []

    async def admit_order(self, member: object, order: AttemptOrder) -> None:
        with order.guard(order.deadline):
            await trio.sleep_forever()

    def settled(self, member: object, ticket: object, *args: object, **kwargs: object) -> None:
        self.tickets_settled.append(ticket)


async def test_a_caller_cancelled_during_fleet_admission_spends_no_tokens(
    autojump_clock: object,
) -> None:
    """A request whose caller gives up while the fleet's store is still deciding sent
    nothing upstream: its attempt is settled as refused, not as spent, so the tokens the
    target reserved for it come back."""
    fake = FakeProvider().on("key-a", reply("a"))
    limited = target("a", rate_limit=RateLimitConfig(tokens_per_minute=6000.0, burst_tokens=6000))
    async with open_switcher(config(limited), transport=fake.transport()) as switcher:
        actor = switcher._router.actors["a"]
        store = _UndecidedStore()
        actor._fleet = store  # type: ignore[assignment]
        before = actor._tokens.snapshot(trio.current_time()).configured_available
        with trio.move_on_after(1.0):
            await switcher.complete(chat(max_tokens=1000), request_id="r-gave-up")
        after = actor._tokens.snapshot(trio.current_time()).configured_available
        trace = switcher.inspect_request("r-gave-up")
    assert (fake.calls_to("key-a"), actor.in_flight) == (0, 0)
    assert after >= before
    assert trace.outcome == "client_cancelled"
    assert store.tickets_settled == [None]  # no ticket was ever granted
