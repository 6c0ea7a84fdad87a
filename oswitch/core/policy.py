"""The recovery policy table: what each error class does to the target and to the request.

This module is the one place the table in DESIGN.md ("Error classes and what each
does") lives in code. The target actor applies ``target_effect`` and
``breaker_failure``; the dispatcher applies ``request_action``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

import attrs

from oswitch.core.error_class import ErrorClass

SHORT_COOLDOWN_S = 5.0
"""Seconds a target (or, for a passthrough target, that one model on it) sits out after
ModelUnavailable: long enough for an overloaded model to shed load, short enough that a
briefly missing model is back within a request's deadline."""


class TargetEffect(enum.StrEnum):
    """What a failure does to the target that produced it."""

    NONE = "None"
    COOLDOWN = "Cooldown"
    """Cool down until the provider's delay, else for a backoff delay."""
    SHORT_COOLDOWN = "ShortCooldown"
    """Cool down for :data:`SHORT_COOLDOWN_S`."""
    QUOTA_EXHAUSTED = "QuotaExhausted"
    """Ineligible until resumed, or until the provider's delay or the quota cooldown ends."""
    REAUTH = "Reauth"
    """Re-read the credential once; if it did not change → ReauthRequired."""
    POLICY_BLOCKED = "PolicyBlocked"
    """Ineligible until an operator resumes it."""


class RequestAction(enum.StrEnum):
    """What the dispatcher does with the request after the failure."""

    FAIL_OVER = "FailOver"
    """Move to the next eligible target now."""
    RETRY_THEN_FAIL_OVER = "RetryThenFailOver"
    """Fail over to an eligible sibling; back off and retry this target only if none is."""
    RETURN = "Return"
    """Terminal: raise to the caller as is, no retry anywhere."""
    RESUME = "Resume"
    """Resume the stream on the next target from the chunks the caller already has."""
    SIBLING_OR_FALLBACK = "SiblingOrFallback"
    """Never resend unchanged to the same model: a per-minute-limit refusal may go to a
    sibling key, a context refusal walks ``fallbacks``; else RequestFailed."""


@attrs.frozen(kw_only=True)
class Recovery:
    """One row of the recovery table."""

    error_class: ErrorClass
    target_effect: TargetEffect
    breaker_failure: bool
    request_action: RequestAction
    retry_same_target: bool
    """Whether this request may be sent to the same target again (costing retry_budget)."""
    terminal: bool
    """Whether the request ends here with ``RequestFailed``."""
    summary: str


def _row(
    error_class: ErrorClass,
    target_effect: TargetEffect,
    request_action: RequestAction,
    *,
    breaker_failure: bool,
    retry_same_target: bool,
    summary: str,
) -> tuple[ErrorClass, Recovery]:
    recovery = Recovery(
        error_class=error_class,
        target_effect=target_effect,
        breaker_failure=breaker_failure,
        request_action=request_action,
        retry_same_target=retry_same_target,
        terminal=request_action is RequestAction.RETURN,
        summary=summary,
    )
    return error_class, recovery


_E = ErrorClass
_T = TargetEffect
_A = RequestAction

