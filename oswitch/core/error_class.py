"""The error classes every failure is sorted into."""

from __future__ import annotations

import enum


class ErrorClass(enum.StrEnum):
    """What went wrong with one attempt, spelled exactly as DESIGN.md names it.

    The first ten are o-switcher's; ``RequestTooLarge`` and ``InvalidRequest`` are
    oswitch's own, for faults of the request rather than of the target.
    """

    RATE_LIMITED = "RateLimited"
    QUOTA_EXHAUSTED = "QuotaExhausted"
    AUTH_FAILURE = "AuthFailure"
    PERMISSION_FAILURE = "PermissionFailure"
    POLICY_FAILURE = "PolicyFailure"
    REGION_RESTRICTION = "RegionRestriction"
    MODEL_UNAVAILABLE = "ModelUnavailable"
    TRANSIENT_SERVER_FAILURE = "TransientServerFailure"
    TRANSPORT_FAILURE = "TransportFailure"
    INTERRUPTED_EXECUTION = "InterruptedExecution"
    REQUEST_TOO_LARGE = "RequestTooLarge"
    INVALID_REQUEST = "InvalidRequest"
