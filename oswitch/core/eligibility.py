"""Whether a target may take an attempt now, as plain data: the :class:`Unready`
reasons, in the order they are reported, and the :class:`Eligibility` that
:meth:`oswitch.core.target_health.TargetHealth.eligibility` answers with, with the
readings every caller derives from it (``busy``, ``rate_limited``). Pure: no I/O.
"""

from __future__ import annotations

import enum
import math

import attrs

from oswitch.core.error_class import ErrorClass


class Unready(enum.StrEnum):
    """Why a target may not take an attempt now; :class:`Eligibility` lists them in
    this order."""

    INACTIVE = "inactive"  # Paused, Draining or Disabled: an operator must act
    BLOCKED = "blocked"  # ReauthRequired / PolicyBlocked: an operator or a new key
    QUOTA = "quota"  # until the quota deadline
    COOLING = "cooling"  # until the cooldown ends (per model on a passthrough target)
    BREAKER_OPEN = "breaker_open"  # until the breaker turns HalfOpen
    PROBE_BUSY = "probe_busy"  # HalfOpen, every probe slot taken: a probe must end
    SLOTS_FULL = "slots_full"  # concurrency_limit attempts in flight: one must end
    NO_TOKEN = "no_token"  # the rate_limit bucket is empty: until the next token


EVENT_ONLY: frozenset[Unready] = frozenset(
    {Unready.INACTIVE, Unready.BLOCKED, Unready.PROBE_BUSY, Unready.SLOTS_FULL}
)
"""Reasons no clock ends: an operator, a new key or a finished attempt must."""
_FREED_BY_AN_ATTEMPT = frozenset({Unready.PROBE_BUSY, Unready.SLOTS_FULL})
_NOT_WORTH_WAITING = frozenset({Unready.INACTIVE, Unready.BLOCKED, Unready.QUOTA, Unready.COOLING})
_OUT_OF_SERVICE = frozenset({Unready.INACTIVE, Unready.BLOCKED, Unready.QUOTA})


@attrs.frozen(kw_only=True)
class Eligibility:
    """Whether a target may take an attempt for one model at one moment.

    ``reasons`` holds every :class:`Unready` reason that applies (empty: eligible).
    ``until`` is when it may: ``<= now`` means now, a later time means by the clock
    alone, ``math.inf`` that one of :data:`EVENT_ONLY` must change first. ``probe``:
    an attempt now would be a half-open probe. ``cooling_cause``: the error class the
    cooldown that applies is for (set with ``COOLING``).
    """

    reasons: tuple[Unready, ...] = ()
    until: float = -math.inf
    probe: bool = False
    cooling_cause: ErrorClass | None = None

    @property
    def ok(self) -> bool:
        return not self.reasons

    @property
    def reason(self) -> Unready | None:
        """The first reason in :class:`Unready`'s order, or None when eligible."""
        return self.reasons[0] if self.reasons else None

    @property
    def busy(self) -> bool:
        """Out only because its slots (or its half-open probe) are taken: the end of an
        attempt, not the clock or an operator, makes it eligible again."""
        held = frozenset(self.reasons)
        return bool(held & _FREED_BY_AN_ATTEMPT) and not held & _NOT_WORTH_WAITING

    @property
    def rate_limited(self) -> bool:
        """Out, and in service, while a rate limit's cooldown runs."""
        return (
            self.cooling_cause is ErrorClass.RATE_LIMITED
            and Unready.COOLING in self.reasons
            and not frozenset(self.reasons) & _OUT_OF_SERVICE
        )


# The answer for an eligible target (one shared instance: it is asked very often).
ELIGIBLE = Eligibility()
