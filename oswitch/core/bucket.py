"""A token bucket: a target's own request rate (or token rate), refilled continuously.

This is a rate limit, not a concurrency cap (that is the actor's limiter). The
bucket only answers "may I take now, and if not, how long until I may"; the actor
does any waiting. A token budget takes an estimate before an attempt and is
corrected after it (:meth:`TokenBucket.adjust`): a charge past what is left leaves
the bucket in debt, down to ``-burst``, which later takes wait out.
"""

from __future__ import annotations

import math

import attrs

# Refill arithmetic on float timestamps loses a few ulps, so "wait the returned time,
# then take" could miss by a hair; accept takes that fall short by this much.
_RELATIVE_SLACK = 1e-9
_ULP_SLACK = 8


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a finite number > 0 (got {value})")


@attrs.frozen(kw_only=True)
class BucketStatistics:
    """A snapshot of a bucket at one moment."""

    rate_per_s: float
    burst: float
    available: float
    tokens_taken: float
    takes_granted: int
    takes_refused: int


# Validated on construction only (as documented): an attribute set afterwards goes
# straight in, without attrs' per-assignment hook (every take sets several).
@attrs.define(on_setattr=attrs.setters.NO_OP)
class TokenBucket:
    """Holds up to ``burst`` tokens, refilled at ``rate_per_s``; starts full at ``now``.

    A ``now`` earlier than the latest one seen counts as no time passing.
    Raises ``ValueError`` on construction unless ``rate_per_s`` and ``burst`` are
    finite and > 0.
    """

    rate_per_s: float = attrs.field(validator=_positive)
    burst: float = attrs.field(validator=_positive)
    _last: float = attrs.field(alias="now")
    _tokens: float = attrs.field(init=False)
    _taken: float = attrs.field(init=False, default=0.0)
    _granted: int = attrs.field(init=False, default=0)
    _refused: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self._tokens = self.burst

    def available(self, now: float) -> float:
        """Tokens in the bucket at ``now``: at most ``burst``; below 0 only while a
        charge made with :meth:`adjust` is being paid back. Never raises."""
        elapsed = max(0.0, now - self._last)
        return min(self.burst, self._tokens + elapsed * self.rate_per_s)

    def wait_time(self, now: float, tokens: float = 1.0) -> float:
        """Seconds from ``now`` until ``tokens`` are available (0.0 if they are); takes nothing.

        Raises ``ValueError`` when ``tokens`` is negative or more than ``burst``
        (such a take could never succeed).
        """
        self._check(tokens)
        deficit = tokens - self.available(now)
        if deficit <= self._slack(now):
            return 0.0
        # Refill runs from the latest time seen, which is later than ``now`` when the
        # caller's clock stepped back.
        ready_at = max(now, self._last) + deficit / self.rate_per_s
        return max(0.0, ready_at - now)

    def try_take(self, now: float, tokens: float = 1.0) -> float:
        """Take ``tokens`` and return 0.0 if they are there; else take nothing and
        return the seconds until they will be (as :meth:`wait_time`).

        Raises ``ValueError`` when ``tokens`` is negative or more than ``burst``.
        """
        wait = self.wait_time(now, tokens)
        if wait > 0.0:
            self._refused += 1
            return wait
        self._tokens = max(0.0, self.available(now) - tokens)
        self._last = max(self._last, now)
        self._taken += tokens
        self._granted += 1
        return 0.0

    def adjust(self, now: float, tokens: float) -> None:
        """Correct an earlier take by ``tokens``: charge more (> 0) or refund (< 0).

        A refund never fills the bucket past ``burst``; a charge may leave it in
        debt, never below ``-burst``. Never raises (a non-finite amount is ignored).
        """
        if not math.isfinite(tokens):
            return
        level = self.available(now) - tokens
        self._tokens = min(self.burst, max(-self.burst, level))
        self._last = max(self._last, now)
        self._taken = max(0.0, self._taken + tokens)

    def reconfigure(self, now: float, *, rate_per_s: float, burst: float) -> None:
        """Change rate and burst (a config reload), keeping the tokens already earned.

        Raises ``ValueError`` unless both are finite and > 0 (the bucket is unchanged then).
        """
        changed = attrs.evolve(self, rate_per_s=rate_per_s, burst=burst, now=now)
        tokens = self.available(now)
        self.rate_per_s = changed.rate_per_s
        self.burst = changed.burst
        self._tokens = min(changed.burst, tokens)
        self._last = max(self._last, now)

    def statistics(self, now: float) -> BucketStatistics:
        """A snapshot at ``now``. Never raises."""
        return BucketStatistics(
            rate_per_s=self.rate_per_s,
            burst=self.burst,
            available=self.available(now),
            tokens_taken=self._taken,
            takes_granted=self._granted,
            takes_refused=self._refused,
        )

    def _check(self, tokens: float) -> None:
        if not 0.0 <= tokens <= self.burst:
            raise ValueError(f"tokens must be between 0 and burst={self.burst} (got {tokens})")

    def _slack(self, now: float) -> float:
        scale = max(abs(now), abs(self._last), 1.0)
        return self.burst * _RELATIVE_SLACK + self.rate_per_s * _ULP_SLACK * math.ulp(scale)
