"""One request's ledger: what it has spent, whom it leaves out, and what it does next.

Pure: no trio, no I/O; time (``now``) and randomness (``rng``) come in. The dispatcher
(``runtime/dispatcher.py``) owns one :class:`Ledger` per request and drives it:

1. before sending, it asks what an attempt on a target would cost (:meth:`Ledger.cost_of`)
   and whether the budgets can pay (:meth:`Ledger.usable`, :meth:`Ledger.may_fail_over`);
2. as it sends, it spends that cost (:meth:`Ledger.charge`), and once the attempt has
   ended it books it (:meth:`Ledger.attempted`) — a refused order and an attempt an
   operator cancelled are refunded;
3. after each failed or cancelled attempt it asks :func:`decide` what the request does
   next — a pure function of the ledger, the attempt's facts, the recovery policy
   (``core/policy.py``), ``now`` and ``rng`` — and applies the answer
   (:meth:`Ledger.apply`);
4. when nothing is left it asks :func:`give_up` how the request ends.

Budgets count per request (DESIGN "Budgets count per request"): ``retry_budget`` pays
for re-sends to a target already tried, ``failover_budget`` for moves to another target,
hedges included; the first attempt, and the one after an operator's cancel, are free.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Mapping, Sequence

import attrs

from oswitch.core.backoff import BackoffSettings, backoff_delay
from oswitch.core.error_class import ErrorClass
from oswitch.core.immutable import immutable
from oswitch.core.policy import RequestAction, recovery_for


class Cost(enum.StrEnum):
    """What sending the next attempt to a target spends."""

    FREE = "free"  # the request's first attempt, or the first after an operator's cancel
    RETRY = "retry"  # a target this request already tried: one of retry_budget
    FAILOVER = "failover"  # a target not tried yet, or a hedge: one of failover_budget


class Decision(enum.StrEnum):
    """What the request did after an attempt, spelled as its trace and audit events say
    (the ``fallback`` and ``hedge`` audit events use theirs too)."""

    RETURN = "return"  # the reply goes back, or a terminal class is raised as is
    RETRY = "retry"  # the same target at once (a fresh credential, a refused prefill)
    FAILOVER = "failover"  # the target is out for the rest of the request
    FALLBACK = "fallback"  # this model refused it as too large: on to the next model
    BACKOFF = "backoff"  # a sibling now; this target again after a backoff delay
    COOLDOWN = "cooldown"  # the target cools down; fail over or wait for it
    HEDGE = "hedge"  # (the hedge event) a second attempt races a slow first one
    HEDGE_LOST = "hedge_lost"  # another attempt of the request answered first
    RESUME = "resume"  # a stream broke after content: continue it elsewhere
    GIVE_UP = "give_up"  # a stream broke and cannot be continued (or the deadline passed)
    CANCELLED = "cancelled"  # the caller ended a stream's attempt


@attrs.frozen(kw_only=True)
class Failure:
    """A failed attempt's class, the provider's status and its (scrubbed) message."""

    error_class: ErrorClass
    status: int | None = None
    message: str = ""


@attrs.frozen(kw_only=True)
class Ended:
    """What :func:`decide` needs to know of an attempt that failed or was cancelled.

    ``cancelled``: cancelled from outside (an operator); ``failure`` otherwise.
    ``silent``: abandoned at its time limit. ``fresh_credential``: an AuthFailure after
    which the target re-read a changed key. ``context_window`` and ``prefill_capable``
    describe the target.
    """

    target_id: str
    model: str
    cancelled: bool = False
    failure: Failure | None = None
    silent: bool = False
    fresh_credential: bool = False
    context_window: int | None = None
    prefill_capable: bool = False


@immutable(kw_only=True)
class Settlement:
    """The decision after one attempt and the changes it makes to the ledger.

    ``raises``: a terminal class — the request ends with RequestFailed (unless another
    attempt of it already answered). ``failure`` becomes the last failure.
    ``exclude``: the target is out for the rest of the request; ``exclude_for_model``:
    out for this model; ``exclude_windowless``: so is every target of this model with no
    known context window. ``context_limit``: only targets with a larger window from now
    on. ``resend``: the same target goes next, at once. ``refuse_prefill``: resume on it
    in the instruction form. ``free_next``: the next attempt costs nothing.
    ``not_before`` / ``backoff_rounds``: the target is held back until then.
    """

    decision: Decision
    target_id: str
    model: str
    raises: bool = False
    failure: Failure | None = None
    exclude: bool = False
    exclude_for_model: bool = False
    exclude_windowless: bool = False
    context_limit: int | None = None
    resend: bool = False
    refuse_prefill: bool = False
    free_next: bool = False
    not_before: float | None = None
    backoff_rounds: int | None = None


class BudgetSpent(ValueError):
    """Raised by :meth:`Ledger.charge` for an attempt the budgets cannot pay for."""


@attrs.define(kw_only=True)
class Ledger:
    """One request's budgets, exclusions and memory of its attempts.

    Only its own methods change it; others read its fields.
    """

    retry_budget: int
    failover_budget: int
    attempts: int = 0  # attempts made (refused orders are not attempts)
    retries: int = 0
    failovers: int = 0
    free_next: bool = True
    tried: set[str] = attrs.Factory(set)
    excluded: set[str] = attrs.Factory(set)
    excluded_for_model: set[tuple[str, str]] = attrs.Factory(set)
    # Models a target with no known context window refused as too large: no other
    # target of theirs with no known window is known to be larger either.
    windowless_refused: set[str] = attrs.Factory(set)
    not_before: dict[str, float] = attrs.Factory(dict)
    backoff_rounds: dict[str, int] = attrs.Factory(dict)
    context_limit: int | None = None
    retry_next: str | None = None
    prefill_refused: set[str] = attrs.Factory(set)
    # Targets whose stream was cut once in this request (a second cut avoids them).
    cut_once: set[str] = attrs.Factory(set)
    # Targets passed over while any other candidate remains (cut twice); ``avoiding``
    # is cleared once the whole chain is spent without them.
    avoided: set[str] = attrs.Factory(set)
    avoiding: bool = True
    # The text the caller has, while resuming a stream (never in a repr: no answer text
    # leaves the request in logs).
    resume_text: str | None = attrs.field(default=None, repr=False)
    last_failure: Failure | None = None

    # ---- reading -----------------------------------------------------------------

    @property
    def last_class(self) -> ErrorClass | None:
        return None if self.last_failure is None else self.last_failure.error_class

    @property
    def resuming(self) -> bool:
        return self.resume_text is not None

    def cost_of(self, target_id: str) -> Cost:
        """What the next attempt on ``target_id`` would spend."""
        if self.free_next:
            return Cost.FREE
        return Cost.RETRY if target_id in self.tried else Cost.FAILOVER

    def may_fail_over(self) -> bool:
        """Whether ``failover_budget`` can pay for one more move (or hedge, or hop)."""
        return self.failovers < self.failover_budget

    def _affords(self, cost: Cost) -> bool:
        if cost is Cost.RETRY:
            return self.retries < self.retry_budget
        if cost is Cost.FAILOVER:
            return self.may_fail_over()
        return True

    def usable(self, target_id: str, model: str, context_window: int | None) -> bool:
        """Not left out of this request for ``model``, and affordable within its budgets."""
        return (
            target_id not in self.excluded
            and not (self.avoiding and target_id in self.avoided)
            and (target_id, model) not in self.excluded_for_model
            and not (context_window is None and model in self.windowless_refused)
            and self._affords(self.cost_of(target_id))
        )

    def held_until(self, target_id: str) -> float:
        """Until when this request holds ``target_id`` back (its backoff), or ``-inf``."""
        return self.not_before.get(target_id, -math.inf)

    def prefills(self, target_id: str, capable: bool) -> bool:
        """Whether a resume on a ``capable`` target uses prefill (it has not refused one)."""
        return capable and target_id not in self.prefill_refused

    # ---- changing ----------------------------------------------------------------

    def take_retry_next(self) -> str | None:
        """The target to resend to at once, if any; asking clears it."""
        target_id, self.retry_next = self.retry_next, None
        return target_id

    def charge(self, target_id: str, *, hedge: bool = False) -> Cost:
        """Spend what an attempt on ``target_id`` costs (a hedge: a failover), as it is
        sent; return the cost for :meth:`attempted`. Raises :class:`BudgetSpent`, and
        changes nothing, when the budgets cannot pay for it."""
        cost = Cost.FAILOVER if hedge else self.cost_of(target_id)
        if not self._affords(cost):
            raise BudgetSpent(f"{cost} budget spent (attempt on {target_id})")
        if cost is Cost.RETRY:
            self.retries += 1
        elif cost is Cost.FAILOVER:
            self.failovers += 1
        self.free_next = False
        return cost

    def _refund(self, cost: Cost) -> None:
        if cost is Cost.RETRY:
            self.retries -= 1
        elif cost is Cost.FAILOVER:
            self.failovers -= 1

    def attempted(
        self, target_id: str, cost: Cost, *, refused: bool = False, forgiven: bool = False
    ) -> None:
        """Book an attempt :meth:`charge` paid ``cost`` for, once it has ended.

        ``refused``: the target took nothing (not an attempt): the cost is refunded.
        ``forgiven``: an operator cancelled it: it is an attempt, but costs nothing,
        and neither does the next one.
        """
        if refused:
            self._refund(cost)
            self.free_next = self.free_next or cost is Cost.FREE
            return
        self.attempts += 1
        self.tried.add(target_id)
        if forgiven:
            self._refund(cost)
            self.free_next = True

    def exclude(self, target_id: str) -> None:
        """Leave ``target_id`` out for the rest of the request (e.g. retired by a reload)."""
        self.excluded.add(target_id)

    def begin_resume(self, confirmed_text: str) -> None:
        """From now on every attempt continues ``confirmed_text`` (a stream resume)."""
        self.resume_text = confirmed_text

    def interrupted(
        self, target_id: str | None = None, *, forgiven: bool, stalled: bool = False
    ) -> None:
        """A stream on ``target_id`` (None: not known) broke after content
        (InterruptedExecution).

        ``forgiven``: an operator cut it, so the attempt continuing it costs nothing.
        Never twice: a ``stalled`` stream (silent past its gap deadline) leaves the
        target out for the rest of the request, as a silent attempt does; a cut one
        (closed, reset, malformed) may be continued there once; after a second cut the
        target is avoided: tried again only once every other candidate is spent
        (:meth:`stop_avoiding`).
        """
        self.last_failure = Failure(error_class=ErrorClass.INTERRUPTED_EXECUTION)
        if forgiven:
            self.free_next = True
            return
        if target_id is None:
            return
        if stalled:
            self.excluded.add(target_id)
        elif target_id in self.cut_once:
            self.avoided.add(target_id)
        else:
            self.cut_once.add(target_id)

    def stop_avoiding(self) -> bool:
        """Every other candidate is spent: let avoided targets be tried again. True
        when that changes anything (there were avoided targets, and still avoiding)."""
        changed = self.avoiding and bool(self.avoided - self.excluded)
        self.avoiding = False
        return changed

    def apply(self, settlement: Settlement) -> None:
        """Carry out the changes :func:`decide` returned."""
        s = settlement
        if s.failure is not None:
            self.last_failure = s.failure
        if s.exclude:
            self.excluded.add(s.target_id)
        if s.exclude_for_model:
            self.excluded_for_model.add((s.target_id, s.model))
        if s.exclude_windowless:
            self.windowless_refused.add(s.model)
        if s.context_limit is not None:
            self.context_limit = s.context_limit
        if s.resend:
            self.retry_next = s.target_id
        if s.refuse_prefill:
            self.prefill_refused.add(s.target_id)
        if s.free_next:
            self.free_next = True
        if s.not_before is not None and s.backoff_rounds is not None:
            self.not_before[s.target_id] = s.not_before
            self.backoff_rounds[s.target_id] = s.backoff_rounds


def decide(
    ledger: Ledger, ended: Ended, *, now: float, backoff: BackoffSettings, rng: random.Random
) -> Settlement:
    """What the request does after ``ended`` (the table in docs/concepts.md, "A request's
    ledger"). Reads ``ledger``, never changes it; ``rng`` draws the backoff jitter."""
    target_id, model = ended.target_id, ended.model
    if ended.cancelled:
        return Settlement(
            decision=Decision.FAILOVER, target_id=target_id, model=model, exclude=True
        )
    failure = ended.failure
    assert failure is not None, "a failed attempt carries its failure"
    error_class = failure.error_class
    recovery = recovery_for(error_class, silent=ended.silent)
    action = recovery.request_action

    def settle(decision: Decision) -> Settlement:
        return Settlement(decision=decision, target_id=target_id, model=model, failure=failure)

    if (
        ledger.resuming
        and error_class is ErrorClass.INVALID_REQUEST
        and ledger.prefills(target_id, ended.prefill_capable)
    ):
        # A refused prefill: resume on the same target with the instruction form.
        return attrs.evolve(
            settle(Decision.RETRY), refuse_prefill=True, resend=True, free_next=True
        )
    if action is RequestAction.RETURN:
        return attrs.evolve(settle(Decision.RETURN), raises=True)
    if ended.fresh_credential:
        return attrs.evolve(settle(Decision.RETRY), resend=True)  # the same target, at once
    if action is RequestAction.SIBLING_OR_FALLBACK:
        if failure.status == 429:
            # Over a per-minute budget: a sibling key may take it.
            return attrs.evolve(settle(Decision.FAILOVER), exclude=True)
        window = ended.context_window
        # Never resend it unchanged to this model on this target; with no known window,
        # no other target of this model is known to be larger either.
        return attrs.evolve(
            settle(Decision.FALLBACK),
            exclude_for_model=True,
            exclude_windowless=window is None,
            context_limit=None if window is None else max(ledger.context_limit or 0, window),
        )
    if action is RequestAction.RETRY_THEN_FAIL_OVER and recovery.retry_same_target:
        # A sibling now if one is eligible, else this one after a backoff delay.
        rounds = ledger.backoff_rounds.get(target_id, 0)
        delay = backoff_delay(backoff, rounds, rng)
        return attrs.evolve(
            settle(Decision.BACKOFF), not_before=now + delay, backoff_rounds=rounds + 1
        )
    if not recovery.retry_same_target:
        return attrs.evolve(settle(Decision.FAILOVER), exclude=True)
    return settle(Decision.COOLDOWN)  # the target cools down; fail over or wait for it


def model_chain(model: str, fallbacks: Mapping[str, Sequence[str]]) -> list[str]:
    """``model`` then its fallbacks (or the ``"*"`` chain), never repeating a model."""
    chain = [model]
    for name in fallbacks.get(model, fallbacks.get("*", ())):
        if name not in chain:
            chain.append(name)
    return chain


@attrs.frozen(kw_only=True)
class Ending:
    """How a request that got no answer ends as AllTargetsFailed: message and class."""

    message: str
    error_class: ErrorClass | None


def give_up(
    ledger: Ledger,
    *,
    shown: str,
    served: bool,
    admitted: bool,
    all_rate_limited: bool,
) -> Failure | Ending:
    """How the request for model ``shown`` (its name as quoted back) ends once its chain
    is spent: a :class:`Failure` to raise as RequestFailed (it was too large for every
    target), else an :class:`Ending` for AllTargetsFailed. ``served``: some target
    serves a model of the chain; ``admitted``: one of them also fits the request;
    ``all_rate_limited``: every candidate left is cooling off a rate limit (the
    sidecar's 429)."""
    last = ledger.last_failure
    last_class = ledger.last_class
    if last is not None and last.error_class is ErrorClass.REQUEST_TOO_LARGE:
        return attrs.evolve(last, message=last.message or "request too large for every target")
    if not served:
        reason = f"no target serves model {shown!r}"
    elif not admitted:
        reason = f"no target serving {shown!r} accepts this request (capabilities/tags)"
    elif ledger.attempts == 0:
        reason = f"no target for {shown!r} became eligible in time"
        if all_rate_limited:
            last_class = ErrorClass.RATE_LIMITED
            reason += " (all rate-limited)"
    else:
        reason = (
            f"all targets failed for {shown!r} after {ledger.attempts} attempt(s)"
            f" (retries {ledger.retries}/{ledger.retry_budget}, failovers "
            f"{ledger.failovers}/{ledger.failover_budget})"
        )
        if last_class is not None:
            reason += f"; last failure: {last_class}"
    return Ending(message=reason, error_class=last_class)


def deadline_message(ledger: Ledger) -> str:
    """The message of the AllTargetsFailed raised when the request's deadline passes."""
    last_class = ledger.last_class
    return f"deadline exceeded after {ledger.attempts} attempt(s)" + (
        f"; last failure: {last_class}" if last_class else ""
    )
