"""The typed errors oswitch raises at its public boundary.

Every error derives from :class:`SwitcherError`. Errors about one request carry
its ``request_id`` so the caller can fetch the full trace with
``Switcher.inspect_request``. Messages never contain API keys: provider text is
scrubbed of configured key values before it is stored here.
"""

from __future__ import annotations

from collections.abc import Sequence

from oswitch.core.error_class import ErrorClass


class SwitcherError(Exception):
    """Base class of every error oswitch raises."""

    request_id: str | None

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class Overloaded(SwitcherError):
    """Admission refused the request at once: the queue is full.

    ``retry_after`` is a hint in seconds for when capacity may be free again.
    """

    def __init__(
        self, message: str, *, request_id: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.retry_after = retry_after


class AllTargetsFailed(SwitcherError):
    """Budgets or the deadline ran out, or no target became eligible in time.

    ``error_class`` is the class of the last failure (None when no attempt was
    made), ``retry_after`` the earliest moment in seconds from now at which a
    target frees up (None when unknown), ``attempts`` how many attempts were made.
    ``missing_keys`` is set when nothing was tried because no target for the model
    has an API key: ``(target_id, variable to set)`` pairs, the message naming them.
    """

    def __init__(
        self,
        message: str,
        *,
        request_id: str | None = None,
        error_class: ErrorClass | None = None,
        retry_after: float | None = None,
        attempts: int = 0,
        deadline_exceeded: bool = False,
        missing_keys: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.error_class = error_class
        self.retry_after = retry_after
        self.attempts = attempts
        self.deadline_exceeded = deadline_exceeded
        self.missing_keys: tuple[tuple[str, str], ...] = tuple(missing_keys)


class RequestFailed(SwitcherError):
    """The request itself cannot succeed as sent: a terminal error class.

    ``error_class`` is one of InvalidRequest, RequestTooLarge, PolicyFailure or
    InterruptedExecution; ``status`` the provider's HTTP status (None when there
    was none) and ``message`` the provider's reason, which ``str()`` includes.
    """

    def __init__(
        self,
        message: str,
        *,
        request_id: str | None = None,
        error_class: ErrorClass,
        status: int | None = None,
    ) -> None:
        super().__init__(f"{error_class}: {message}", request_id=request_id)
        self.error_class = error_class
        self.status = status
        self.message = message


class ConfigError(SwitcherError, ValueError):
    """A configuration is invalid. ``problems`` lists ``(path, reason)`` pairs.

    ``str()`` renders one problem per line as ``reason @ path``.
    """

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems: tuple[tuple[str, str], ...] = tuple(problems)
        lines = [f"{reason} @ {path}" for path, reason in self.problems]
        super().__init__("invalid configuration:\n" + "\n".join(lines))


class UnknownTarget(SwitcherError, LookupError):
    """No target has the given ``target_id``."""

    def __init__(self, target_id: str) -> None:
        super().__init__(f"unknown target: {target_id!r}")
        self.target_id = target_id


class UnknownRequest(SwitcherError, LookupError):
    """No trace is kept for the given ``request_id`` (never seen, or evicted)."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"unknown request: {request_id!r}", request_id=request_id)
