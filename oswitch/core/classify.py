"""Sorting one failed attempt into one of the error classes of DESIGN.md.

The classifier reads, in this order: what kind of exception ended the attempt (when no
response arrived), the provider's structured fields (error type and code, Gemini's
``status``, ``ErrorInfo.reason``, ``QuotaFailure`` quota ids, Azure's ``innererror``,
OpenRouter's moderation metadata and wrapped upstream errors), a short documented list
of message phrases, and last the HTTP status. Phrase lists rot, so they only decide what
the structured fields leave open. See docs/error-classes.md for the full table.

Reading a body into signals is oswitch.core.error_signals; the codes and phrases looked
for are oswitch.core.error_vocabulary; this module decides.

Pure core: no trio or httpx import. httpx and trio exceptions are recognised by the
class names on their MRO.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import attrs

from oswitch.core import error_vocabulary as vocabulary
from oswitch.core.error_class import ErrorClass
from oswitch.core.error_signals import MAX_SCAN, Signals, signals_from_body, signals_from_payload
from oswitch.core.retry_after import delay_from_body, provider_delay
from oswitch.core.secret import Secret, scrub_and_cut

__all__ = ["Classification", "classify", "classify_stream_error"]

# The reported message is cut to this many characters once it is scrubbed of keys
# (never before: a key straddling the cut would leave its beginning behind).
_MAX_MESSAGE = 1_000


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


def _reported(text: str, secrets: Iterable[Secret]) -> str:
    """The message as reported: scrubbed of every key, then cut to _MAX_MESSAGE."""
    return scrub_and_cut(text, secrets, limit=_MAX_MESSAGE)


def _has(text: str, phrases: Iterable[str]) -> bool:
    return any(phrase in text for phrase in phrases)


def _rate_family(status: int | None, signals: Signals) -> ErrorClass:
    if signals.quota_ids:
        # Gemini lists every violated quota; one per-day limit means waiting a minute
        # will not help, whatever RetryInfo says.
        ids = [quota_id.lower() for quota_id in signals.quota_ids]
        if any("perday" in quota_id or "per_day" in quota_id for quota_id in ids):
            return ErrorClass.QUOTA_EXHAUSTED
        return ErrorClass.RATE_LIMITED
    text = signals.text
    if status == 413 or _has(text, vocabulary.TOO_LARGE_FOR_BUDGET):
        return ErrorClass.REQUEST_TOO_LARGE
    if vocabulary.PER_MINUTE.search(text):
        return ErrorClass.RATE_LIMITED
    if vocabulary.PER_DAY.search(text) or _has(text, vocabulary.QUOTA_PHRASES):
        return ErrorClass.QUOTA_EXHAUSTED
    return ErrorClass.RATE_LIMITED


# The last resort: what a status alone says, when nothing in the body decided.
_STATUS_CLASS: dict[int, ErrorClass] = {
    401: ErrorClass.AUTH_FAILURE,
    402: ErrorClass.QUOTA_EXHAUSTED,
    403: ErrorClass.PERMISSION_FAILURE,
    404: ErrorClass.MODEL_UNAVAILABLE,
    # The server gave up waiting for us: nothing is wrong with the request itself.
    408: ErrorClass.TRANSIENT_SERVER_FAILURE,
    413: ErrorClass.REQUEST_TOO_LARGE,
    429: ErrorClass.RATE_LIMITED,
    # Capacity, not the caller: Groq's 498 (flex tier full), Anthropic's 529.
    498: ErrorClass.MODEL_UNAVAILABLE,
    529: ErrorClass.MODEL_UNAVAILABLE,
}


def _by_status(status: int | None) -> ErrorClass:
    if status is None:
        return ErrorClass.TRANSPORT_FAILURE
    if status in _STATUS_CLASS:
        return _STATUS_CLASS[status]
    if 400 <= status < 500:
        return ErrorClass.INVALID_REQUEST
    # 5xx, and statuses no provider should send (1xx, 3xx, junk): the target misbehaved.
    return ErrorClass.TRANSIENT_SERVER_FAILURE


def _decide(status: int | None, signals: Signals) -> ErrorClass:
    codes = signals.codes
    text = signals.text
    # Region and policy ride generic statuses (400, 403), so they go first.
    if codes & vocabulary.REGION_CODES or _has(text, vocabulary.REGION_PHRASES):
        return ErrorClass.REGION_RESTRICTION
    if codes & vocabulary.POLICY_CODES or signals.flagged:
        return ErrorClass.POLICY_FAILURE
    if codes & vocabulary.CONTEXT_CODES:
        return ErrorClass.REQUEST_TOO_LARGE
    if codes & vocabulary.AUTH_CODES:
        return ErrorClass.AUTH_FAILURE
    if codes & vocabulary.QUOTA_CODES:
        return ErrorClass.QUOTA_EXHAUSTED
    if status == 429 or codes & vocabulary.RATE_CODES:
        return _rate_family(status, signals)
    if codes & vocabulary.MODEL_CODES:
        return ErrorClass.MODEL_UNAVAILABLE
    if codes & vocabulary.NOT_FOUND_CODES and status in (404, None):
        return ErrorClass.MODEL_UNAVAILABLE
    if codes & vocabulary.PERMISSION_CODES:
        return ErrorClass.PERMISSION_FAILURE
    # Structured fields said nothing decisive: the documented phrase list.
    if _has(text, vocabulary.POLICY_PHRASES):
        return ErrorClass.POLICY_FAILURE
    if _has(text, vocabulary.CONTEXT_PHRASES):
        return ErrorClass.REQUEST_TOO_LARGE
    if _has(text, vocabulary.QUOTA_PHRASES):
        return ErrorClass.QUOTA_EXHAUSTED
    if _has(text, vocabulary.AUTH_PHRASES):
        return ErrorClass.AUTH_FAILURE
    client_side = status is None or 400 <= status < 500
    if client_side and "model" in text and _has(text, vocabulary.MODEL_PHRASES):
        return ErrorClass.MODEL_UNAVAILABLE
    if (status is None or status >= 500) and _has(text, vocabulary.OVERLOAD_PHRASES):
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
    return f"{name}: {detail[:MAX_SCAN]}" if detail else name


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
        connect_failure=local or bool(names & vocabulary.CONNECT_FAILURE_NAMES),
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
    signals = signals_from_body(body)
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
        signals = signals_from_body(payload if isinstance(payload, str) else bytes(payload))
    else:
        signals = signals_from_payload(payload)
    implied: int | None = None
    numeric = signals.numeric_code
    if numeric is not None and 100 <= numeric <= 599:
        implied = numeric
    else:
        for code in (signals.code, *sorted(signals.codes)):
            if code is not None and code.lower() in vocabulary.STREAM_TYPE_STATUS:
                implied = vocabulary.STREAM_TYPE_STATUS[code.lower()]
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
