"""Reading provider delays from headers and bodies."""

from __future__ import annotations

import email.utils
import json
import math

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oswitch.core.retry_after import (
    delay_from_body,
    delay_from_headers,
    parse_duration,
    provider_delay,
)

NOW = 1_700_000_000.0


def _http_date(epoch: float) -> str:
    return email.utils.formatdate(epoch, usegmt=True)


# --- parse_duration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("644ms", 0.644),
        ("2.5s", 2.5),
        ("6m0s", 360.0),
        ("1h2m3.5s", 3723.5),
        ("30s", 30.0),
        ("0.5s", 0.5),
        ("1m", 60.0),
        ("20µs", 20e-6),
        ("20μs", 20e-6),
        ("20us", 20e-6),
        ("150ns", 150e-9),
        ("9m38.016s", 578.016),
        ("2m59.56s", 179.56),
        (".5s", 0.5),
        ("0", 0.0),
        ("  7.66s ", 7.66),
    ],
)
def test_parse_duration_reads_go_durations(text: str, seconds: float) -> None:
    """Go/OpenAI duration strings become seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", "30", "-5s", "5 s", "abc", "5sx", "s", "1.2.3s", "1e3s", "inf", "nan", "5d", "1h 2m"],
)
def test_parse_duration_rejects_non_durations(text: str) -> None:
    """Anything that is not a whole duration is None, not an error."""
    assert parse_duration(text) is None


@given(st.integers(0, 99), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999))
def test_parse_duration_composes_units(h: int, m: int, s: int, ms: int) -> None:
    """A duration of several units is the sum of its parts."""
    text = f"{h}h{m}m{s}s{ms}ms"
    assert parse_duration(text) == pytest.approx(h * 3600 + m * 60 + s + ms / 1000)


@given(st.text(max_size=40))
def test_parse_duration_never_raises(text: str) -> None:
    """Arbitrary text gives None or a finite non-negative number."""
    result = parse_duration(text)
    assert result is None or (math.isfinite(result) and result >= 0)


# --- delay_from_headers --------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"x-ms-retry-after-ms": "60000"}, 60.0),
        ({"retry-after": "30"}, 30.0),
        ({"Retry-After": "2.5"}, 2.5),
        ({"RETRY-AFTER": "0"}, 0.0),
        ({"retry-after": _http_date(NOW + 120)}, 120.0),
        ({"retry-after": _http_date(NOW - 600)}, 0.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
    ],
)
def test_delay_from_headers_reads_each_form(headers: dict[str, str], seconds: float) -> None:
    """Milliseconds, seconds and HTTP dates (relative to now, past = 0) are read."""
    assert delay_from_headers(headers, now=NOW) == pytest.approx(seconds)


def test_retry_after_ms_wins_over_retry_after() -> None:
    """The millisecond header is more precise and is preferred."""
    headers = {"Retry-After": "2", "retry-after-ms": "1234"}
    assert delay_from_headers(headers, now=NOW) == pytest.approx(1.234)


@pytest.mark.parametrize("bad", ["-5", "soon", "nan", "inf", "", "1" * 200])
def test_unusable_values_fall_through_to_the_next_header(bad: str) -> None:
    """Garbage or negative values are skipped, not raised and not used."""
    headers = {"retry-after-ms": bad, "retry-after": "3"}
    assert delay_from_headers(headers, now=NOW) == 3.0
    assert delay_from_headers({"retry-after": bad}, now=NOW) is None


def test_ratelimit_reset_used_only_without_retry_after() -> None:
    """OpenAI's reset headers are a fallback; an explicit Retry-After wins."""
    reset = {
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-reset-tokens": "6m0s",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-remaining-tokens": "0",
    }
    assert delay_from_headers(reset, now=NOW) == 360.0
    assert delay_from_headers({**reset, "retry-after": "5"}, now=NOW) == 5.0


def test_ratelimit_reset_without_remaining_takes_the_shortest() -> None:
    """When the exhausted limit is unknown, the shortest reset is used."""
    headers = {"x-ratelimit-reset-requests": "2m59.56s", "x-ratelimit-reset-tokens": "7.66s"}
    assert delay_from_headers(headers, now=NOW) == pytest.approx(7.66)


def test_ratelimit_reset_with_several_exhausted_takes_the_longest() -> None:
    """If both limits are spent, the later reset is when a request can pass."""
    headers = {
        "x-ratelimit-reset-requests": "20s",
        "x-ratelimit-reset-tokens": "1m",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-remaining-tokens": "0",
    }
    assert delay_from_headers(headers, now=NOW) == 60.0


