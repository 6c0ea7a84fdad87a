"""Sorting one failed attempt into one of the error classes of DESIGN.md.

The classifier reads, in this order: what kind of exception ended the attempt (when no
response arrived), the provider's structured fields (error type and code, Gemini's
``status``, ``ErrorInfo.reason``, ``QuotaFailure`` quota ids, Azure's ``innererror``,
OpenRouter's moderation metadata and wrapped upstream errors), a short documented list
of message phrases, and last the HTTP status. Phrase lists rot, so they only decide what
the structured fields leave open. See docs/error-classes.md for the full table.

Pure core: no trio or httpx import. httpx and trio exceptions are recognised by the
class names on their MRO.
"""

from __future__ import annotations

import contextlib
import html
import json
import re
import time
from collections.abc import Iterable, Mapping

import attrs

from oswitch.core.error_class import ErrorClass
from oswitch.core.retry_after import delay_from_body, provider_delay
from oswitch.core.secret import Secret, scrub_and_cut

__all__ = ["Classification", "classify", "classify_stream_error"]

# Real error bodies are a few KiB; anything bigger is not parsed as JSON.
_MAX_JSON_CHARS = 1_000_000
# Only this much text is kept for phrase matching and for the reported message, which
# is cut to _MAX_MESSAGE characters once it is scrubbed of keys (never before: a key
# straddling the cut would leave its beginning behind).
_MAX_SCAN = 16_384
_MAX_MESSAGE = 1_000
# How deep OpenRouter-style ``metadata.raw`` wrapping is followed.
_MAX_WRAP_DEPTH = 2


@attrs.frozen(kw_only=True)
class Classification:
    """What one attempt's failure means.

    ``error_class`` is None for a 2xx response. ``retry_after`` is the delay the
    provider asked for in seconds (None if it gave none). ``message`` is the provider's
    human message, scrubbed of the keys given to :func:`classify` and then cut to at
    most 1000 characters (the runtime scrubs again). ``code`` is
    the provider's structured type/code ("insufficient_quota", "rate_limit_error",
    "RESOURCE_EXHAUSTED", "API_KEY_INVALID"). ``status`` is the HTTP status (for a
    stream error event: the status its type stands for). ``local_fault`` marks a
    failure of our own connection pool, not of the target; ``connect_failure`` marks a
    request that never reached the provider (connect refused or timed out, DNS, pool).
    """

    error_class: ErrorClass | None
    retry_after: float | None
    message: str = ""
    code: str | None = None
    status: int | None = None
    local_fault: bool = False
    connect_failure: bool = False


# --- structured codes (compared lower-cased) ---------------------------------------

_REGION_CODES = frozenset({"unsupported_country_region_territory", "unsupported_country"})
_POLICY_CODES = frozenset(
    {"content_filter", "content_policy_violation", "responsibleaipolicyviolation"}
)
_CONTEXT_CODES = frozenset(
    {
        "context_length_exceeded",
        "context_window_exceeded",
        "request_too_large",
        "string_above_max_length",
    }
)
_AUTH_CODES = frozenset(
    {
        "invalid_api_key",
        "authentication_error",
        "api_key_invalid",
        "unauthenticated",
        "invalid_authentication",
    }
)
_QUOTA_CODES = frozenset(
    {
        "insufficient_quota",
        "billing_error",
        "billing_hard_limit_reached",
        "insufficient_credits",
        "credit_balance_exhausted",
    }
)
_RATE_CODES = frozenset(
    {
        "rate_limit_exceeded",
        "rate_limit_error",
        "rate_limited",
        "ratelimitexceeded",
        "resource_exhausted",
        "too_many_requests",
    }
)
_MODEL_CODES = frozenset(
    {
        "model_not_found",
        "deploymentnotfound",
        "overloaded_error",
        "model_not_available",
        "capacity_exceeded",  # Groq's flex tier at capacity (status 498)
    }
)
# Generic "not found" types only mean a missing model on a 404 (or in a stream).
_NOT_FOUND_CODES = frozenset({"not_found_error", "notfounderror", "not_found"})
_PERMISSION_CODES = frozenset(
    {"permission_error", "permission_denied", "permissiondenied", "forbidden", "request_forbidden"}
)

# --- phrases: the documented last resort (lower-case substrings) --------------------

