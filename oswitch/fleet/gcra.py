"""GCRA, the generic cell rate algorithm: a rate limit held as one number.

The state of a limit is its theoretical arrival time ``tat``: when the bucket would
be full again. With ``interval = 1/rate`` and ``tolerance = interval * burst``, a
request costing ``cost`` is allowed at ``now`` when ``max(tat, now) + interval*cost
- tolerance <= now``; then ``tat`` moves to that sum. Otherwise it is denied and may
retry after exactly the difference. No refill task, a rolling window, an exact
retry-after.

The same arithmetic runs inside the store's admission script (``scripts.ADMIT``),
in microseconds on the store's clock; this pure copy is its property-test oracle and
the per-replica limiter used while the store is unreachable. Time is passed in.
"""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class GcraLimit:
    """``rate`` units per second, at most ``burst`` at once."""

    rate: float
    burst: float

    @property
    def interval(self) -> float:
        return 1.0 / self.rate

    @property
    def tolerance(self) -> float:
        return self.interval * self.burst

    def scaled(self, share: float) -> GcraLimit:
        """This limit's ``share`` (0 < share <= 1): rate and burst scaled, burst at
        least 1 so a replica can still send."""
        return GcraLimit(rate=self.rate * share, burst=max(1.0, self.burst * share))


@attrs.frozen(kw_only=True)
class Verdict:
    """Allowed, or denied with ``retry_after`` seconds to wait."""

    allowed: bool
    retry_after: float = 0.0


def gcra_check(
    limit: GcraLimit, tat: float | None, now: float, cost: float
) -> tuple[Verdict, float | None]:
    """Decide one request of ``cost`` units against ``tat`` (None: never used).

    Returns the verdict and the new ``tat`` (unchanged when denied). A cost above
    the burst is charged as the burst: it waits for a full bucket, never forever.
    """
    cost = min(cost, limit.burst)
    base = now if tat is None or tat < now else tat
    new = base + limit.interval * cost
    allow_at = new - limit.tolerance
    if allow_at > now:
        return Verdict(allowed=False, retry_after=allow_at - now), tat
    return Verdict(allowed=True), new


def gcra_adjust(limit: GcraLimit, tat: float | None, now: float, delta: float) -> float | None:
    """Settle ``delta`` units after the fact (negative refunds), never below ``now``."""
    if tat is None:
        return None if delta <= 0 else now + limit.interval * delta
    return max(now, tat + limit.interval * delta)


class LocalGcra:
    """A replica's own GCRA limiter (while the store is unreachable). Mutable, one
    writer (the replica's link); time passed in."""

    def __init__(self, limit: GcraLimit) -> None:
        self.limit = limit
        self.tat: float | None = None

    def take(self, now: float, cost: float = 1.0) -> Verdict:
        verdict, self.tat = gcra_check(self.limit, self.tat, now, cost)
        return verdict

    def check(self, now: float, cost: float = 1.0) -> Verdict:
        """The verdict :meth:`take` would give, changing nothing."""
        return gcra_check(self.limit, self.tat, now, cost)[0]

    def adjust(self, now: float, delta: float) -> None:
        self.tat = gcra_adjust(self.limit, self.tat, now, delta)
