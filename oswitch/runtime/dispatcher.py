"""The dispatcher: drives one request across targets until it ends.

Per request: pick the best eligible target (``picking.py``) → send it an attempt →
await its outcome → ask the request's ledger (``core/ledger.py``: budgets,
exclusions, backoff, the decision after each outcome) what comes next → fail over,
retry after backoff, wait for a cooldown, hedge, walk the model's fallbacks, or end —
within the budgets and the request's deadline. Every way out is a reply or one typed
error. The waiting happens here, the racing of a hedged step in ``hedging.py``; the
bookkeeping is the ledger's.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import trio

from oswitch.core.clip import clip
from oswitch.core.error_class import ErrorClass
from oswitch.core.ledger import (
    Decision,
    Ended,
    Failure,
    Ledger,
    deadline_message,
    decide,
    give_up,
    model_chain,
)
from oswitch.core.resume import continuation_request
from oswitch.core.tokens import TokenEstimate, estimate_request
from oswitch.core.trace import TraceBuilder
from oswitch.errors import AllTargetsFailed, RequestFailed
from oswitch.runtime.events import EventHub
from oswitch.runtime.exchange import Answer
from oswitch.runtime.hedging import Raced, hedge_delay, race
from oswitch.runtime.messages import AttemptOrder, AttemptOutcome, CancelReason, OutcomeKind
from oswitch.runtime.picking import Picker
from oswitch.runtime.recording import AttemptLog
from oswitch.runtime.router import RequestNeeds, Router
from oswitch.runtime.settings import Settings
from oswitch.runtime.target import TargetActor


class ChangeSignal:
    """Wakes every waiter when any target's eligibility may have changed."""

    def __init__(self) -> None:
        self._event = trio.Event()
        # Tasks in wait_until: with none, a change wakes nobody and needs no new event
        # (every attempt's end is one).
        self._waiting = 0

    def notify(self) -> None:
        if not self._waiting:
            return
        event, self._event = self._event, trio.Event()
        event.set()

    async def wait_until(self, deadline: float) -> None:
        """Return at the next change, or at ``deadline`` (trio time), whichever is first."""
        self._waiting += 1
        try:
            with trio.move_on_at(deadline):
                await self._event.wait()
        finally:
            self._waiting -= 1


