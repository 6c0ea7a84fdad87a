"""Reading a provider's error body into signals: every code, message, quota id and
moderation flag it carries, gathered once, for the classifier to decide on.

Reads OpenAI's ``{"error": {...}}``, Gemini's ``status`` and ``details``
(``ErrorInfo.reason``, ``QuotaFailure`` quota ids), Azure's ``innererror``, legacy
``errors`` lists, OpenRouter's moderation metadata and the upstream error it wraps in
``metadata.raw``, Ollama/FastAPI's bare strings, and non-JSON bodies (an HTML page's
title, plain text). Any body is accepted (huge, invalid, nested): what is too big is
not parsed, and text is kept only up to MAX_SCAN characters.
"""

from __future__ import annotations

import contextlib
import html
import json
import re
from collections.abc import Mapping

import attrs

__all__ = ["MAX_SCAN", "Signals", "signals_from_body", "signals_from_payload"]

# Real error bodies are a few KiB; anything bigger is not parsed as JSON.
MAX_JSON_CHARS = 1_000_000
# Only this much text is kept for phrase matching and for the reported message (which
# the classifier cuts shorter once it is scrubbed of keys).
MAX_SCAN = 16_384
# How deep OpenRouter-style ``metadata.raw`` wrapping is followed.
MAX_WRAP_DEPTH = 2

_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


@attrs.define
class Signals:
    """Everything an error body said, gathered once.

    ``codes``: every structured code, type and reason, lower-cased. ``code``: the one
    reported (a specific code, then the type, then the status). ``messages``: the
    human messages, in the order they are preferred. ``scan``: the text phrases are
    matched in. ``quota_ids``: Gemini's violated quotas. ``flagged``: OpenRouter's
    moderation said the input was flagged. ``payloads``: the JSON objects read, the
    outermost first. ``numeric_code``: the first numeric ``code`` (an HTTP status,
    in OpenRouter's and Gemini's stream errors).
    """

    codes: set[str] = attrs.Factory(set)
    code: str | None = None
    messages: list[str] = attrs.Factory(list)
    scan: list[str] = attrs.Factory(list)
    quota_ids: list[str] = attrs.Factory(list)
    flagged: bool = False
    payloads: list[object] = attrs.Factory(list)
    numeric_code: int | None = None

    @property
    def text(self) -> str:
        """The text phrases are matched in, lower-cased."""
        return " ".join(self.scan).lower()

    @property
    def message(self) -> str:
        """The most telling message: not OpenRouter's "Provider returned error" when
        the upstream's own message is there."""
        for message in self.messages:
            if message.strip() and message.strip().lower() != "provider returned error":
                return message.strip()
        return self.messages[0].strip() if self.messages else ""


def _is_numeric(value: str) -> bool:
    stripped = value.strip().lstrip("-")
    return stripped.isdigit()


def _decode(body: bytes | str | None) -> tuple[str, bool]:
    """Return the body as text (possibly cut) and whether it was cut."""
    if body is None:
        return "", False
    if isinstance(body, bytes | bytearray | memoryview):
        raw = bytes(body[: MAX_JSON_CHARS + 1])
        text = raw.decode("utf-8", errors="replace")
        return text, len(body) > MAX_JSON_CHARS
    if isinstance(body, str):
        return body[: MAX_JSON_CHARS + 1], len(body) > MAX_JSON_CHARS
    return "", False


def _parse_json(text: str) -> object:
    stripped = text.strip()
    if not stripped or stripped[0] not in "{[":
        return None
    try:
        return json.loads(stripped)
    except (ValueError, RecursionError):
        return None


def _plain_message(text: str) -> str:
    """A human line out of a non-JSON body: an HTML page's title, else the text."""
    head = text[:MAX_SCAN]
    title = _HTML_TITLE.search(head)
    if title is not None:
        head = title.group(1)
    elif "<" in head and ">" in head:
        head = _HTML_TAG.sub(" ", head)
    return _SPACE.sub(" ", html.unescape(head)).strip()


def _add_code(signals: Signals, value: object, *, report: bool) -> None:
    if isinstance(value, str) and value.strip() and not _is_numeric(value):
        lowered = value.strip().lower()
        if lowered == "error":
            return
        signals.codes.add(lowered)
        if report and signals.code is None:
            signals.code = value.strip()
    elif isinstance(value, int) and not isinstance(value, bool) and signals.numeric_code is None:
        signals.numeric_code = value
    elif isinstance(value, str) and _is_numeric(value) and signals.numeric_code is None:
        # isdigit() admits digits int() refuses ("²") and over-long ones.
        with contextlib.suppress(ValueError):
            signals.numeric_code = int(value.strip())


