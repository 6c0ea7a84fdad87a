"""Log output for the command line (the library itself installs no handlers).

Audit events (``oswitch.audit``) go to stdout as NDJSON, one line per routing
decision, so ``oswitch serve | grep req_…`` follows one request — or to a file
(``--audit FILE`` / ``audit.path``) rotated by size and reopened on SIGUSR1. Human
logs go to stderr, as text or as JSON lines (``--log-format``), at ``--log-level``.
"""

from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import sys
from typing import Any, TextIO

from oswitch.audit import AUDIT_FIELDS, audit_log

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


LOG_LEVELS = ("debug", "info", "warning", "error")


class AuditFile(logging.handlers.RotatingFileHandler):
    """The audit log's file: rotated when a line would take it past ``max_bytes``
    (``backups`` older files kept as ``FILE.1`` …), reopened by :meth:`reopen`.

    ``backups`` 0 truncates the file when it is full (stdlib's handler would
    never rotate it), so ``max_bytes`` bounds the disk used either way.
    """

    def __init__(self, path: str, *, max_bytes: int, backups: int) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")

    def doRollover(self) -> None:
        if self.backupCount > 0:
            super().doRollover()
            return
        if self.stream:
            self.stream.close()
        with open(self.baseFilename, "w", encoding="utf-8"):
            pass  # truncated
        self.stream = self._open()

    def reopen(self) -> None:
        """Close the file and open ``path`` again (appending): after an outside
        logrotate moved it, lines go to the new file. Raises nothing."""
        self.acquire()
        try:
            if self.stream:
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


def reopen_log_files() -> int:
    """Reopen every audit file :func:`configure_logging` opened (SIGUSR1); how many."""
    files = [h for h in audit_log.handlers if isinstance(h, AuditFile)]
    for handler in files:
        handler.reopen()
    return len(files)


def configure_logging(
    log_format: str = "text",
    *,
    level: str = "info",
    audit_path: str | None = None,
    audit_max_bytes: int = 100 * 1024 * 1024,
    audit_backups: int = 5,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> None:
    """Audit NDJSON to stdout (or to ``audit_path``, see :class:`AuditFile`);
    everything else at ``level`` and above to stderr in ``log_format``.

    Raises OSError when ``audit_path`` cannot be opened for appending."""
    audit_handler: logging.Handler
    if audit_path is not None:
        audit_handler = AuditFile(audit_path, max_bytes=audit_max_bytes, backups=audit_backups)
    else:
        audit_handler = logging.StreamHandler(stdout or sys.stdout)
    audit_handler.setFormatter(NdjsonFormatter())
    for old in audit_log.handlers:
        old.close()
    audit_log.handlers[:] = [audit_handler]
    audit_log.setLevel(logging.INFO)
    audit_log.propagate = False

    human = logging.StreamHandler(stderr or sys.stderr)
    human.setFormatter(NdjsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [human]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "hpack", "trio-websocket"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
