"""Error bodies with honest HTTP status codes for oswitch's errors: OpenAI-shaped, and
Anthropic-shaped for the Messages endpoint (same statuses and Retry-After)."""

from __future__ import annotations

import math
from typing import Any

import attrs

from oswitch.core.error_class import ErrorClass
from oswitch.errors import AllTargetsFailed, Overloaded, RequestFailed, SwitcherError


@attrs.frozen(kw_only=True)
class HttpError:
    """An error as the sidecar answers it: status, OpenAI error JSON, extra headers."""

    status: int
    message: str
    type: str
    code: str | None = None
    param: str | None = None
    retry_after: float | None = None

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> list[tuple[bytes, bytes]]:
        if self.retry_after is None:
            return []
        return [(b"retry-after", str(max(1, math.ceil(self.retry_after))).encode())]


def http_error_for(error: SwitcherError) -> HttpError:
    """Map an oswitch error to its status code.

    Overloaded → 503 (Retry-After); AllTargetsFailed → 504 on the deadline, 503
    ``no_api_key`` when no target for the model has a key, 429 when the last failure
    was a rate limit (Retry-After = earliest free target), 503 when nothing was tried
    because nothing became eligible, else 502; RequestFailed → 404 ``model_not_found``
    for a model no target serves (the switcher's status 404), else 400 with the
    provider's reason (an unresumable stream: 502).
    """
    if isinstance(error, Overloaded):
        return HttpError(
            status=503,
            message=str(error),
            type="overloaded",
            code="overloaded",
            retry_after=error.retry_after,
        )
    if isinstance(error, AllTargetsFailed):
        error_class = error.error_class
        if error.deadline_exceeded:
            return HttpError(
                status=504,
                message=str(error),
                type="timeout",
                code="deadline_exceeded",
                retry_after=error.retry_after,
            )
        if error.missing_keys:
            # Not a moment's unavailability: nothing changes until someone sets a key.
            return HttpError(status=503, message=str(error), type="unavailable", code="no_api_key")
        if error_class is ErrorClass.RATE_LIMITED:
            return HttpError(
                status=429,
                message=str(error),
                type="rate_limit_error",
                code=str(error_class),
                retry_after=error.retry_after,
            )
        if error.attempts == 0:
            return HttpError(
                status=503,
                message=str(error),
                type="unavailable",
                code="no_eligible_target",
                retry_after=error.retry_after,
            )
        return HttpError(
            status=502,
            message=str(error),
            type="upstream_error",
            code=None if error_class is None else str(error_class),
            retry_after=error.retry_after,
        )
    if isinstance(error, RequestFailed):
        if error.error_class is ErrorClass.INVALID_REQUEST and error.status == 404:
            # OpenAI's own answer to an unknown model, so SDKs treat it as theirs.
            return HttpError(
                status=404,
                message=error.message,
                type="invalid_request_error",
                code="model_not_found",
            )
        if error.error_class is ErrorClass.INTERRUPTED_EXECUTION:
            return HttpError(
                status=502,
                message=error.message,
                type="upstream_error",
                code=str(error.error_class),
            )
        return HttpError(
            status=400,
            message=error.message,
            type="invalid_request_error",
            code=str(error.error_class),
        )
    return HttpError(status=500, message=str(error), type="server_error", code="internal")


def bad_request(
    message: str, *, param: str | None = None, code: str = "invalid_request"
) -> HttpError:
    return HttpError(
        status=400, message=message, type="invalid_request_error", code=code, param=param
    )


def internal_error(request_id: str) -> HttpError:
    """Our fault, not the caller's: the details are in the log, under the request id."""
    return HttpError(
        status=500,
        message=f"internal error; the gateway logged it as handler_failed for {request_id}",
        type="server_error",
        code="internal_error",
    )


# Anthropic's error types by the status the sidecar answers (its SDKs pick the
# exception class by status; the type is for the reader).
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error_type(status: int) -> str:
    """Anthropic's error type for an answer of ``status`` (any other 4xx is an
    invalid request, any other 5xx an api_error)."""
    return ANTHROPIC_ERROR_TYPES.get(
        status, "invalid_request_error" if status < 500 else "api_error"
    )


def anthropic_body(error: HttpError) -> dict[str, Any]:
    """``error`` as Anthropic's error object (the chat endpoint's status and headers;
    oswitch's own code is the chat endpoint's only: Anthropic's object has no place)."""
    return {
        "type": "error",
        "error": {"type": anthropic_error_type(error.status), "message": error.message},
    }