_REGION_PHRASES = (
    "user location is not supported",
    "country, region, or territory not supported",
    "unsupported_country_region_territory",
)
_POLICY_PHRASES = (
    "content management policy",
    "content policy",
    "safety system",
    "usage policy",
    "your input was flagged",
)
_CONTEXT_PHRASES = (
    "maximum context length",
    "context length",
    "context window",
    "exceed context limit",  # Anthropic: "input length and `max_tokens` exceed context limit"
    "prompt is too long",
    "input is too long",
    "input token count",
    "exceeds the maximum number of tokens",
    "request too large",
    "request entity too large",
    "payload too large",
)
_QUOTA_PHRASES = (
    "exceeded your current quota",
    "check your plan and billing",
    "insufficient_quota",
    "insufficient balance",
    "insufficient credits",
    "credit balance is too low",
    "requires more credits",
    "api usage limits",
)
_AUTH_PHRASES = (
    "incorrect api key",
    "invalid api key",
    "api key not valid",
    "api key not found",
    "invalid x-api-key",
    "invalid subscription key",
)
_MODEL_PHRASES = (
    "does not exist",
    "not found",
    "is not a valid model",
    "no such model",
    "unknown model",
)
_OVERLOAD_PHRASES = ("overloaded", "high demand", "over capacity")
# Inside a 429: the request alone is bigger than the per-minute budget.
_TOO_LARGE_FOR_BUDGET = (
    "request too large",
    "reduce your message size",
    "must be reduced in order to run",
)
# No trailing word boundary: "per_minute_per_project" (Vertex) must match.
_PER_MINUTE = re.compile(r"per[ _]?minute|per[ _]?min(?![a-z])|\((?:tpm|rpm)\)|per[ _]?second")
_PER_DAY = re.compile(r"per[ _]?day|\((?:tpd|rpd)\)")

_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")

# Exception class names (anywhere on the MRO) for a request that never left.
_CONNECT_FAILURE_NAMES = frozenset(
    {
        "ConnectError",
        "ConnectTimeout",
        "ConnectionRefusedError",
        "gaierror",
        "UnsupportedProtocol",
        "InvalidURL",
    }
)

# What an in-stream error type stands for, as an HTTP status.
_STREAM_TYPE_STATUS: dict[str, int] = {
    "overloaded_error": 529,
    "api_error": 500,
    "server_error": 500,
    "internal": 500,
    "unavailable": 503,
    "timeout_error": 504,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "resource_exhausted": 429,
    "insufficient_quota": 429,
    "invalid_request_error": 400,
    "invalid_argument": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
}


@attrs.define
class _Signals:
    """Everything the body said, gathered once."""

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
        return " ".join(self.scan).lower()

    @property
    def message(self) -> str:
        for message in self.messages:
            if message.strip() and message.strip().lower() != "provider returned error":
                return message.strip()
        return self.messages[0].strip() if self.messages else ""


def _reported(text: str, secrets: Iterable[Secret]) -> str:
    """The message as reported: scrubbed of every key, then cut to _MAX_MESSAGE."""
    return scrub_and_cut(text, secrets, limit=_MAX_MESSAGE)


def _is_numeric(value: str) -> bool:
    stripped = value.strip().lstrip("-")
    return stripped.isdigit()


def _has(text: str, phrases: Iterable[str]) -> bool:
    return any(phrase in text for phrase in phrases)


def _decode(body: bytes | str | None) -> tuple[str, bool]:
    """Return the body as text (possibly cut) and whether it was cut."""
    if body is None:
        return "", False
    if isinstance(body, bytes | bytearray | memoryview):
        raw = bytes(body[: _MAX_JSON_CHARS + 1])
        text = raw.decode("utf-8", errors="replace")
        return text, len(body) > _MAX_JSON_CHARS
    if isinstance(body, str):
        return body[: _MAX_JSON_CHARS + 1], len(body) > _MAX_JSON_CHARS
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
    head = text[:_MAX_SCAN]
    title = _HTML_TITLE.search(head)
    if title is not None:
        head = title.group(1)
    elif "<" in head and ">" in head:
        head = _HTML_TAG.sub(" ", head)
    return _SPACE.sub(" ", html.unescape(head)).strip()


def _add_code(signals: _Signals, value: object, *, report: bool) -> None:
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


def _add_message(signals: _Signals, value: object) -> None:
    if isinstance(value, str) and value:
        cut = value[:_MAX_SCAN]
        signals.messages.append(cut)
        signals.scan.append(cut)


def _collect_details(signals: _Signals, details: object) -> None:
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


def _collect(signals: _Signals, payload: object, depth: int = 0) -> None:
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
        if isinstance(raw, str) and raw and depth < _MAX_WRAP_DEPTH:
            wrapped = _parse_json(raw[:_MAX_JSON_CHARS])
            if isinstance(wrapped, Mapping | list):
                before = len(signals.messages)
                _collect(signals, wrapped, depth + 1)
                # The upstream's message says more than "Provider returned error".
                signals.messages[:] = signals.messages[before:] + signals.messages[:before]
            else:
                signals.scan.append(raw[:_MAX_SCAN])