RECOVERY: Mapping[ErrorClass, Recovery] = MappingProxyType(
    dict(
        [
            _row(
                _E.RATE_LIMITED,
                _T.COOLDOWN,
                _A.FAIL_OVER,
                breaker_failure=False,
                # Once its cooldown ends the same target is fair game again: with no
                # other target eligible, the request waits for the earliest one.
                retry_same_target=True,
                summary="cool down until the provider's delay, else backoff; fail over now, "
                "or wait for the earliest eligible target within the deadline",
            ),
            _row(
                _E.QUOTA_EXHAUSTED,
                _T.QUOTA_EXHAUSTED,
                _A.FAIL_OVER,
                breaker_failure=False,
                retry_same_target=False,
                summary="target QuotaExhausted until resumed or a long cooldown ends; fail over",
            ),
            _row(
                _E.AUTH_FAILURE,
                _T.REAUTH,
                _A.FAIL_OVER,
                breaker_failure=False,
                retry_same_target=False,
                summary="refresh the credential once, again → ReauthRequired; fail over",
            ),
            _row(
                _E.PERMISSION_FAILURE,
                _T.POLICY_BLOCKED,
                _A.FAIL_OVER,
                breaker_failure=False,
                retry_same_target=False,
                summary="target PolicyBlocked; fail over, no retry here",
            ),
            _row(
                _E.POLICY_FAILURE,
                _T.NONE,
                _A.RETURN,
                breaker_failure=False,
                retry_same_target=False,
                summary="the request's content was refused; return to the caller with the reason",
            ),
            _row(
                _E.REGION_RESTRICTION,
                _T.POLICY_BLOCKED,
                _A.FAIL_OVER,
                breaker_failure=False,
                retry_same_target=False,
                summary="target PolicyBlocked; fail over",
            ),
            _row(
                _E.MODEL_UNAVAILABLE,
                _T.SHORT_COOLDOWN,
                _A.FAIL_OVER,
                breaker_failure=True,
                retry_same_target=False,
                summary="short cooldown and a breaker failure; fail over immediately",
            ),
            _row(
                _E.TRANSIENT_SERVER_FAILURE,
                _T.NONE,
                _A.RETRY_THEN_FAIL_OVER,
                breaker_failure=True,
                retry_same_target=True,
                summary="breaker failure; fail over to a sibling, else retry with backoff",
            ),
            _row(
                _E.TRANSPORT_FAILURE,
                _T.NONE,
                _A.RETRY_THEN_FAIL_OVER,
                breaker_failure=True,
                retry_same_target=True,
                summary="breaker failure; fail over to a sibling, else retry with backoff "
                "(a target silent past the first-byte limit: see SILENT_TARGET_RECOVERY)",
            ),
            _row(
                _E.INTERRUPTED_EXECUTION,
                _T.NONE,
                _A.RESUME,
                breaker_failure=True,
                retry_same_target=False,
                summary="breaker failure; resume on the next target from the confirmed chunks",
            ),
            _row(
                _E.REQUEST_TOO_LARGE,
                _T.NONE,
                _A.SIBLING_OR_FALLBACK,
                breaker_failure=False,
                retry_same_target=False,
                summary="never resent unchanged to the same model: a sibling key for a "
                "per-minute limit, fallbacks for a context window; else RequestFailed",
            ),
            _row(
                _E.INVALID_REQUEST,
                _T.NONE,
                _A.RETURN,
                breaker_failure=False,
                retry_same_target=False,
                summary="the request's own fault; return to the caller as is",
            ),
        ]
    )
)
"""Every :class:`ErrorClass` mapped to its :class:`Recovery`."""

SILENT_TARGET_RECOVERY: Recovery = attrs.evolve(
    RECOVERY[ErrorClass.TRANSPORT_FAILURE],
    request_action=RequestAction.FAIL_OVER,
    retry_same_target=False,
    summary="no headers or first token in time: breaker failure; fail over at once, "
    "never wait twice on a silent target",
)
"""TransportFailure when the target was abandoned for silence (first-byte limit)."""


def recovery_for(error_class: ErrorClass, *, silent: bool = False) -> Recovery:
    """The recovery row for ``error_class``.

    ``silent=True`` marks a TransportFailure where the target never started answering
    before the first-byte limit, which is failed over at once and never retried.
    Raises ``KeyError`` for a value that is not an :class:`ErrorClass` member, and
    ``ValueError`` when ``silent`` is given with any class but TransportFailure.
    """
    recovery = RECOVERY[error_class]
    if silent:
        if error_class != ErrorClass.TRANSPORT_FAILURE:
            raise ValueError(f"silent applies only to TransportFailure (got {error_class})")
        return SILENT_TARGET_RECOVERY
    return recovery
