"""Reading the delay a provider asks for before the next attempt.

Providers say "wait" in many ways: ``retry-after-ms`` (OpenAI), ``x-ms-retry-after-ms``
(Azure), ``Retry-After`` in seconds or as an HTTP date (everyone), OpenAI's
``x-ratelimit-reset-*`` Go durations ("6m0s"), Gemini's ``google.rpc.RetryInfo`` in the
body, and plain text ("Please try again in 644ms", "Please retry after 10 seconds").
Every function here returns seconds as a float, or None when the provider gave no usable
delay; garbage, negative or non-finite values are ignored, never raised.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import re
from collections.abc import Mapping

__all__ = [
    "delay_from_body",
    "delay_from_headers",
    "parse_duration",
    "provider_delay",
]

_UNIT_SECONDS: dict[str, float] = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,  # MICRO SIGN, what Go prints
    "μs": 1e-6,  # GREEK SMALL LETTER MU, what people type
    "ns": 1e-9,
}

# Longest units first so "ms" is not read as "m" followed by garbage.
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|μs|ns|h|m|s)")
_DURATION_FULL = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ms|us|µs|μs|ns|h|m|s))+")

# A delay phrase: "try again in", "retry after", "retry in", "Please wait ... before".
_DELAY_LEAD = re.compile(r"(?:try\s+again|retry)\s+(?:in|after)\s+", re.IGNORECASE)
_WORD_DELAY = re.compile(
    r"(\d+(?:\.\d+)?)\s*(milliseconds?|msecs?|seconds?|secs?|minutes?|mins?|hours?|hrs?)\b",
    re.IGNORECASE,
)
_GO_DELAY = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ms|us|µs|μs|ns|h|m|s))+(?![a-z])")

_WORD_UNIT_SECONDS: dict[str, float] = {
    "millisecond": 1e-3,
    "msec": 1e-3,
    "second": 1.0,
    "sec": 1.0,
    "minute": 60.0,
    "min": 60.0,
    "hour": 3600.0,
    "hr": 3600.0,
}

# Header values longer than this are not delays; skip them without parsing.
_MAX_HEADER_VALUE = 128
# Only this much message text is scanned for a delay phrase.
_MAX_SCAN = 16_384


def _valid(seconds: float) -> float | None:
    if math.isfinite(seconds) and seconds >= 0.0:
        return seconds
    return None


def parse_duration(text: str) -> float | None:
    """Parse a Go/OpenAI duration ("644ms", "2.5s", "6m0s", "1h2m3.5s", "20µs") to seconds.

    A bare ``"0"`` is zero, as in Go. Returns None for anything that is not a whole
    duration (unitless numbers, negatives, trailing text). Never raises.
    """
    if not isinstance(text, str):
        return None
    value = text.strip()
    if value == "0":
        return 0.0
    if not value or len(value) > _MAX_HEADER_VALUE or not _DURATION_FULL.fullmatch(value):
        return None
    total = 0.0
    for number, unit in _DURATION_PART.findall(value):
        total += float(number) * _UNIT_SECONDS[unit]
    return _valid(total)


def _parse_seconds(value: str, scale: float = 1.0) -> float | None:
    text = value.strip()
    if not text or len(text) > _MAX_HEADER_VALUE:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return _valid(number * scale)


def _parse_http_date(value: str, now: float) -> float | None:
    text = value.strip()
    if not text or len(text) > _MAX_HEADER_VALUE:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        # RFC 9110 dates are GMT; "-0000" parses as naive.
        moment = moment.replace(tzinfo=datetime.UTC)
    try:
        at = moment.timestamp()
    except (OverflowError, OSError, ValueError):
        return None
    return max(0.0, at - now) if math.isfinite(at) else None


def _lowered(headers: Mapping[str, str]) -> dict[str, str]:
    lowered: dict[str, str] = {}
    try:
        items = list(headers.items())
    except Exception:
        return lowered
    for key, value in items:
        if isinstance(key, str) and isinstance(value, str):
            lowered[key.lower()] = value
    return lowered


def delay_from_headers(headers: Mapping[str, str], *, now: float) -> float | None:
    """Return the delay the response headers ask for, in seconds, or None.

    Looked up case-insensitively, first usable value wins: ``retry-after-ms``,
    ``x-ms-retry-after-ms`` (milliseconds), ``retry-after`` (seconds, int or float, or an
    HTTP date relative to ``now``, the wall clock as epoch seconds; a past date is 0.0).
    Only when none of those is usable: OpenAI's ``x-ratelimit-reset-requests`` /
    ``x-ratelimit-reset-tokens`` durations — those whose ``x-ratelimit-remaining-*`` is 0
    (the longest of them), else the shortest present, since a 429 does not say which
    limit it hit and waiting too long idles a healthy key. Never raises.
    """
    lowered = _lowered(headers)
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        raw = lowered.get(name)
        if raw is not None:
            delay = _parse_seconds(raw, 1e-3)
            if delay is not None:
                return delay
    raw = lowered.get("retry-after")
    if raw is not None:
        delay = _parse_seconds(raw)
        if delay is None:
            delay = _parse_http_date(raw, now)
        if delay is not None:
            return delay
    resets: dict[str, float] = {}
    for kind in ("requests", "tokens"):
        raw = lowered.get(f"x-ratelimit-reset-{kind}")
        if raw is not None:
            delay = parse_duration(raw)
            if delay is None:
                delay = _parse_seconds(raw)
            if delay is not None:
                resets[kind] = delay
    if not resets:
        return None
    exhausted = [
        delay
        for kind, delay in resets.items()
        if lowered.get(f"x-ratelimit-remaining-{kind}", "").strip() == "0"
    ]
    return max(exhausted) if exhausted else min(resets.values())


def _error_object(payload: object) -> Mapping[str, object] | None:
    # Vertex sometimes wraps the error in a one-element list.
    if isinstance(payload, list) and payload and isinstance(payload[0], Mapping):
        payload = payload[0]
    if not isinstance(payload, Mapping):
        return None
    error = payload.get("error")
    if isinstance(error, Mapping):
        return error
    return payload


def _retry_info_delay(error: Mapping[str, object]) -> float | None:
    details = error.get("details")
    if not isinstance(details, list):
        return None
    for detail in details:
        if not isinstance(detail, Mapping):
            continue
        kind = detail.get("@type")
        if isinstance(kind, str) and kind.endswith("google.rpc.RetryInfo"):
            raw = detail.get("retryDelay")
            if isinstance(raw, str):
                delay = parse_duration(raw)
                if delay is not None:
                    return delay
            elif isinstance(raw, Mapping):
                # The proto-JSON object form: {"seconds": 30, "nanos": 0}.
                seconds = raw.get("seconds", 0)
                nanos = raw.get("nanos", 0)
                if isinstance(seconds, int | float | str) and isinstance(nanos, int | float):
                    try:
                        delay = _valid(float(seconds) + float(nanos) * 1e-9)
                    except ValueError:
                        delay = None
                    if delay is not None:
                        return delay
    return None


def _text_delay(text: str) -> float | None:
    for lead in _DELAY_LEAD.finditer(text[:_MAX_SCAN]):
        rest = text[lead.end() : lead.end() + 64]
        word = _WORD_DELAY.match(rest)
        if word is not None:
            unit = word.group(2).lower().rstrip("s") or "s"
            scale = _WORD_UNIT_SECONDS.get(unit)
            if scale is not None:
                delay = _valid(float(word.group(1)) * scale)
                if delay is not None:
                    return delay
        go = _GO_DELAY.match(rest)
        if go is not None:
            delay = parse_duration(go.group(0))
            if delay is not None:
                return delay
    return None


def delay_from_body(payload: object, text: str = "") -> float | None:
    """Return the delay a parsed error body (and its text) asks for, in seconds, or None.

    First a Gemini/Vertex ``error.details[]`` entry whose ``@type`` ends with
    ``google.rpc.RetryInfo`` (its ``retryDelay``, e.g. "30s"); then a phrase in the
    body's ``error.message`` or in ``text``: "try again in 644ms / 2.5s / 6m0s",
    "retry after 10 seconds", "try again in 1 minute", "Please retry in 36.4s".
    Never raises.
    """
    error = _error_object(payload)
    if error is not None:
        delay = _retry_info_delay(error)
        if delay is not None:
            return delay
        message = error.get("message")
        if isinstance(message, str):
            delay = _text_delay(message)
            if delay is not None:
                return delay
    if isinstance(text, str) and text:
        return _text_delay(text)
    return None


def provider_delay(
    headers: Mapping[str, str], payload: object, text: str, *, now: float
) -> float | None:
    """Return the provider's requested delay in seconds: headers first, then the body.

    See ``delay_from_headers`` and ``delay_from_body``. Never raises.
    """
    delay = delay_from_headers(headers, now=now)
    if delay is not None:
        return delay
    return delay_from_body(payload, text)
