"""One target's tokens in the runtime: the place where an attempt's tokens are reserved
before it is sent and settled against the provider's usage after it ended, and where
the provider's rate-limit headers are learned.

The target actor owns one :class:`TargetTokens` and calls it at three moments: an
order arrives (:meth:`TargetTokens.admit`: may it go, and if so reserve), a reply's
headers are in (:meth:`TargetTokens.learn`), an attempt ended
(:meth:`TargetTokens.settle`). The bookkeeping is the pure
:class:`~oswitch.core.key_budget.KeyBudget`; a budget shared by several replicas
plugs in as another :class:`~oswitch.core.key_budget.AttemptBudget` here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs
import httpx
import trio

from oswitch.config import TargetConfig
from oswitch.core.headroom import Headroom
from oswitch.core.key_budget import BudgetSnapshot, KeyBudget
from oswitch.core.learned_limits import on_engine_clock
from oswitch.core.ratelimit_headers import parse_limits, parse_lowered_limits
from oswitch.core.tokens import TokenEstimate, cost_of
from oswitch.runtime.messages import AttemptOrder, AttemptOutcome, OutcomeKind
from oswitch.runtime.settings import TargetSettings


class TargetTokens:
    """Reserve, settle and learn for one target (its actor is the only caller).

    ``wall_clock`` reads the wall clock (epoch seconds) that providers' reset times
    are on; it is read once per reply, beside trio's clock, to move them over.
    """

    def __init__(
        self,
        target: TargetConfig,
        settings: TargetSettings,
        *,
        wall_clock: Callable[[], float],
    ) -> None:
        self.target = target
        self.learning = settings.learn_limits
        self._wall_clock = wall_clock
        self.budget = KeyBudget(
            tokens=settings.tokens, learn=settings.learn_limits, now=trio.current_time()
        )

    @property
    def limited(self) -> bool:
        """Whether a token budget or a learned view can hold an attempt back."""
        return self.budget.limited

    @property
    def version(self) -> int:
        """Changes whenever a verdict of :meth:`headroom` may have changed (but time)."""
        return self.budget.version

    def headroom(self, estimate: TokenEstimate, now: float) -> Headroom:
        """Whether an attempt of ``estimate`` may go at ``now`` (see core/headroom.py)."""
        return self.budget.check(estimate, now)

    def admit(self, order: AttemptOrder, now: float) -> bool:
        """Reserve ``order``'s estimate if the budgets let it go now; False (nothing
        reserved) when they do not. An order without an estimate always goes."""
        estimate = order.estimate
        if estimate is None:
            return True
        order.reservation = self.budget.reserve(estimate, now)
        return order.reservation is not None

    def release(self, order: AttemptOrder) -> None:
        """Give back what ``order`` reserved: it was not sent after all."""
        reservation, order.reservation = order.reservation, None
        if reservation is not None:
            self.budget.settle(reservation, None, trio.current_time(), consumed=False, sent=False)

    def learn(self, headers: Mapping[str, str]) -> None:
        """Take the limits a reply's headers report; the provider's wall-clock times are
        moved onto trio's clock here, once."""
        if isinstance(headers, httpx.Headers):
            picked = _rate_limit_headers(headers)
            if not picked:
                return  # no rate-limit header at all (the common case of a local server)
            limits = parse_lowered_limits(picked, now=self._wall_clock())
        else:
            limits = parse_limits(headers, now=self._wall_clock())
        if limits.reported:
            self.budget.learn(
                on_engine_clock(limits, wall_now=limits.observed_at, engine_now=trio.current_time())
            )

    def settle(self, order: AttemptOrder, outcome: AttemptOutcome) -> AttemptOutcome:
        """Settle ``order``'s reservation against the usage its reply reported (a
        refusal the provider answered with a status used nothing), count the usage,
        and return the outcome with its cost at the target's prices."""
        reservation, order.reservation = order.reservation, None
        usage, now = outcome.usage, trio.current_time()
        cost = None
        if usage is not None:
            cost = cost_of(
                usage,
                per_million_input=self.target.price_per_million_input,
                per_million_output=self.target.price_per_million_output,
            )
        if reservation is not None:
            classification = outcome.classification
            # REFUSED: never sent (e.g. the fleet's store said no after the local
            # reservation); a provider's answer with a status: sent, but used nothing.
            unsent = outcome.kind is OutcomeKind.REFUSED
            refused = unsent or (
                outcome.kind is OutcomeKind.FAILED
                and classification is not None
                and classification.status is not None
            )
            self.budget.settle(
                reservation, usage, now, consumed=not refused, sent=not unsent, cost=cost
            )
        elif usage is not None:
            self.budget.count(usage, now, cost=cost)
        return outcome if cost is None else attrs.evolve(outcome, cost=cost)

    def snapshot(self, now: float) -> BudgetSnapshot:
        """What the target's listing shows of its tokens."""
        return self.budget.snapshot(now)

    def reconfigure(self, target: TargetConfig, settings: TargetSettings) -> None:
        """Take a reloaded target (its prices, budget and learning)."""
        self.target = target
        self.learning = settings.learn_limits
        self.budget.reconfigure(
            tokens=settings.tokens, learn=settings.learn_limits, now=trio.current_time()
        )


def _rate_limit_headers(headers: httpx.Headers) -> dict[str, str]:
    """What ``headers.items()`` holds of the headers whose names contain "ratelimit"
    (every name :func:`parse_limits` reads does), names in lower case, in one pass
    over the names httpx keeps lowered (``raw`` would build a list and each name be
    lowered again) and decoding only those: a reply carries a dozen others."""
    picked: dict[str, str] = {}
    encoding = ""
    for _, lowered, value in headers._list:
        if b"ratelimit" not in lowered:
            continue
        encoding = encoding or headers.encoding
        key, text = lowered.decode(encoding), value.decode(encoding)
        picked[key] = f"{picked[key]}, {text}" if key in picked else text
    return picked
