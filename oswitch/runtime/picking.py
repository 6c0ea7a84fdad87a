"""Which target a request tries next, and when one frees up if none can take it now.

Synchronous reads of the actors' published state (``ready_at``, ``busy``,
``candidate``, ...) joined with the request's ledger (exclusions, budgets, backoff):
nothing here waits or writes to a target. The dispatcher asks; it does the waiting.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from oswitch.core.headroom import Headroom
from oswitch.core.ledger import Ledger
from oswitch.core.scoring import Weights, choose
from oswitch.core.tokens import TokenEstimate
from oswitch.runtime.router import Pool, RequestNeeds, Router, make_pool
from oswitch.runtime.target import TargetActor

# Members of a tier looked at first when choosing a target (see Picker.pick).
SAMPLE_SIZE = 8
# Keys whose token headroom (the smallest fraction of any known limit left after the
# request) is within this of the roomiest one's count as equally roomy; the others
# wait until they have refilled, so no key runs dry while another has room.
SPARE_MARGIN = 0.1


class Picker:
    """Picks targets for one request from its router, as its ledger allows."""

    def __init__(
        self,
        *,
        router: Router,
        needs: RequestNeeds,
        ledger: Ledger,
        weights: Weights,
        max_expected_latency_s: float,
        rng: random.Random,
        estimate: TokenEstimate | None = None,
    ) -> None:
        self.router = router
        self._estimate = estimate  # the request's tokens, for the keys' token budgets
        # Verdicts by target, kept while the moment, the estimate and the target's
        # budget are the same: one pick reads each several times.
        self._rooms: dict[str, tuple[float, int, Headroom]] = {}
        self._needs = needs
        self._ledger = ledger
        self._weights = weights
        self._max_expected_latency_s = max_expected_latency_s
        self._rng = rng

    def pool(self, model: str) -> Pool:
        """The targets that may serve ``model`` for this request, in tiers; after a
        context-window refusal, only those with no known window or a larger one."""
        pool = self.router.pool(model, self._needs)
        limit = self._ledger.context_limit
        if limit is None:
            return pool
        return make_pool(
            [
                actor
                for actor in pool.actors
                if actor.target.context_window is None or actor.target.context_window > limit
            ]
        )

    @property
    def estimate(self) -> TokenEstimate | None:
        return self._estimate

    @estimate.setter
    def estimate(self, estimate: TokenEstimate | None) -> None:
        self._estimate = estimate
        self._rooms.clear()

    def headroom(self, actor: TargetActor, now: float) -> Headroom | None:
        """What ``actor``'s token budgets say of this request, or None when nothing
        limits its tokens (no estimate, no budget, nothing learned)."""
        if self._estimate is None or not actor.token_limited:
            return None
        version = actor.tokens_version
        kept = self._rooms.get(actor.target_id)
        if kept is not None and kept[0] == now and kept[1] == version:
            return kept[2]
        room = actor.headroom(self._estimate, now)
        self._rooms[actor.target_id] = (now, version, room)
        return room

    def too_large(self, actor: TargetActor, now: float) -> bool:
        """Whether this request is larger than one of ``actor``'s whole per-minute
        token limits (configured or reported): it must never be sent there."""
        room = self.headroom(actor, now)
        return room is not None and room.too_large

    def usable(self, actor: TargetActor, model: str, now: float | None = None) -> bool:
        """Not excluded for this request, affordable within its budgets, and not too
        large for the key's token limits (checked when ``now`` is given)."""
        if not self._ledger.usable(actor.target_id, model, actor.target.context_window):
            return False
        return now is None or not self.too_large(actor, now)

    def ready_at(self, actor: TargetActor, model: str, now: float) -> float:
        """When ``actor`` may take this request's next attempt (its backoff and its
        token headroom included; ``math.inf`` when the request is too large for it)."""
        ready = max(actor.ready_at(model, now), self._ledger.held_until(actor.target_id))
        room = self.headroom(actor, now)
        if room is not None:
            ready = max(ready, math.inf if room.ready_at is None else room.ready_at)
        return ready

    def eligible(self, actor: TargetActor, model: str, now: float) -> bool:
        return self.usable(actor, model) and self.ready_at(actor, model, now) <= now

    def pick(
        self, pool: Pool, model: str, now: float, *, avoid: TargetActor | None = None
    ) -> TargetActor | None:
        """The target to try next, or None when none is eligible now.

        A target the ledger says to resend to goes first. Then untried targets (a
        sibling before a retry), then by tier; within a tier the ranking decides. A
        large tier is sampled (``SAMPLE_SIZE`` random members) before it is scanned, so
        a request costs about the same with 3 or 1,000 targets; sampling also spreads
        load over equally good keys.
        """
        retry_next = self._ledger.take_retry_next()
        if retry_next is not None:
            actor = self.router.actors.get(retry_next)
            if actor is not None and self.eligible(actor, model, now):
                return actor
        tried = self._ledger.tried
        for want_untried in (True, False):
            if not want_untried and not tried:
                break
            for tier in pool.tiers:
                if len(tier) > SAMPLE_SIZE:
                    sample = self._rng.sample(tier, SAMPLE_SIZE)
                    eligible = self._fitting(sample, model, now, want_untried, avoid)
                    if eligible:
                        return self._choose(eligible, now)
                eligible = self._fitting(tier, model, now, want_untried, avoid)
                if eligible:
                    return self._choose(eligible, now)
        return None

    def _fitting(
        self,
        actors: Sequence[TargetActor],
        model: str,
        now: float,
        untried: bool,
        avoid: TargetActor | None,
    ) -> list[TargetActor]:
        """Those of ``actors`` eligible now, other than ``avoid``, and untried by this
        request (``untried``) or tried."""
        tried = self._ledger.tried
        return [
            actor
            for actor in actors
            if actor is not avoid
            and (actor.target_id not in tried) is untried
            and self.eligible(actor, model, now)
        ]

    def could_hedge(self, first: TargetActor, model: str, later: Sequence[str]) -> bool:
        """Whether :meth:`hedge_target` could ever find a target to race ``first`` with
        in this request: an untried one other than ``first`` serving ``model`` or one
        of ``later``. The router is fixed for a request and the tried set only grows,
        so False stays False; then a step needs no race."""
        tried = self._ledger.tried
        for candidate_model in (model, *later):
            for actor in self.pool(candidate_model).actors:
                if actor is not first and actor.target_id not in tried:
                    return True
        return False

    def hedge_target(
        self, first: TargetActor, model: str, later: Sequence[str], now: float
    ) -> tuple[TargetActor, str] | None:
        """The untried target to race ``first`` with, and the model it is asked for: a
        sibling serving ``model`` first, else one of the ``later`` (fallback) models in
        their order; None when none is eligible or the failover budget is spent."""
        if not self._ledger.may_fail_over():
            return None
        tried = self._ledger.tried
        for candidate_model in (model, *later):
            untried = make_pool(
                [a for a in self.pool(candidate_model).actors if a.target_id not in tried]
            )
            actor = self.pick(untried, candidate_model, now, avoid=first)
            if actor is not None:
                return actor, candidate_model
        return None

    def _choose(self, eligible: list[TargetActor], now: float) -> TargetActor:
        """The best of a few eligible targets of one kind (all tried or all untried).

        A half-open target waiting for its probe goes first, whatever its score: its
        averages are stale, and without the probe it could never close again.
        """
        if len(eligible) == 1:
            return eligible[0]
        for actor in eligible:
            if actor.wants_probe(now):
                return actor
        eligible = self._roomiest(eligible, now)
        if len(eligible) == 1:
            return eligible[0]
        by_id = {a.target_id: a for a in eligible}
        picked = choose(
            [a.candidate(now) for a in eligible],
            self._weights,
            max_expected_latency_s=self._max_expected_latency_s,
            rng=self._rng,
        )
        return by_id[picked.target_id]

    def _roomiest(self, eligible: list[TargetActor], now: float) -> list[TargetActor]:
        """Those of ``eligible`` with about the most token headroom left (within
        ``SPARE_MARGIN`` of the best); all of them when none has a token limit."""
        spares = []
        for actor in eligible:
            room = self.headroom(actor, now)
            spares.append(1.0 if room is None else room.spare)
        best = max(spares)
        if min(spares) >= best - SPARE_MARGIN:
            return eligible
        return [
            a for a, spare in zip(eligible, spares, strict=True) if spare >= best - SPARE_MARGIN
        ]

    # ---- when nothing is left ------------------------------------------------------

    def _ready_by_clock(self, actor: TargetActor, model: str, now: float) -> float:
        ready = actor.ready_at(model, now)
        room = self.headroom(actor, now)
        if room is not None and room.ready_at is not None:
            ready = max(ready, room.ready_at)
        return ready

    def _left(self, chain: Sequence[str]) -> list[tuple[TargetActor, str]]:
        excluded = self._ledger.excluded
        return [
            (actor, model)
            for model in chain
            for actor in self.pool(model).actors
            if actor.target_id not in excluded
        ]

    def earliest_ready(self, chain: Sequence[str], now: float) -> float | None:
        """Seconds until the earliest target not excluded becomes eligible, for any model
        of ``chain``; None when none will by the clock alone."""
        finite = [
            t
            for t in (self._ready_by_clock(a, m, now) for a, m in self._left(chain))
            if not math.isinf(t)
        ]
        if not finite:
            return None
        return max(0.0, min(finite) - now)

    def all_rate_limited(self, chain: Sequence[str], now: float) -> bool:
        """Whether every target not excluded is out only because a rate limit cools it
        or its token headroom is short."""
        left = self._left(chain)
        return bool(left) and all(
            a.rate_limited(m, now) or self._short_of_tokens(a, now) for a, m in left
        )

    def _short_of_tokens(self, actor: TargetActor, now: float) -> bool:
        room = self.headroom(actor, now)
        return room is not None and not room.can_take and not room.too_large
