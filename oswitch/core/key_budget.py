"""One key's token budget: reserve an attempt's estimate before it is sent, settle it
against the real usage after, and account for what the key used.

This is the one place where "reserve tokens for this attempt" and "settle the
attempt's usage" happen. :class:`AttemptBudget` is that interface; :class:`KeyBudget`
is the in-process implementation the target actor owns, and a store shared by
several replicas implements the same four methods (it takes the same
:class:`~oswitch.core.tokens.TokenEstimate` and settles with the same
:class:`~oswitch.core.tokens.Usage`).

What limits a key (:mod:`oswitch.core.headroom` decides, the stricter wins):

- its configured token bucket (``rate_limit.tokens_per_minute`` / ``burst_tokens``):
  the estimate is taken at reserve; at settle the difference between estimate and
  the usage the provider counted is charged or refunded (a charge may leave the
  bucket in debt, which later requests wait out);
- the provider's own view, learned from its rate-limit headers
  (:class:`~oswitch.core.learned_limits.LearnedLimits`), less what was sent since.

The configured request bucket (``requests_per_minute``) stays with the target's
health (:mod:`oswitch.core.target_health`): it gates every attempt, whatever its size.

Pure: no trio, no I/O; time (the engine's clock) is passed in.
"""

from __future__ import annotations

import math
from typing import Protocol

import attrs

from oswitch.core.bucket import TokenBucket
from oswitch.core.headroom import ConfiguredLimits, Headroom, budget_of, headroom
from oswitch.core.immutable import immutable
from oswitch.core.learned_limits import LearnedLimits
from oswitch.core.ratelimit_headers import ProviderLimits
from oswitch.core.target_health import RateLimit
from oswitch.core.tokens import Settlement, TokenEstimate, Usage, settle

__all__ = [
    "USAGE_WINDOW_S",
    "AttemptBudget",
    "BudgetSnapshot",
    "KeyBudget",
    "Reservation",
    "UsageTotals",
]

# tokens_per_minute in listings: tokens the provider counted over this many seconds,
# kept in one-second slots (a fixed 60 of them, whatever the request rate).
USAGE_WINDOW_S = 60


@immutable(kw_only=True)
class Reservation:
    """What one attempt reserved on a key: its ``estimate`` (``tokens`` of it taken
    from the configured bucket; 0 when none is configured)."""

    estimate: TokenEstimate
    tokens: int


class AttemptBudget(Protocol):
    """Reserve and settle one attempt's tokens on one key (time on the engine's clock).

    ``check`` says whether an attempt of ``estimate`` may go now (and if not, from
    when, or that it never may: ``too_large``); ``reserve`` does the same and, when
    it may, takes the estimate and returns the reservation (None: nothing taken);
    ``settle`` closes a reservation with the usage the reply reported (None: none
    reported; ``consumed`` False: the provider refused the request, so nothing was
    used; ``sent`` False: it never left, e.g. refused after reserving); ``learn``
    takes the limits one reply reported.
    """

    def check(self, estimate: TokenEstimate, now: float) -> Headroom: ...

    def reserve(self, estimate: TokenEstimate, now: float) -> Reservation | None: ...

    def settle(
        self,
        reservation: Reservation,
        usage: Usage | None,
        now: float,
        *,
        consumed: bool,
        sent: bool = True,
    ) -> Settlement: ...

    def learn(self, limits: ProviderLimits) -> None: ...