def _signals_from_body(body: bytes | str | None) -> _Signals:
    signals = _Signals()
    text, cut = _decode(body)
    payload = None if cut else _parse_json(text)
    _collect(signals, payload)
    if not signals.payloads and text.strip():
        # Not a JSON error object: an HTML page from a proxy, plain text, a bare string.
        message = _plain_message(text)
        if message:
            signals.messages.append(message)
        signals.scan.append(text[:_MAX_SCAN])
    return signals


def _rate_family(status: int | None, signals: _Signals) -> ErrorClass:
    if signals.quota_ids:
        # Gemini lists every violated quota; one per-day limit means waiting a minute
        # will not help, whatever RetryInfo says.
        ids = [quota_id.lower() for quota_id in signals.quota_ids]
        if any("perday" in quota_id or "per_day" in quota_id for quota_id in ids):
            return ErrorClass.QUOTA_EXHAUSTED
        return ErrorClass.RATE_LIMITED
    text = signals.text
    if status == 413 or _has(text, _TOO_LARGE_FOR_BUDGET):
        return ErrorClass.REQUEST_TOO_LARGE
    if _PER_MINUTE.search(text):
        return ErrorClass.RATE_LIMITED
    if _PER_DAY.search(text) or _has(text, _QUOTA_PHRASES):
        return ErrorClass.QUOTA_EXHAUSTED
    return ErrorClass.RATE_LIMITED


def _by_status(status: int | None) -> ErrorClass:
    if status is None:
        return ErrorClass.TRANSPORT_FAILURE
    if status == 401:
        return ErrorClass.AUTH_FAILURE
    if status == 402:
        return ErrorClass.QUOTA_EXHAUSTED
    if status == 403:
        return ErrorClass.PERMISSION_FAILURE
    if status == 404:
        return ErrorClass.MODEL_UNAVAILABLE
    if status == 408:
        # The server gave up waiting for us: nothing is wrong with the request itself.
        return ErrorClass.TRANSIENT_SERVER_FAILURE
    if status == 413:
        return ErrorClass.REQUEST_TOO_LARGE
    if status == 429:
        return ErrorClass.RATE_LIMITED
    if status in (498, 529):
        # Capacity, not the caller: Groq's 498 (flex tier full), Anthropic's 529.
        return ErrorClass.MODEL_UNAVAILABLE
    if 400 <= status < 500:
        return ErrorClass.INVALID_REQUEST
    # 5xx, and statuses no provider should send (1xx, 3xx, junk): the target misbehaved.
    return ErrorClass.TRANSIENT_SERVER_FAILURE


def _decide(status: int | None, signals: _Signals) -> ErrorClass:
    codes = signals.codes
    text = signals.text
    # Region and policy ride generic statuses (400, 403), so they go first.
    if codes & _REGION_CODES or _has(text, _REGION_PHRASES):
        return ErrorClass.REGION_RESTRICTION
    if codes & _POLICY_CODES or signals.flagged:
        return ErrorClass.POLICY_FAILURE
    if codes & _CONTEXT_CODES:
        return ErrorClass.REQUEST_TOO_LARGE
    if codes & _AUTH_CODES:
        return ErrorClass.AUTH_FAILURE
    if codes & _QUOTA_CODES:
        return ErrorClass.QUOTA_EXHAUSTED
    if status == 429 or codes & _RATE_CODES:
        return _rate_family(status, signals)
    if codes & _MODEL_CODES:
        return ErrorClass.MODEL_UNAVAILABLE
    if codes & _NOT_FOUND_CODES and status in (404, None):
        return ErrorClass.MODEL_UNAVAILABLE
    if codes & _PERMISSION_CODES:
        return ErrorClass.PERMISSION_FAILURE
    # Structured fields said nothing decisive: the documented phrase list.
    if _has(text, _POLICY_PHRASES):
        return ErrorClass.POLICY_FAILURE
    if _has(text, _CONTEXT_PHRASES):
        return ErrorClass.REQUEST_TOO_LARGE
    if _has(text, _QUOTA_PHRASES):
        return ErrorClass.QUOTA_EXHAUSTED
    if _has(text, _AUTH_PHRASES):
        return ErrorClass.AUTH_FAILURE
    client_side = status is None or 400 <= status < 500
    if client_side and "model" in text and _has(text, _MODEL_PHRASES):
        return ErrorClass.MODEL_UNAVAILABLE
    if (status is None or status >= 500) and _has(text, _OVERLOAD_PHRASES):
        return ErrorClass.MODEL_UNAVAILABLE
    return _by_status(status)


def _capped(error_class: ErrorClass, delay: float | None, quota_after_s: float) -> ErrorClass:
    if error_class is ErrorClass.RATE_LIMITED and delay is not None and delay >= quota_after_s:
        return ErrorClass.QUOTA_EXHAUSTED
    return error_class


