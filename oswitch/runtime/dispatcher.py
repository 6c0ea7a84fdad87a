"""The dispatcher: drives one request across targets until it ends.

Per request: rank the eligible targets (pure scoring over the actors' state) →
send an attempt to the best one → await its outcome → apply the recovery policy
for its class → fail over, retry after backoff, wait for a cooldown, walk the
model's fallbacks, or end — within ``retry_budget``, ``failover_budget`` and the
request's deadline. Every way out is a reply or one typed error.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import trio

from oswitch.core.backoff import backoff_delay
from oswitch.core.clip import clip
from oswitch.core.error_class import ErrorClass
from oswitch.core.policy import RequestAction, recovery_for
from oswitch.core.resume import continuation_request
from oswitch.core.scoring import choose
from oswitch.core.trace import AttemptRecord, TraceBuilder
from oswitch.errors import AllTargetsFailed, RequestFailed
from oswitch.runtime.events import EventHub
from oswitch.runtime.messages import AttemptOrder, AttemptOutcome, CancelReason, OutcomeKind
from oswitch.runtime.router import Pool, RequestNeeds, Router, make_pool, model_chain
from oswitch.runtime.settings import Settings
from oswitch.runtime.target import TargetActor

# Members of a tier looked at first when choosing a target (see RequestRun._pick).
SAMPLE_SIZE = 8


class ChangeSignal:
    """Wakes every waiter when any target's eligibility may have changed."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        event, self._event = self._event, trio.Event()
        event.set()

    async def wait_until(self, deadline: float) -> None:
        """Return at the next change, or at ``deadline`` (trio time), whichever is first."""
        with trio.move_on_at(deadline):
            await self._event.wait()