@immutable(kw_only=True)
class UsageTotals:
    """Tokens a key used since it started, as its provider reported them, and what
    they cost (None while no priced usage was counted)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost: float | None = None


@attrs.frozen(kw_only=True)
class BudgetSnapshot:
    """What a listing shows of a key's tokens at one moment.

    ``tokens_per_minute``: tokens the provider counted over the last
    :data:`USAGE_WINDOW_S` seconds; ``totals``: since start; ``configured_available``:
    tokens left in the configured bucket (None when none is configured); ``learned``:
    the provider's latest view (resets on the engine's clock), None until one came.
    """

    tokens_per_minute: int
    totals: UsageTotals
    configured_available: float | None
    learned: ProviderLimits | None


def _bucket(tokens: RateLimit | None, now: float) -> TokenBucket | None:
    if tokens is None:
        return None
    return TokenBucket(rate_per_s=tokens.rate_per_s, burst=float(tokens.burst), now=now)


class KeyBudget:
    """The in-process :class:`AttemptBudget` of one key. ``tokens``: the configured
    token bucket (None: none); ``learn``: take the provider's headers into account.
    The target's actor is its only writer."""

    def __init__(self, *, tokens: RateLimit | None, learn: bool, now: float) -> None:
        self._tokens_setting = tokens
        self._bucket = _bucket(tokens, now)
        self._learn = learn
        self.learned = LearnedLimits()
        self._totals = UsageTotals()
        self._slots = [0] * USAGE_WINDOW_S
        self._slot_second = [-1] * USAGE_WINDOW_S
        # Bumped by every change that can alter a verdict, so a reader may keep a
        # verdict for one moment until the budget changes (routing reads it often).
        self.version = 0
        # The last verdict of check(), by (estimate, moment, version): routing judges
        # a request, then reserve judges the same request at the same moment again.
        self._kept: tuple[TokenEstimate, float, int, Headroom] | None = None

    @property
    def limited(self) -> bool:
        """Whether anything can hold an attempt back (a bucket, or a learned view)."""
        return self._bucket is not None or self.learned.view is not None

    # ---- AttemptBudget -------------------------------------------------------------

    def check(self, estimate: TokenEstimate, now: float) -> Headroom:
        """See :class:`AttemptBudget`. Never raises.

        The verdict is a function of the estimate, the moment and the budget's state,
        and ``version`` changes with that state: asked again about the same estimate
        at the same moment and version, the kept verdict is the answer."""
        kept = self._kept
        if kept is not None and kept[0] is estimate and kept[1] == now and kept[2] == self.version:
            return kept[3]
        verdict = self.judge(estimate, now)
        self._kept = (estimate, now, self.version, verdict)
        return verdict

    def judge(self, estimate: TokenEstimate, now: float) -> Headroom:
        """The verdict of :meth:`check`, worked out afresh (never kept). Never raises."""
        if not self.limited:
            return Headroom(can_take=True, ready_at=now, too_large=False, binding=None, spare=1.0)
        configured = None
        if self._bucket is not None:
            configured = ConfiguredLimits(tokens=budget_of(self._bucket, now))
        learned = self.learned
        return headroom(
            estimate=estimate,
            now=now,
            learned=learned.view,
            configured=configured,
            sent_requests=learned.sent_requests,
            sent_tokens=learned.sent_tokens,
            continuous=learned.continuous,
        )

    def reserve(self, estimate: TokenEstimate, now: float) -> Reservation | None:
        """See :class:`AttemptBudget`. Never raises."""
        if not self.limited:
            # Nothing can hold it back, nothing is counted: only the reservation.
            self.version += 1
            return Reservation(estimate=estimate, tokens=0)
        if not self.check(estimate, now).can_take:
            return None
        taken = 0
        if self._bucket is not None:
            taken = min(estimate.total_tokens, math.floor(self._bucket.burst))
            self._bucket.try_take(now, taken)
        self.learned.record_sent(estimate)
        self.version += 1
        return Reservation(estimate=estimate, tokens=taken)

    def settle(
        self,
        reservation: Reservation,
        usage: Usage | None,
        now: float,
        *,
        consumed: bool,
        sent: bool = True,
        cost: float | None = None,
    ) -> Settlement:
        """See :class:`AttemptBudget`: the bucket is charged or refunded the
        difference, and the usage (and its ``cost``) counted for the listing; an
        attempt not ``sent`` after all is also taken back out of what the learned view
        counts as sent since its last report. Never raises."""
        self.version += 1
        if not sent:
            self.learned.unrecord_sent(reservation.estimate)
        settlement = settle(reservation.estimate, usage)
        if not consumed and usage is None:
            settlement = Settlement(reserved=settlement.reserved, used=0)
        if self._bucket is not None:
            self._bucket.adjust(now, settlement.used - reservation.tokens)
        if usage is not None:
            self.count(usage, now, cost=cost)
        return settlement

    def learn(self, limits: ProviderLimits) -> None:
        """See :class:`AttemptBudget` (``limits`` already on the engine's clock)."""
        if self._learn:
            self.learned.observe(limits)
            self.version += 1

    # ---- accounting ------------------------------------------------------------------

    def count(self, usage: Usage, now: float, *, cost: float | None = None) -> None:
        """Account for ``usage`` (and its ``cost``) with no reservation to settle."""
        totals = self._totals
        spent = totals.cost
        if cost is not None:
            spent = cost if spent is None else spent + cost
        self._totals = UsageTotals(
            prompt_tokens=totals.prompt_tokens + usage.prompt_tokens,
            completion_tokens=totals.completion_tokens + usage.completion_tokens,
            cached_tokens=totals.cached_tokens + usage.cached_tokens,
            cost=spent,
        )
        second = math.floor(now)
        slot = second % USAGE_WINDOW_S
        if self._slot_second[slot] != second:
            self._slot_second[slot] = second
            self._slots[slot] = 0
        self._slots[slot] += usage.counted_tokens

    def tokens_per_minute(self, now: float) -> int:
        """Tokens counted in the last :data:`USAGE_WINDOW_S` seconds (whole seconds)."""
        second = math.floor(now)
        return sum(
            count
            for count, at in zip(self._slots, self._slot_second, strict=True)
            if 0 <= second - at < USAGE_WINDOW_S
        )

    def snapshot(self, now: float) -> BudgetSnapshot:
        """What a listing shows at ``now``. Never raises."""
        return BudgetSnapshot(
            tokens_per_minute=self.tokens_per_minute(now),
            totals=self._totals,
            configured_available=None if self._bucket is None else self._bucket.available(now),
            learned=self.learned.view,
        )

    def reconfigure(self, *, tokens: RateLimit | None, learn: bool, now: float) -> None:
        """Take reloaded settings: a bucket whose rate or size changed starts afresh;
        turning learning off forgets the learned view."""
        self.version += 1
        if tokens != self._tokens_setting:
            self._tokens_setting = tokens
            self._bucket = _bucket(tokens, now)
        self._learn = learn
        if not learn:
            self.learned = LearnedLimits()