def _describe(exc: BaseException) -> str:
    name = type(exc).__name__
    try:
        detail = str(exc)
    except Exception:
        detail = ""
    return f"{name}: {detail[:_MAX_SCAN]}" if detail else name


def _classify_exception(
    exc: BaseException | None, status: int | None, secrets: Iterable[Secret]
) -> Classification:
    if exc is None:
        return Classification(
            error_class=ErrorClass.TRANSPORT_FAILURE,
            retry_after=None,
            message="no response",
            status=status,
        )
    names = {klass.__name__ for klass in type(exc).__mro__}
    local = "PoolTimeout" in names
    return Classification(
        error_class=ErrorClass.TRANSPORT_FAILURE,
        retry_after=None,
        message=_reported(_describe(exc), secrets),
        status=status,
        local_fault=local,
        connect_failure=local or bool(names & _CONNECT_FAILURE_NAMES),
    )


def classify(
    status: int | None,
    headers: Mapping[str, str] | None,
    body: bytes | str | None,
    exc: BaseException | None = None,
    *,
    now: float | None = None,
    quota_after_s: float = 3600.0,
    secrets: Iterable[Secret] = (),
) -> Classification:
    """Classify one attempt's outcome.

    ``status`` is the HTTP status, or None when no response arrived (then ``exc`` says
    why: connect, read, write, protocol errors and timeouts, or anything unknown, are
    TransportFailure; httpx's ``PoolTimeout`` also sets ``local_fault``). A 2xx gives
    ``error_class=None`` unless ``exc`` shows the body never completed
    (TransportFailure). ``headers`` is any mapping, matched case-insensitively; ``body``
    is bytes, str or None and may be anything (HTML, empty, invalid JSON, huge). ``now``
    is the wall clock (epoch seconds) for HTTP-date delays, default ``time.time()``. A
    RateLimited delay at or beyond ``quota_after_s`` becomes QuotaExhausted.
    InterruptedExecution is never returned: the engine assigns it. The message is
    scrubbed of ``secrets`` (the configured keys) before it is cut to length.

    Never raises.
    """
    if status is None:
        return _classify_exception(exc, None, secrets)
    if 200 <= status < 300:
        if exc is not None:
            return _classify_exception(exc, status, secrets)
        return Classification(error_class=None, retry_after=None, status=status)
    signals = _signals_from_body(body)
    payload = signals.payloads[0] if signals.payloads else None
    wall = time.time() if now is None else now
    delay = provider_delay(headers or {}, payload, " ".join(signals.scan), now=wall)
    if delay is None:
        for wrapped in signals.payloads[1:]:
            delay = delay_from_body(wrapped)
            if delay is not None:
                break
    error_class = _capped(_decide(status, signals), delay, quota_after_s)
    return Classification(
        error_class=error_class,
        retry_after=delay,
        message=_reported(signals.message, secrets),
        code=signals.code,
        status=status,
    )


def classify_stream_error(
    payload: object, *, quota_after_s: float = 3600.0, secrets: Iterable[Secret] = ()
) -> Classification:
    """Classify an error event that arrived inside a 200 SSE stream.

    ``payload`` is the event's parsed JSON (or its raw text): Anthropic's
    ``{"type": "error", "error": {"type": "overloaded_error", ...}}``, OpenAI-style
    ``{"error": {"message", "type", "code"}}``, or an OpenRouter/Gemini error with a
    numeric ``code``. It is classified as if its type's status had come back
    (overloaded_error → 529 → ModelUnavailable, api_error → 500, rate_limit_error →
    429, …); an error of unknown type is a TransientServerFailure. Whether it becomes
    InterruptedExecution (content already sent) is the engine's call. The message
    is scrubbed of ``secrets`` before it is cut, as :func:`classify` does.

    Never raises.
    """
    if isinstance(payload, bytes | bytearray | memoryview | str):
        signals = _signals_from_body(payload if isinstance(payload, str) else bytes(payload))
    else:
        signals = _Signals()
        _collect(signals, payload)
    implied: int | None = None
    numeric = signals.numeric_code
    if numeric is not None and 100 <= numeric <= 599:
        implied = numeric
    else:
        for code in (signals.code, *sorted(signals.codes)):
            if code is not None and code.lower() in _STREAM_TYPE_STATUS:
                implied = _STREAM_TYPE_STATUS[code.lower()]
                break
    first = signals.payloads[0] if signals.payloads else None
    delay = delay_from_body(first, " ".join(signals.scan))
    # An error event of unknown kind mid-stream is the server failing, not the request.
    error_class = _capped(_decide(implied or 500, signals), delay, quota_after_s)
    return Classification(
        error_class=error_class,
        retry_after=delay,
        message=_reported(signals.message, secrets),
        code=signals.code,
        status=implied,
    )