class RequestRun:
    """One request's journey. It drives the request's :class:`Ledger` (budgets,
    exclusions, the decision after each outcome), asks its :class:`Picker` which target
    is next and writes each attempt to its :class:`AttemptLog`; ``ChatStream`` uses
    :meth:`resume`, :meth:`stream_interrupted` and ``log``."""

    def __init__(
        self,
        *,
        request: Mapping[str, Any],
        request_id: str,
        model: str,
        needs: RequestNeeds,
        deadline: float,
        settings: Settings,
        router: Router,
        changed: ChangeSignal,
        trace: TraceBuilder,
        rng: random.Random,
        events: EventHub,
        stream: bool = False,
        own_deadline: float | None = None,
    ) -> None:
        self.request = request
        self.stream = stream
        self.request_id = request_id
        self.model = model
        self.needs = needs
        self.deadline = deadline
        # request_timeout_ms alone: what the target enforces on a stream whose caller
        # is away. A caller's own tighter deadline cancels the caller itself.
        self.own_deadline = deadline if own_deadline is None else own_deadline
        self.settings = settings
        self.router = router
        self.changed = changed
        self.trace = trace
        self.rng = rng
        self.events = events
        self.ledger = Ledger(
            retry_budget=settings.retry_budget, failover_budget=settings.failover_budget
        )
        self.log = AttemptLog(request_id=request_id, trace=trace, events=events, ledger=self.ledger)
        # The request's tokens, reserved on each target it is sent to (core/tokens.py).
        self.estimate: TokenEstimate = estimate_request(request)
        # Set when a model's targets were left out only because the request is larger
        # than their whole per-minute token limits.
        self.too_large = False
        self.picker = Picker(
            router=router,
            needs=needs,
            ledger=self.ledger,
            weights=settings.weights,
            max_expected_latency_s=settings.max_expected_latency_s,
            rng=rng,
            estimate=self.estimate,
        )

    # ---- the request loop --------------------------------------------------------

    async def run(self) -> Answer:
        """Return the successful answer (a streamed one beside its open stream), or
        raise AllTargetsFailed / RequestFailed."""
        chain = model_chain(self.model, self.settings.fallbacks)
        answer = await self._walk(chain)
        if answer is None and self.ledger.stop_avoiding():
            # Never twice while another candidate remains: none does any more.
            answer = await self._walk(chain)
        if answer is not None:
            return answer
        raise self._give_up(chain)

    async def _walk(self, chain: Sequence[str]) -> Answer | None:
        """Try the models of ``chain`` in turn; None when all are spent."""
        for hop, model in enumerate(chain):
            if hop > 0:
                # The hop itself is free: the first attempt on the fallback model is
                # a move to another target, and that is what failover_budget counts.
                if not self.ledger.may_fail_over():
                    break
                self.events.emit(
                    "fallback",
                    request_id=self.request_id,
                    model=model,
                    decision=Decision.FALLBACK.value,
                    note=f"from {chain[hop - 1]}",
                )
            outcome = await self._run_model(model)
            if outcome is not None:
                return outcome
        await trio.lowlevel.checkpoint()  # rare: the chain is spent
        return None

    async def _run_model(self, model: str) -> Answer | None:
        """Try ``model``'s targets; None when they are exhausted (walk the fallbacks)."""
        waiting_since: float | None = None
        while True:
            now = trio.current_time()
            if now >= self.deadline:
                raise self._deadline_error()
            pool = self.picker.pool(model)
            actor = self.picker.pick(pool, model, now)
            if actor is None:
                live = [a for a in pool.actors if self.picker.usable(a, model, now)]
                if not live:
                    if any(self.picker.too_large(a, now) for a in pool.actors):
                        self.too_large = True  # never sent: no key could take it whole
                    await trio.lowlevel.checkpoint()  # rare: the model's targets are spent
                    return None
                if waiting_since is None:
                    waiting_since = now
                earliest = min(self.picker.ready_at(a, model, now) for a in live)
                wait_until = min(waiting_since + self.settings.max_wait_s, self.deadline)
                busy = any(a.busy(model, now) for a in live)
                if now >= wait_until or (earliest > wait_until and not busy):
                    await trio.lowlevel.checkpoint()
                    return None  # nothing frees up in time: the fallbacks, or give up
                if earliest <= now:
                    await trio.lowlevel.checkpoint()
                else:
                    # Wake when a target's clock says so, or when any attempt ends (a
                    # busy target's slot frees up), whichever comes first.
                    await self.changed.wait_until(min(earliest, wait_until))
                continue
            delay: tuple[float, str] | None = None
            later: Sequence[str] = ()
            if self.stream or self.settings.hedge_after_s is not None:
                later = self._later(model)
                if self.picker.could_hedge(actor, model, later):
                    delay = hedge_delay(self.settings, actor, model, stream=self.stream)
            if delay is None:
                # No hedge can ever start (none set, or no other target to race): the
                # attempt alone, without the race's nursery, task and timer.
                results = [(actor, model, await self._attempt(actor, model))]
            else:
                results = await self._race(actor, model, delay, later)
            winner = self._settle_all(results)
            if winner is not None:
                return winner
            if all(a.outcome.kind is OutcomeKind.REFUSED for _, _, a in results):
                # Taken by another request in the meantime: keep waiting, same max_wait.
                await trio.lowlevel.checkpoint()
            else:
                waiting_since = None

    def _settle_all(self, results: list[Raced]) -> Answer | None:
        """Record and settle one step's attempts (several when hedged); the winner's
        answer, or None (a lost hedge's stream was closed by :meth:`_race`)."""
        if len(results) == 1 and results[0][2].outcome.kind is OutcomeKind.OK:
            actor, _, answer = results[0]  # the usual step: one attempt, and it answered
            if not self.stream:
                self.log.outcome(actor.target_id, answer.outcome, Decision.RETURN)
            return answer
        winner = None
        for attempt_actor, _, answer in results:
            if answer.outcome.kind is OutcomeKind.OK and winner is None:
                winner = (attempt_actor, answer)
        for attempt_actor, model, (outcome, stream) in results:
            if outcome.kind is OutcomeKind.REFUSED:
                continue
            if winner is not None and attempt_actor is winner[0]:
                if not self.stream:
                    self.log.outcome(attempt_actor.target_id, outcome, Decision.RETURN)
            elif stream is not None:
                lost = attempt_actor.end_attempt(
                    stream.order,
                    attrs.evolve(
                        outcome, kind=OutcomeKind.CANCELLED, cancel_reason=CancelReason.HEDGE_LOST
                    ),
                    started=outcome.started_at,
                )
                self.log.outcome(attempt_actor.target_id, lost, Decision.HEDGE_LOST)
            elif outcome.cancel_reason is CancelReason.HEDGE_LOST:
                self.log.outcome(attempt_actor.target_id, outcome, Decision.HEDGE_LOST)
            elif outcome.kind is not OutcomeKind.OK:
                self._settle(attempt_actor, model, outcome, final=winner is None)
        return None if winner is None else winner[1]

    def _later(self, model: str) -> Sequence[str]:
        """The fallback models after ``model`` in the request's chain."""
        chain = model_chain(self.model, self.settings.fallbacks)
        return chain[chain.index(model) + 1 :] if model in chain else []

    async def _race(
        self, first: TargetActor, model: str, delay: tuple[float, str], later: Sequence[str]
    ) -> list[Raced]:
        """The hedged step of ``_run_model`` (``runtime/hedging.py``): ``first`` and,
        once it is ``delay`` late, the best untried target; first answer wins."""
        return await race(
            first,
            model,
            delay=delay,
            later=later,
            send=self._attempt,
            picker=self.picker,
            changed=self.changed,
            events=self.events,
            request_id=self.request_id,
            deadline=self.deadline,
        )

    # ---- stream resume -----------------------------------------------------------

    def request_for(self, actor: TargetActor) -> Mapping[str, Any]:
        """The request as sent to ``actor``: a continuation while resuming a stream."""
        text = self.ledger.resume_text
        if text is None:
            return self.request
        prefill = self.ledger.prefills(actor.target_id, _can_prefill(actor))
        return continuation_request(self.request, text, prefill=prefill)

    async def resume(self, confirmed_text: str) -> Answer:
        """Find another stream to continue ``confirmed_text``; counts as a failover.

        Raises AllTargetsFailed when no target can take it within the budgets.
        """
        self.ledger.begin_resume(confirmed_text)
        # The continuation carries the text so far: it costs more prompt tokens.
        continued = continuation_request(self.request, confirmed_text, prefill=False)
        self.estimate = estimate_request(continued)
        self.picker.estimate = self.estimate
        return await self.run()

    def stream_interrupted(self, target_id: str, *, forgiven: bool, stalled: bool) -> None:
        """The current stream on ``target_id`` broke after content; ``forgiven``: an
        operator cut it; ``stalled``: it went silent past its gap deadline (never
        tried again in this request; a cut stream may be resumed there once)."""
        self.ledger.interrupted(target_id, forgiven=forgiven, stalled=stalled)

    async def _attempt(
        self,
        actor: TargetActor,
        model: str,
        *,
        hedge: bool = False,
        orders: list[AttemptOrder] | None = None,
    ) -> Answer:
        """Send one attempt to ``actor`` and await its outcome, spending the budget
        it costs. If the caller is cancelled meanwhile, the attempt is cancelled too."""
        # Spent as it is sent, so a hedge started meanwhile sees this attempt's cost.
        cost = self.ledger.charge(actor.target_id, hedge=hedge)
        now = trio.current_time()
        limit = None
        attempt_limit = math.inf
        if not self.stream:
            # The learned response deadline (cold: max_expected_latency_ms).
            limit = actor.timings.response_headers(actor.upstream_model(model))
            attempt_limit = now + limit.seconds
        order = AttemptOrder(
            request=self.request_for(actor),
            model=model,
            stream=self.stream,
            deadline=min(attempt_limit, self.deadline),
            expires_at=self.own_deadline,
            request_id=self.request_id,
            hedge=hedge,
            limit=limit,
            estimate=self.estimate,
        )
        if orders is not None:
            orders.append(order)
        try:
            if await actor.send(order):
                outcome = await order.reply.wait()
            else:  # the target was retired by a reload meanwhile
                self.ledger.exclude(actor.target_id)
                outcome = AttemptOutcome(
                    kind=OutcomeKind.REFUSED,
                    target_id=actor.target_id,
                    served_model=model,
                    started_at=now,
                    note="target retired",
                )
        except BaseException:
            granted = order.reply.peek()
            if granted is not None and granted.kind is OutcomeKind.GRANTED:
                # Cancelled in the instant after the target granted the slot: nobody
                # will run the attempt, so give the slot back here.
                order.cancel(CancelReason.CALLER)
                actor.end_attempt(order, None, started=now)
            raise
        finally:
            if not order.reply.is_set:
                order.cancel(CancelReason.CALLER)
        answer = Answer(outcome)
        if outcome.kind is OutcomeKind.GRANTED:
            answer = await actor.run_granted(order)
            outcome = answer.outcome
        if hedge:
            outcome = attrs.evolve(outcome, hedge=True)
            answer = Answer(outcome, answer.stream)
        self.ledger.attempted(
            actor.target_id,
            cost,
            refused=outcome.kind is OutcomeKind.REFUSED,
            # Cancelled by an operator: it costs the request nothing.
            forgiven=outcome.cancel_reason is CancelReason.OPERATOR
            and outcome.kind is OutcomeKind.CANCELLED,
        )
        return answer

    def _settle(
        self, actor: TargetActor, model: str, outcome: AttemptOutcome, *, final: bool = True
    ) -> None:
        """Decide what a failed or cancelled attempt means for the rest of the request.

        ``final`` is False when another attempt of the request already answered: a
        terminal class is then recorded, not raised.
        """
        failure = None
        if outcome.kind is not OutcomeKind.CANCELLED:
            classification, error_class = outcome.classification, outcome.error_class
            assert classification is not None and error_class is not None
            failure = Failure(
                error_class=error_class,
                status=classification.status,
                message=classification.message,
            )
        ended = Ended(
            target_id=actor.target_id,
            model=model,
            cancelled=failure is None,
            failure=failure,
            silent=outcome.silent,
            fresh_credential=outcome.retry_same,
            context_window=actor.target.context_window,
            prefill_capable=_can_prefill(actor),
        )
        now = trio.current_time()
        settlement = decide(
            self.ledger, ended, now=now, backoff=self.settings.backoff, rng=self.rng
        )
        self.ledger.apply(settlement)
        self.log.outcome(actor.target_id, outcome, settlement.decision)
        if settlement.raises and final:
            assert failure is not None
            raise RequestFailed(
                failure.message or str(failure.error_class),
                request_id=self.request_id,
                error_class=failure.error_class,
                status=failure.status,
            )

    # ---- endings -----------------------------------------------------------------

    def _deadline_error(self) -> AllTargetsFailed:
        return AllTargetsFailed(
            deadline_message(self.ledger),
            request_id=self.request_id,
            error_class=self.ledger.last_class,
            retry_after=self.picker.earliest_ready([self.model], trio.current_time()),
            attempts=self.ledger.attempts,
            deadline_exceeded=True,
        )

    def _give_up(self, chain: Sequence[str]) -> AllTargetsFailed | RequestFailed:
        now = trio.current_time()
        if self.too_large and self.ledger.attempts == 0:
            return RequestFailed(
                f"request needs about {self.estimate.total_tokens} tokens (estimated), more "
                f"than the whole per-minute token limit of every target for "
                f"{clip(self.model)!r}; it was not sent",
                request_id=self.request_id,
                error_class=ErrorClass.REQUEST_TOO_LARGE,
            )
        ending = give_up(
            self.ledger,
            shown=clip(self.model),  # the caller's name, quoted back in bounded form
            served=any(self.router.candidates(m) for m in chain),
            admitted=any(self.picker.pool(m).actors for m in chain),
            all_rate_limited=self.picker.all_rate_limited(chain, now),
        )
        if isinstance(ending, Failure):
            return RequestFailed(
                ending.message,
                request_id=self.request_id,
                error_class=ending.error_class,
                status=ending.status,
            )
        return AllTargetsFailed(
            ending.message,
            request_id=self.request_id,
            error_class=ending.error_class,
            retry_after=self.picker.earliest_ready(chain, now),
            attempts=self.ledger.attempts,
        )


def _can_prefill(actor: TargetActor) -> bool:
    """Whether the target may be resumed with a prefilled assistant turn."""
    capabilities = actor.target.capabilities
    return capabilities is not None and "prefill" in capabilities
