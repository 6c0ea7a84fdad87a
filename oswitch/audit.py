"""The audit log: one event per routing decision, through stdlib logging.

Events go to the ``oswitch.audit`` logger at INFO; the message is the event name
and the fields travel in ``extra`` (never a key, never prompt text). The library
installs no handlers; ``oswitch serve`` renders them as NDJSON on stdout.
"""

from __future__ import annotations

import logging

audit_log = logging.getLogger("oswitch.audit")

# The LogRecord attributes an audit event may carry; the NDJSON formatter emits them.
AUDIT_FIELDS = (
    "request_id",
    "target_id",
    "model",
    "attempt",
    "error_class",
    "decision",
    "outcome",
    "latency_ms",
    "status",
    "retry_after",
    "state",
    "condition",
    "note",
)


def audit(event: str, **fields: object) -> None:
    """Emit one audit event named ``event`` with ``fields`` (names from AUDIT_FIELDS)."""
    if audit_log.isEnabledFor(logging.INFO):
        audit_log.info(event, extra={"event": event, **fields})
