"""What a fleet's shared store says keeps a target out (``oswitch.fleet``), in the
terms of the target's health rules. Pure data."""

from __future__ import annotations

import math

import attrs

from oswitch.core.error_class import ErrorClass


@attrs.frozen(kw_only=True)
class SharedHold:
    """What a fleet's shared store says keeps this target out, on this replica's
    clock (``oswitch.fleet`` converts the store's times): a cooldown or quota
    deadline another replica saw, the fleet's breaker open (or its half-open probe
    lease held by another replica), the shared bucket empty. ``-inf``: nothing."""

    cool_until: float = -math.inf
    cool_cause: ErrorClass = ErrorClass.RATE_LIMITED
    quota_until: float = -math.inf
    open_until: float = -math.inf
    no_token_until: float = -math.inf


NO_HOLD = SharedHold()
