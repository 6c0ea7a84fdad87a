"""Log output for the command line (the library itself installs no handlers).

Audit events (``oswitch.audit``) go to stdout as NDJSON, one line per routing
decision, so ``oswitch serve | grep req_…`` follows one request. Human logs go
to stderr, as text or as JSON lines (``--log-format``).
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any, TextIO

from oswitch.audit import AUDIT_FIELDS

# Fields of a LogRecord that are not event data.
_RECORD_KEYS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _RECORD_KEYS and key != "event" and value is not None
    }


class NdjsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``event`` (the record's ``event`` field, else
    its message), then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            # A record may name its event apart from a message written for people.
            "event": getattr(record, "event", None) or record.getMessage(),
        }
        if record.name != "oswitch.audit":
            line["level"] = record.levelname.lower()
            line["logger"] = record.name
        fields = _fields(record)
        for key in AUDIT_FIELDS:
            if key in fields:
                line[key] = fields.pop(key)
        line.update(fields)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger event key=value ...`` for people reading stderr."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        pairs = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        text = f"{stamp} {record.levelname:<7} {record.name} {record.getMessage()} {pairs}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text.rstrip()


def configure_logging(
    log_format: str = "text", *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> None:
    """Audit NDJSON to stdout; everything else at INFO to stderr in ``log_format``."""
    audit_handler = logging.StreamHandler(stdout or sys.stdout)
    audit_handler.setFormatter(NdjsonFormatter())
    audit_logger = logging.getLogger("oswitch.audit")
    audit_logger.handlers[:] = [audit_handler]
    audit_logger.setLevel(logging.INFO)
    audit_logger.propagate = False

    human = logging.StreamHandler(stderr or sys.stderr)
    human.setFormatter(NdjsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [human]
    root.setLevel(logging.INFO)
    for noisy in ("httpx", "httpcore", "hpack", "trio-websocket"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
