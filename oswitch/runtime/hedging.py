"""Hedging before abandoning: one step of a request run as a race.

The dispatcher (``dispatcher.py``) runs a step as a race when its target is hedged
(``hedge_after_ms``, or a stream's learned first-token deadline): the first attempt
alone until its hedge delay, then beside it the best untried target, the first answer
winning and the others cancelled as lost hedges. The race starts and cancels
attempts; recording and settling their outcomes stay with the dispatcher.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Protocol

import attrs
import trio

from oswitch.core.ledger import Decision
from oswitch.runtime.events import EventHub
from oswitch.runtime.exchange import Answer
from oswitch.runtime.messages import AttemptOrder, CancelReason, OutcomeKind
from oswitch.runtime.picking import Picker
from oswitch.runtime.settings import Settings
from oswitch.runtime.target import TargetActor

# One attempt of a race: the target, the model it was sent for, and its answer.
Raced = tuple[TargetActor, str, Answer]


class SendAttempt(Protocol):
    """The dispatcher's attempt: send one to ``actor``, await its answer, and put its
    order in ``orders`` (so that the race can cancel it)."""

    def __call__(
        self, actor: TargetActor, model: str, *, hedge: bool, orders: list[AttemptOrder]
    ) -> Awaitable[Answer]: ...


class Changes(Protocol):
    """The dispatcher's change signal: told when an attempt ends, awaited for one."""

    def notify(self) -> None: ...

    async def wait_until(self, deadline: float) -> None: ...


def hedge_delay(
    settings: Settings, actor: TargetActor, model: str, *, stream: bool
) -> tuple[float, str] | None:
    """How long an attempt on ``actor`` runs alone before it is hedged, and why;
    None when it is never hedged. ``hedge_after_ms`` when set; else, for a stream,
    the target's learned first-token deadline for the model (an explicit
    ``first_token_timeout_ms`` is a hard limit instead: no hedge)."""
    if settings.hedge_after_s is not None:
        return settings.hedge_after_s, f"hedge_after_ms {settings.hedge_after_s:.3f}s"
    if not stream:
        return None
    point = actor.timings.hedge_point(actor.upstream_model(model))
    return None if point is None else (point.seconds, f"first_token {point.describe()}")


async def race(
    first: TargetActor,
    model: str,
    *,
    delay: tuple[float, str],
    later: Sequence[str],
    send: SendAttempt,
    picker: Picker,
    changed: Changes,
    events: EventHub,
    request_id: str,
    deadline: float,
) -> list[Raced]:
    """Hedge before abandoning, in the happy-eyeballs shape: start ``first``; once
    it has not answered (a stream: no first content) within its hedge delay, start
    the best untried target — a sibling serving ``model`` first, else one of a
    fallback model — and keep ``first`` running. The first answer wins and the
    others are cancelled (a lost hedge is not a failure). While ``first`` runs and
    no hedge does (none was eligible, or the hedge failed), a hedge is sought again
    at every change of the targets. Every attempt is bounded by its own limits."""
    results: list[Raced] = []
    orders: list[AttemptOrder] = []
    settled = trio.Event()
    running = 0
    hedges_running = 0
    first_running = True

    async def attempt(actor: TargetActor, attempt_model: str, hedge: bool) -> None:
        nonlocal running, hedges_running, first_running
        try:
            answer = await send(actor, attempt_model, hedge=hedge, orders=orders)
        finally:
            running -= 1
            if hedge:
                hedges_running -= 1
            else:
                first_running = False
        results.append((actor, attempt_model, answer))
        if answer.outcome.kind is OutcomeKind.OK or running == 0:
            settled.set()
        changed.notify()  # wakes the loop below (and any waiting request)

    hedge_after, why = delay
    async with trio.open_nursery() as nursery:
        running += 1
        nursery.start_soon(attempt, first, model, False)
        with trio.move_on_after(hedge_after):
            await settled.wait()
        while not settled.is_set():
            picked = None
            if first_running and hedges_running == 0:
                picked = picker.hedge_target(first, model, later, trio.current_time())
            if picked is not None:
                second, second_model = picked
                events.emit(
                    "hedge",
                    request_id=request_id,
                    target_id=second.target_id,
                    model=second_model,
                    decision=Decision.HEDGE.value,
                    note=f"{first.target_id} slow: {why}",
                )
                running += 1
                hedges_running += 1
                nursery.start_soon(attempt, second, second_model, True)
                await trio.lowlevel.checkpoint()
                continue
            if trio.current_time() >= deadline:
                await settled.wait()  # the attempts end at the deadline themselves
            else:
                await changed.wait_until(deadline)
        won = next((a.stream.order for _, _, a in results if a.stream is not None), None)
        for order in orders:
            if order.settled is None and order is not won:
                order.cancel(CancelReason.HEDGE_LOST)
    opened = [answer.stream for _, _, answer in results if answer.stream is not None]
    for stream in opened[1:]:
        # Both hedged streams began at once: the later one lost the race.
        await stream.aclose()
    return [
        (actor, m, lost_at(answer, why) if actor is first else answer)
        for actor, m, answer in results
    ]


def lost_at(answer: Answer, why: str) -> Answer:
    """The first attempt of a race, its trace saying the hedge point when it lost."""
    outcome = answer.outcome
    if outcome.cancel_reason is CancelReason.HEDGE_LOST and not outcome.deadline:
        return Answer(attrs.evolve(outcome, deadline=why), answer.stream)
    return answer
