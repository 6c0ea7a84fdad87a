"""A request's attempts, written to its trace and to the ``attempt`` audit events."""

from __future__ import annotations

from typing import Any

from oswitch.core.ledger import Decision, Ledger
from oswitch.core.tokens import Usage
from oswitch.core.trace import AttemptRecord, TraceBuilder
from oswitch.runtime.events import EventHub
from oswitch.runtime.messages import AttemptOutcome


def usage_fields(usage: Usage | None, cost: float | None) -> dict[str, Any]:
    """An attempt record's token fields for ``usage`` (none when nothing was reported)."""
    if usage is None:
        return {}
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
        "cost": cost,
    }


class AttemptLog:
    """Where one request records each attempt and the decision taken after it."""

    def __init__(
        self, *, request_id: str, trace: TraceBuilder, events: EventHub, ledger: Ledger
    ) -> None:
        self._request_id = request_id
        self._trace = trace
        self._events = events
        self._ledger = ledger

    def outcome(self, target_id: str, outcome: AttemptOutcome, decision: Decision) -> None:
        """Record a whole attempt on ``target_id`` as its target reported it."""
        classification = outcome.classification
        self.add(
            AttemptRecord(
                index=len(self._trace.attempts),
                target_id=target_id,
                model=outcome.served_model,
                started_at=outcome.started_at,
                duration_s=outcome.duration_s,
                error_class=outcome.error_class,
                decision=decision.value,
                status=None if classification is None else classification.status,
                retry_after=None if classification is None else classification.retry_after,
                note=outcome.note
                or (f"cancelled: {outcome.cancel_reason}" if outcome.cancel_reason else ""),
                hedge=outcome.hedge,
                deadline=outcome.deadline,
                **usage_fields(outcome.usage, outcome.cost),
            )
        )

    def add(self, attempt: AttemptRecord) -> None:
        """Add an attempt to the request's trace and emit its ``attempt`` audit event
        (``attempt``: the attempts made so far)."""
        self._trace.add(attempt)
        if not self._events.heard:
            return  # no listener, subscriber or audit log: nothing to format
        self._events.emit(
            "attempt",
            request_id=self._request_id,
            target_id=attempt.target_id,
            model=attempt.model,
            attempt=self._ledger.attempts,
            error_class=None if attempt.error_class is None else str(attempt.error_class),
            decision=attempt.decision,
            latency_ms=round(attempt.duration_s * 1000.0, 3),
            status=attempt.status,
            note=attempt.note or None,
            **_token_event_fields(attempt),
        )


def _token_event_fields(attempt: AttemptRecord) -> dict[str, Any]:
    """The ``attempt`` event's token fields: present only when usage was reported."""
    if attempt.prompt_tokens is None:
        return {}
    return {
        "prompt_tokens": attempt.prompt_tokens,
        "completion_tokens": attempt.completion_tokens,
        "cached_tokens": attempt.cached_tokens,
        "cost": attempt.cost,
    }
