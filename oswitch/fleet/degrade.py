"""The store's own breaker: when to stop asking the store, and when to ask again.

Pure bookkeeping, time passed in. After ``threshold`` consecutive failed store calls
(errors or timeouts) it opens: requests skip the store (no request pays the store's
timeout) and the link's prober asks again every ``retry_s``; one success closes it.
"""

from __future__ import annotations

import attrs

# Consecutive failed store calls that trip the store breaker (fixed constant).
STORE_FAILURES_TO_TRIP = 3
# While tripped, how often the store is probed (fixed constant, seconds).
STORE_RETRY_S = 1.0


@attrs.frozen(kw_only=True)
class StoreHealth:
    """A snapshot: ``degraded`` while tripped, since ``degraded_since`` (trio time)."""

    degraded: bool
    degraded_since: float | None
    consecutive_failures: int
    trips: int
    failures: int
    last_error: str


@attrs.define
class StoreBreaker:
    threshold: int = STORE_FAILURES_TO_TRIP
    retry_s: float = STORE_RETRY_S
    degraded: bool = False
    degraded_since: float | None = None
    consecutive: int = 0
    trips: int = 0
    failures: int = 0
    last_error: str = ""

    def record_ok(self) -> bool:
        """A store call succeeded; True when that ends a degraded spell."""
        self.consecutive = 0
        recovered = self.degraded
        self.degraded = False
        self.degraded_since = None
        return recovered

    def record_error(self, now: float, error: str) -> bool:
        """A store call failed; True when that trips the breaker."""
        self.failures += 1
        self.consecutive += 1
        self.last_error = error
        if self.degraded or self.consecutive < self.threshold:
            return False
        self.degraded = True
        self.degraded_since = now
        self.trips += 1
        return True

    def trip(self, now: float, error: str) -> bool:
        """Trip at once (the store could not even be reached at start)."""
        self.consecutive = max(self.consecutive, self.threshold - 1)
        return self.record_error(now, error)

    def statistics(self) -> StoreHealth:
        return StoreHealth(
            degraded=self.degraded,
            degraded_since=self.degraded_since,
            consecutive_failures=self.consecutive,
            trips=self.trips,
            failures=self.failures,
            last_error=self.last_error,
        )
