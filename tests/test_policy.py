"""The recovery policy table matches DESIGN.md row by row."""

from __future__ import annotations

import pytest

from oswitch.core.error_class import ErrorClass
from oswitch.core.policy import (
    RECOVERY,
    SHORT_COOLDOWN_S,
    SILENT_TARGET_RECOVERY,
    Recovery,
    RequestAction,
    TargetEffect,
    recovery_for,
)

E, T, A = ErrorClass, TargetEffect, RequestAction

# (target effect, breaker failure, request action, retry same target, terminal), per DESIGN.md.
EXPECTED = {
    E.RATE_LIMITED: (T.COOLDOWN, False, A.FAIL_OVER, True, False),
    E.QUOTA_EXHAUSTED: (T.QUOTA_EXHAUSTED, False, A.FAIL_OVER, False, False),
    E.AUTH_FAILURE: (T.REAUTH, False, A.FAIL_OVER, False, False),
    E.PERMISSION_FAILURE: (T.POLICY_BLOCKED, False, A.FAIL_OVER, False, False),
    E.POLICY_FAILURE: (T.NONE, False, A.RETURN, False, True),
    E.REGION_RESTRICTION: (T.POLICY_BLOCKED, False, A.FAIL_OVER, False, False),
    E.MODEL_UNAVAILABLE: (T.SHORT_COOLDOWN, True, A.FAIL_OVER, False, False),
    E.TRANSIENT_SERVER_FAILURE: (T.NONE, True, A.RETRY_THEN_FAIL_OVER, True, False),
    E.TRANSPORT_FAILURE: (T.NONE, True, A.RETRY_THEN_FAIL_OVER, True, False),
    E.INTERRUPTED_EXECUTION: (T.NONE, True, A.RESUME, False, False),
    E.REQUEST_TOO_LARGE: (T.NONE, False, A.SIBLING_OR_FALLBACK, False, False),
    E.INVALID_REQUEST: (T.NONE, False, A.RETURN, False, True),
}


def test_table_covers_every_error_class() -> None:
    """Every one of the 12 error classes has exactly one row, keyed by itself."""
    assert len(ErrorClass) == 12
    assert set(RECOVERY) == set(ErrorClass)
    for error_class, recovery in RECOVERY.items():
        assert recovery.error_class is error_class


@pytest.mark.parametrize("error_class", list(ErrorClass))
def test_row_is_as_design_says(error_class: ErrorClass) -> None:
    """Each row's effect, breaker verdict, action, retry and terminal flags follow DESIGN.md."""
    recovery = recovery_for(error_class)
    actual = (
        recovery.target_effect,
        recovery.breaker_failure,
        recovery.request_action,
        recovery.retry_same_target,
        recovery.terminal,
    )
    assert actual == EXPECTED[error_class]
    assert recovery.summary


def test_lookup_by_class_name_string() -> None:
    """A class name string finds the same row as the enum member."""
    assert recovery_for(ErrorClass("ModelUnavailable")) is RECOVERY[E.MODEL_UNAVAILABLE]


def test_request_faults_never_count_against_the_target() -> None:
    """Faults of the request (content, size, validity) never trip a breaker or touch the target."""
    for error_class in (E.POLICY_FAILURE, E.REQUEST_TOO_LARGE, E.INVALID_REQUEST):
        recovery = recovery_for(error_class)
        assert not recovery.breaker_failure
        assert recovery.target_effect is T.NONE
        assert not recovery.retry_same_target


def test_terminal_exactly_when_returned_to_caller() -> None:
    """A row is terminal if and only if its action returns the error to the caller."""
    for recovery in RECOVERY.values():
        assert recovery.terminal == (recovery.request_action is A.RETURN)


def test_only_rate_limits_and_transient_failures_retry_here() -> None:
    """Only RateLimited, TransientServerFailure and TransportFailure may resend to one target."""
    retrying = {c for c, r in RECOVERY.items() if r.retry_same_target}
    assert retrying == {E.RATE_LIMITED, E.TRANSIENT_SERVER_FAILURE, E.TRANSPORT_FAILURE}


def test_silent_target_fails_over_at_once() -> None:
    """A target silent past the first-byte limit is a breaker failure, failed over, not retried."""
    recovery = recovery_for(E.TRANSPORT_FAILURE, silent=True)
    assert recovery is SILENT_TARGET_RECOVERY
    assert recovery == Recovery(
        error_class=E.TRANSPORT_FAILURE,
        target_effect=T.NONE,
        breaker_failure=True,
        request_action=A.FAIL_OVER,
        retry_same_target=False,
        terminal=False,
        summary=recovery.summary,
    )


def test_silent_only_applies_to_transport_failures() -> None:
    """silent=True with any other class raises ValueError."""
    with pytest.raises(ValueError, match="silent applies only to TransportFailure"):
        recovery_for(E.RATE_LIMITED, silent=True)


def test_unknown_class_raises_key_error() -> None:
    """A value that is no error class raises KeyError."""
    with pytest.raises(KeyError):
        recovery_for("Nonsense")  # type: ignore[arg-type]


def test_short_cooldown_is_a_few_seconds() -> None:
    """ModelUnavailable's short cooldown is positive and well under a request deadline."""
    assert 0.0 < SHORT_COOLDOWN_S <= 30.0


def test_table_is_read_only() -> None:
    """The table cannot be changed at runtime."""
    with pytest.raises(TypeError):
        RECOVERY[E.RATE_LIMITED] = RECOVERY[E.INVALID_REQUEST]  # type: ignore[index]