def _add_message(signals: Signals, value: object) -> None:
    if isinstance(value, str) and value:
        cut = value[:MAX_SCAN]
        signals.messages.append(cut)
        signals.scan.append(cut)


def _collect_details(signals: Signals, details: object) -> None:
    if not isinstance(details, list):
        return
    for detail in details:
        if not isinstance(detail, Mapping):
            continue
        kind = detail.get("@type")
        kind = kind if isinstance(kind, str) else ""
        if kind.endswith("google.rpc.ErrorInfo") or ("reason" in detail and not kind):
            reason = detail.get("reason")
            if isinstance(reason, str) and reason:
                signals.codes.add(reason.lower())
                signals.code = reason
            metadata = detail.get("metadata")
            if isinstance(metadata, Mapping):
                limit = metadata.get("quota_limit")
                if isinstance(limit, str):
                    signals.quota_ids.append(limit)
        elif kind.endswith("google.rpc.QuotaFailure"):
            violations = detail.get("violations")
            if isinstance(violations, list):
                for violation in violations:
                    if isinstance(violation, Mapping):
                        quota_id = violation.get("quotaId")
                        if isinstance(quota_id, str):
                            signals.quota_ids.append(quota_id)


def _collect(signals: Signals, payload: object, depth: int = 0) -> None:
    # Vertex sometimes answers with a one-element list around the error.
    if isinstance(payload, list):
        payload = next((item for item in payload if isinstance(item, Mapping)), None)
    if not isinstance(payload, Mapping):
        return
    signals.payloads.append(payload)
    error = payload.get("error")
    if isinstance(error, Mapping):
        inner: Mapping[str, object] = error
    else:
        inner = payload
        # Ollama and FastAPI: {"error": "text"} / {"detail": "text"}.
        _add_message(signals, error)
        _add_message(signals, payload.get("detail"))
    _add_message(signals, inner.get("message"))
    # Precedence of the reported code: a specific code, then the type, then the status.
    _add_code(signals, inner.get("code"), report=True)
    _add_code(signals, inner.get("type"), report=True)
    _add_code(signals, inner.get("status"), report=True)
    if inner is not payload:
        _add_code(signals, payload.get("code"), report=True)
        _add_code(signals, payload.get("type"), report=True)
    innererror = inner.get("innererror")
    if isinstance(innererror, Mapping):
        _add_code(signals, innererror.get("code"), report=False)
    _collect_details(signals, inner.get("details"))
    legacy = inner.get("errors")
    if isinstance(legacy, list):
        for item in legacy:
            if isinstance(item, Mapping):
                _add_code(signals, item.get("reason"), report=False)
    metadata = inner.get("metadata")
    if isinstance(metadata, Mapping):
        # OpenRouter: moderation flags, and the upstream provider's own error body.
        if metadata.get("flagged_input") is not None or metadata.get("reasons"):
            signals.flagged = True
        raw = metadata.get("raw")
        if isinstance(raw, str) and raw and depth < MAX_WRAP_DEPTH:
            wrapped = _parse_json(raw[:MAX_JSON_CHARS])
            if isinstance(wrapped, Mapping | list):
                before = len(signals.messages)
                _collect(signals, wrapped, depth + 1)
                # The upstream's message says more than "Provider returned error".
                signals.messages[:] = signals.messages[before:] + signals.messages[:before]
            else:
                signals.scan.append(raw[:MAX_SCAN])


def signals_from_payload(payload: object) -> Signals:
    """The signals of an already parsed error payload (a stream's error event)."""
    signals = Signals()
    _collect(signals, payload)
    return signals


def signals_from_body(body: bytes | str | None) -> Signals:
    """The signals of a response body: bytes, str or None, and may be anything (HTML,
    empty, invalid JSON, huge). Never raises."""
    signals = Signals()
    text, cut = _decode(body)
    payload = None if cut else _parse_json(text)
    _collect(signals, payload)
    if not signals.payloads and text.strip():
        # Not a JSON error object: an HTML page from a proxy, plain text, a bare string.
        message = _plain_message(text)
        if message:
            signals.messages.append(message)
        signals.scan.append(text[:MAX_SCAN])
    return signals