class RequestRun:
    """One request's journey; the dispatcher's mutable per-request state."""

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
        self.attempts = 0
        self.retries = 0
        self.failovers = 0
        self.free_next = True  # the first attempt, and one after an operator cancel
        self.tried: set[str] = set()
        self.excluded: set[str] = set()
        self.excluded_for_model: set[tuple[str, str]] = set()
        self.not_before: dict[str, float] = {}
        self.backoff_rounds: dict[str, int] = {}
        self.context_limit: int | None = None
        self.retry_next: str | None = None  # a target to resend to at once (fresh key)
        self.prefill_refused: set[str] = set()  # targets that refused a prefill resume
        self.resuming = False
        self.confirmed_text = ""
        self.last_class: ErrorClass | None = None
        self.last_status: int | None = None
        self.last_message = ""

    # ---- the request loop --------------------------------------------------------

    async def run(self) -> AttemptOutcome:
        """Return the successful outcome, or raise AllTargetsFailed / RequestFailed."""
        chain = model_chain(self.model, self.settings.fallbacks)
        for hop, model in enumerate(chain):
            if hop > 0:
                # The hop itself is free: the first attempt on the fallback model is
                # a move to another target, and that is what failover_budget counts.
                if not self._budget_allows_failover():
                    break
                self.events.emit(
                    "fallback",
                    request_id=self.request_id,
                    model=model,
                    decision="fallback",
                    note=f"from {chain[hop - 1]}",
                )
            outcome = await self._run_model(model)
            if outcome is not None:
                return outcome
        raise self._give_up(chain)

    def _pool(self, model: str) -> Pool:
        pool = self.router.pool(model, self.needs)
        limit = self.context_limit
        if limit is None:
            return pool
        return make_pool(
            [
                actor
                for actor in pool.actors
                if actor.target.context_window is None or actor.target.context_window > limit
            ]
        )

    def _usable(self, actor: TargetActor, model: str) -> bool:
        """Not excluded for this request, and affordable within its budgets."""
        return (
            actor.target_id not in self.excluded
            and (actor.target_id, model) not in self.excluded_for_model
            and self._affordable(actor)
        )

    def _pick(
        self, pool: Pool, model: str, now: float, *, avoid: TargetActor | None = None
    ) -> TargetActor | None:
        """The target to try next, or None when none is eligible now.

        Untried targets first (a sibling before a retry), then by tier; within a tier
        the ranking decides. A large tier is sampled (``SAMPLE_SIZE`` random members)
        before it is scanned, so a request costs about the same with 3 or 1,000
        targets; sampling also spreads load over equally good keys.
        """
        retry_next, self.retry_next = self.retry_next, None
        if retry_next is not None:
            actor = self.router.actors.get(retry_next)
            if actor is not None and self._eligible(actor, model, now):
                return actor
        for want_untried in (True, False):
            if not want_untried and not self.tried:
                break
            for tier in pool.tiers:

                def fits(actor: TargetActor, want: bool = want_untried) -> bool:
                    return (
                        actor is not avoid
                        and (actor.target_id not in self.tried) is want
                        and self._eligible(actor, model, now)
                    )

                if len(tier) > SAMPLE_SIZE:
                    eligible = [a for a in self.rng.sample(tier, SAMPLE_SIZE) if fits(a)]
                    if eligible:
                        return self._choose(eligible)
                eligible = [a for a in tier if fits(a)]
                if eligible:
                    return self._choose(eligible)
        return None

    def _eligible(self, actor: TargetActor, model: str, now: float) -> bool:
        return self._usable(actor, model) and self._ready_at(actor, model, now) <= now

    def _cost(self, actor: TargetActor) -> str:
        if self.free_next:
            return "free"
        return "retry" if actor.target_id in self.tried else "failover"

    def _affordable(self, actor: TargetActor) -> bool:
        cost = self._cost(actor)
        if cost == "retry":
            return self.retries < self.settings.retry_budget
        if cost == "failover":
            return self._budget_allows_failover()
        return True

    def _budget_allows_failover(self) -> bool:
        return self.failovers < self.settings.failover_budget

    def _ready_at(self, actor: TargetActor, model: str, now: float) -> float:
        return max(actor.ready_at(model, now), self.not_before.get(actor.target_id, -math.inf))

    async def _run_model(self, model: str) -> AttemptOutcome | None:
        """Try ``model``'s targets; None when they are exhausted (walk the fallbacks)."""
        waiting_since: float | None = None
        while True:
            now = trio.current_time()
            if now >= self.deadline:
                raise self._deadline_error()
            pool = self._pool(model)
            actor = self._pick(pool, model, now)
            if actor is None:
                live = [a for a in pool.actors if self._usable(a, model)]
                if not live:
                    return None
                if waiting_since is None:
                    waiting_since = now
                earliest = min(self._ready_at(a, model, now) for a in live)
                wait_until = min(waiting_since + self.settings.max_wait_s, self.deadline)
                busy = any(a.busy(model, now) for a in live)
                if now >= wait_until or (earliest > wait_until and not busy):
                    return None  # nothing frees up in time: the fallbacks, or give up
                if earliest <= now:
                    await trio.lowlevel.checkpoint()
                else:
                    # Wake when a target's clock says so, or when any attempt ends (a
                    # busy target's slot frees up), whichever comes first.
                    await self.changed.wait_until(min(earliest, wait_until))
                continue
            if self.settings.hedge_after_s is None:
                results = [(actor, await self._attempt(actor, model))]
            else:
                results = await self._race(actor, model)
            winner = None
            for attempt_actor, outcome in results:
                if outcome.kind is OutcomeKind.OK and winner is None:
                    winner = (attempt_actor, outcome)
            for attempt_actor, outcome in results:
                if outcome.kind is OutcomeKind.REFUSED:
                    continue
                if winner is not None and attempt_actor is winner[0]:
                    if not self.stream:
                        self._record(attempt_actor, model, outcome, "return")
                elif outcome.kind is OutcomeKind.OK and outcome.stream is not None:
                    # Both hedged streams began at once: the later one lost the race.
                    await outcome.stream.aclose()
                    lost = attempt_actor.end_attempt(
                        outcome.stream.order,
                        attrs.evolve(
                            outcome,
                            kind=OutcomeKind.CANCELLED,
                            stream=None,
                            cancel_reason=CancelReason.HEDGE_LOST,
                        ),
                        started=outcome.started_at,
                    )
                    self._record(attempt_actor, model, lost, "hedge_lost")
                elif outcome.cancel_reason is CancelReason.HEDGE_LOST:
                    self._record(attempt_actor, model, outcome, "hedge_lost")
                elif outcome.kind is not OutcomeKind.OK:
                    self._settle(attempt_actor, model, outcome, final=winner is None)
            if winner is not None:
                return winner[1]
            if all(o.kind is OutcomeKind.REFUSED for _, o in results):
                # Taken by another request in the meantime: keep waiting, same max_wait.
                await trio.lowlevel.checkpoint()
            else:
                waiting_since = None

    async def _race(
        self, first: TargetActor, model: str
    ) -> list[tuple[TargetActor, AttemptOutcome]]:
        """Happy-eyeballs hedging: start ``first``; if it has not answered after
        ``hedge_after_ms``, start the next-best untried target too. The first answer
        wins and the other attempt is cancelled (a lost hedge is not a failure)."""
        results: list[tuple[TargetActor, AttemptOutcome]] = []
        orders: list[AttemptOrder] = []
        settled = trio.Event()

        async def attempt(actor: TargetActor, hedge: bool) -> None:
            outcome = await self._attempt(actor, model, hedge=hedge, orders=orders)
            results.append((actor, outcome))
            if outcome.kind is OutcomeKind.OK or len(results) == len(orders):
                settled.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(attempt, first, False)
            assert self.settings.hedge_after_s is not None
            with trio.move_on_after(self.settings.hedge_after_s):
                await settled.wait()
            second = None if settled.is_set() else self._hedge_target(first, model)
            if second is not None:
                self.events.emit(
                    "hedge",
                    request_id=self.request_id,
                    target_id=second.target_id,
                    model=model,
                    decision="hedge",
                    note=f"{first.target_id} slow",
                )
                nursery.start_soon(attempt, second, True)
            await settled.wait()
            for order in orders:
                if not order.reply.is_set:
                    order.cancel(CancelReason.HEDGE_LOST)
        return results

    def _hedge_target(self, first: TargetActor, model: str) -> TargetActor | None:
        if not self._budget_allows_failover():
            return None
        now = trio.current_time()
        pool = self._pool(model)
        untried = make_pool([a for a in pool.actors if a.target_id not in self.tried])
        return self._pick(untried, model, now, avoid=first)

    # ---- stream resume -----------------------------------------------------------

    def _prefills(self, actor: TargetActor) -> bool:
        capabilities = actor.target.capabilities
        return (
            capabilities is not None
            and "prefill" in capabilities
            and actor.target_id not in self.prefill_refused
        )

    def request_for(self, actor: TargetActor) -> Mapping[str, Any]:
        """The request as sent to ``actor``: a continuation while resuming a stream."""
        if not self.resuming:
            return self.request
        return continuation_request(
            self.request, self.confirmed_text, prefill=self._prefills(actor)
        )

    async def resume(self, confirmed_text: str) -> AttemptOutcome:
        """Find another stream to continue ``confirmed_text``; counts as a failover.

        Raises AllTargetsFailed when no target can take it within the budgets.
        """
        self.resuming = True
        self.confirmed_text = confirmed_text
        return await self.run()

    def _choose(self, eligible: list[TargetActor]) -> TargetActor:
        """The best of a few eligible targets of one kind (all tried or all untried).

        A half-open target waiting for its probe goes first, whatever its score: its
        averages are stale, and without the probe it could never close again.
        """
        if len(eligible) == 1:
            return eligible[0]
        now = trio.current_time()
        for actor in eligible:
            if actor.wants_probe(now):
                return actor
        by_id = {a.target_id: a for a in eligible}
        picked = choose(
            [a.candidate(now) for a in eligible],
            self.settings.weights,
            max_expected_latency_s=self.settings.max_expected_latency_s,
            rng=self.rng,
        )
        return by_id[picked.target_id]

    async def _attempt(
        self,
        actor: TargetActor,
        model: str,
        *,
        hedge: bool = False,
        orders: list[AttemptOrder] | None = None,
    ) -> AttemptOutcome:
        """Send one attempt to ``actor`` and await its outcome, spending the budget
        it costs. If the caller is cancelled meanwhile, the attempt is cancelled too."""
        cost = "failover" if hedge else self._cost(actor)
        now = trio.current_time()
        attempt_limit = math.inf if self.stream else now + self.settings.max_expected_latency_s
        order = AttemptOrder(
            request=self.request_for(actor),
            model=model,
            stream=self.stream,
            deadline=min(attempt_limit, self.deadline),
            expires_at=self.own_deadline,
            request_id=self.request_id,
            hedge=hedge,
        )
        if orders is not None:
            orders.append(order)
        try:
            if await actor.send(order):
                outcome = await order.reply.wait()
            else:  # the target was retired by a reload meanwhile
                self.excluded.add(actor.target_id)
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
                # Cancelled in the instant after the target granted a stream's slot:
                # nobody will open that stream, so give the slot back here.
                order.cancel(CancelReason.CALLER)
                actor.end_attempt(order, None, started=now)
            raise
        finally:
            if not order.reply.is_set:
                order.cancel(CancelReason.CALLER)
        if outcome.kind is OutcomeKind.GRANTED:
            outcome = await actor.open_stream(order)
        if hedge:
            outcome = attrs.evolve(outcome, hedge=True)
        if outcome.kind is OutcomeKind.REFUSED:
            return outcome
        self.attempts += 1
        self.tried.add(actor.target_id)
        if outcome.kind is OutcomeKind.CANCELLED and outcome.cancel_reason is CancelReason.OPERATOR:
            # Cancelled by an operator: it costs the request nothing.
            self.free_next = True
            return outcome
        if cost == "retry":
            self.retries += 1
        elif cost == "failover":
            self.failovers += 1
        self.free_next = False
        return outcome

    def _settle(
        self, actor: TargetActor, model: str, outcome: AttemptOutcome, *, final: bool = True
    ) -> None:
        """Decide what a failed or cancelled attempt means for the rest of the request.

        ``final`` is False when another attempt of the request already answered: a
        terminal class is then recorded, not raised.
        """
        target_id = actor.target_id
        if outcome.kind is OutcomeKind.CANCELLED:
            self.excluded.add(target_id)
            self._record(actor, model, outcome, "failover")
            return
        classification = outcome.classification
        assert classification is not None
        error_class = outcome.error_class
        assert error_class is not None
        self.last_class = error_class
        self.last_status = classification.status
        self.last_message = classification.message
        recovery = recovery_for(error_class, silent=outcome.silent)
        action = recovery.request_action
        if self.resuming and error_class is ErrorClass.INVALID_REQUEST and self._prefills(actor):
            # A refused prefill: resume on the same target with the instruction form.
            self.prefill_refused.add(target_id)
            self.retry_next = target_id
            self.free_next = True
            self._record(actor, model, outcome, "retry")
            return
        if action is RequestAction.RETURN:
            self._record(actor, model, outcome, "return")
            if not final:
                return
            raise RequestFailed(
                classification.message or str(error_class),
                request_id=self.request_id,
                error_class=error_class,
                status=classification.status,
            )
        decision = "failover"
        if outcome.retry_same:
            decision = "retry"  # a fresh credential: the same target goes again at once
            self.retry_next = target_id
        elif action is RequestAction.SIBLING_OR_FALLBACK:
            if classification.status == 429:
                self.excluded.add(target_id)  # per-minute budget: a sibling key may take it
            else:
                window = actor.target.context_window
                if window is not None:
                    self.context_limit = max(self.context_limit or 0, window)
                decision = "fallback"
                # Never resend it unchanged to this model on this target; with no known
                # window, no other target of this model is known to be larger either.
                self.excluded_for_model.update(
                    (a.target_id, model)
                    for a in self.router.candidates(model)
                    if a is actor or (window is None and a.target.context_window is None)
                )
        elif action is RequestAction.RETRY_THEN_FAIL_OVER and recovery.retry_same_target:
            decision = "backoff"  # a sibling now if one is eligible, else this one later
            rounds = self.backoff_rounds.get(target_id, 0)
            self.backoff_rounds[target_id] = rounds + 1
            delay = backoff_delay(self.settings.backoff, rounds, self.rng)
            self.not_before[target_id] = trio.current_time() + delay
        elif not recovery.retry_same_target:
            self.excluded.add(target_id)
        else:
            decision = "cooldown"  # the target cools down; fail over or wait for it
        self._record(actor, model, outcome, decision)

    def _record(
        self, actor: TargetActor, model: str, outcome: AttemptOutcome, decision: str
    ) -> None:
        classification = outcome.classification
        self.record(
            AttemptRecord(
                index=len(self.trace.attempts),
                target_id=actor.target_id,
                model=outcome.served_model,
                started_at=outcome.started_at,
                duration_s=outcome.duration_s,
                error_class=outcome.error_class,
                decision=decision,
                status=None if classification is None else classification.status,
                retry_after=None if classification is None else classification.retry_after,
                note=outcome.note
                or (f"cancelled: {outcome.cancel_reason}" if outcome.cancel_reason else ""),
                hedge=outcome.hedge,
            )
        )

    def record(self, attempt: AttemptRecord) -> None:
        """Add an attempt to the request's trace and emit its ``attempt`` audit event."""
        self.trace.add(attempt)
        self.events.emit(
            "attempt",
            request_id=self.request_id,
            target_id=attempt.target_id,
            model=attempt.model,
            attempt=self.attempts,
            error_class=None if attempt.error_class is None else str(attempt.error_class),
            decision=attempt.decision,
            latency_ms=round(attempt.duration_s * 1000.0, 3),
            status=attempt.status,
            note=attempt.note or None,
        )

    # ---- endings -----------------------------------------------------------------

    def _earliest_ready(self, chain: Sequence[str]) -> float | None:
        now = trio.current_time()
        times = [
            actor.ready_at(model, now)
            for model in chain
            for actor in self._pool(model).actors
            if actor.target_id not in self.excluded
        ]
        finite = [t for t in times if not math.isinf(t)]
        if not finite:
            return None
        return max(0.0, min(finite) - now)

    def _deadline_error(self) -> AllTargetsFailed:
        return AllTargetsFailed(
            f"deadline exceeded after {self.attempts} attempt(s)"
            + (f"; last failure: {self.last_class}" if self.last_class else ""),
            request_id=self.request_id,
            error_class=self.last_class,
            retry_after=self._earliest_ready([self.model]),
            attempts=self.attempts,
            deadline_exceeded=True,
        )

    def _all_rate_limited(self, chain: Sequence[str]) -> bool:
        now = trio.current_time()
        candidates = [
            (actor, model)
            for model in chain
            for actor in self._pool(model).actors
            if actor.target_id not in self.excluded
        ]
        return bool(candidates) and all(a.rate_limited(m, now) for a, m in candidates)

    def _give_up(self, chain: Sequence[str]) -> AllTargetsFailed | RequestFailed:
        shown = clip(self.model)  # the caller's name, quoted back in bounded form
        if self.last_class is ErrorClass.REQUEST_TOO_LARGE:
            return RequestFailed(
                self.last_message or "request too large for every target",
                request_id=self.request_id,
                error_class=ErrorClass.REQUEST_TOO_LARGE,
                status=self.last_status,
            )
        if not any(self.router.candidates(m) for m in chain):
            reason = f"no target serves model {shown!r}"
        elif not any(self._pool(m).actors for m in chain):
            reason = f"no target serving {shown!r} accepts this request (capabilities/tags)"
        elif self.attempts == 0:
            reason = f"no target for {shown!r} became eligible in time"
            if self._all_rate_limited(chain):
                # Every candidate is cooling off a rate limit: say so (the sidecar's 429).
                self.last_class = ErrorClass.RATE_LIMITED
                reason += " (all rate-limited)"
        else:
            reason = (
                f"all targets failed for {shown!r} after {self.attempts} attempt(s)"
                f" (retries {self.retries}/{self.settings.retry_budget}, failovers "
                f"{self.failovers}/{self.settings.failover_budget})"
            )
            if self.last_class is not None:
                reason += f"; last failure: {self.last_class}"
        return AllTargetsFailed(
            reason,
            request_id=self.request_id,
            error_class=self.last_class,
            retry_after=self._earliest_ready(chain),
            attempts=self.attempts,
        )