def test_delay_from_headers_accepts_httpx_headers() -> None:
    """httpx.Headers works as the mapping, whatever the case of the names."""
    headers = httpx.Headers({"Retry-After": "11", "X-Other": "y"})
    assert delay_from_headers(headers, now=NOW) == 11.0


def test_delay_from_headers_without_delay_is_none() -> None:
    """No delay header means None."""
    assert delay_from_headers({}, now=NOW) is None
    assert delay_from_headers({"content-type": "application/json"}, now=NOW) is None


@given(st.dictionaries(st.text(max_size=30), st.text(max_size=60), max_size=6), st.floats())
def test_delay_from_headers_never_raises(headers: dict[str, str], now: float) -> None:
    """Arbitrary headers and clocks give None or a finite non-negative delay."""
    result = delay_from_headers(headers, now=now)
    assert result is None or (math.isfinite(result) and result >= 0)


# --- delay_from_body -----------------------------------------------------------------


def _gemini(delay: object, message: str = "Resource exhausted") -> dict[str, object]:
    return {
        "error": {
            "code": 429,
            "message": message,
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.Help", "links": []},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
            ],
        }
    }


@pytest.mark.parametrize(
    ("delay", "seconds"),
    [("30s", 30.0), ("0.5s", 0.5), ("36.429760048s", 36.429760048), ({"seconds": 7}, 7.0)],
)
def test_gemini_retry_info_is_read(delay: object, seconds: float) -> None:
    """google.rpc.RetryInfo.retryDelay gives the delay."""
    assert delay_from_body(_gemini(delay)) == pytest.approx(seconds)


def test_retry_info_wins_over_message_text() -> None:
    """The structured delay is preferred to a phrase in the message."""
    assert delay_from_body(_gemini("26s", "Please retry in 36.4s.")) == 26.0


def test_retry_info_in_a_list_wrapped_body() -> None:
    """Vertex's one-element list around the error is looked through."""
    assert delay_from_body([_gemini("12s")]) == 12.0


@pytest.mark.parametrize(
    ("message", "seconds"),
    [
        ("Please try again in 644ms.", 0.644),
        ("Please try again in 2.5s. Visit https://platform.openai.com", 2.5),
        ("Please try again in 6m0s.", 360.0),
        ("Please try again in 20s.", 20.0),
        ("Please try again in 9m38.016s. Need more tokens?", 578.016),
        ("Please retry after 10 seconds.", 10.0),
        ("Please retry after 86400 seconds. Please go here", 86400.0),
        ("Rate limit is exceeded. Try again in 30 seconds.", 30.0),
        ("try again in 1 minute", 60.0),
        ("Please retry in 36.429760048s.", 36.429760048),
    ],
)
def test_delay_phrases_in_the_message(message: str, seconds: float) -> None:
    """The documented phrases in error.message give the delay."""
    assert delay_from_body({"error": {"message": message}}) == pytest.approx(seconds)


def test_delay_phrase_in_plain_text() -> None:
    """Without a parsed body, the text argument is searched."""
    assert delay_from_body(None, "Too busy. Please retry after 4 seconds") == 4.0


@pytest.mark.parametrize(
    "payload",
    [
        None,
        42,
        "try again in 5s",
        [],
        [1, 2],
        {"error": "Please try again later"},
        {"error": {"message": "Please try again later."}},
        {"error": {"details": "not a list"}},
        {"error": {"details": [{"@type": "x.google.rpc.RetryInfo", "retryDelay": "soon"}]}},
    ],
)
def test_bodies_without_a_usable_delay(payload: object) -> None:
    """No delay, or an unreadable one, is None."""
    assert delay_from_body(payload) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values, st.text(max_size=200))
def test_delay_from_body_never_raises(payload: object, text: str) -> None:
    """Any JSON-like payload and text give None or a finite non-negative delay."""
    result = delay_from_body(payload, text)
    assert result is None or (math.isfinite(result) and result >= 0)


# --- provider_delay ------------------------------------------------------------------


def test_provider_delay_prefers_headers_then_body() -> None:
    """Headers are read first; the body only when they have no delay."""
    body = {"error": {"message": "Please try again in 20s."}}
    assert provider_delay({"retry-after": "3"}, body, "", now=NOW) == 3.0
    assert provider_delay({}, body, "", now=NOW) == 20.0
    assert provider_delay({}, None, json.dumps(body), now=NOW) == 20.0
    assert provider_delay({}, None, "", now=NOW) is None
