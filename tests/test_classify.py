"""The error classifier: the real-world corpus, exceptions, delays, garbage."""

from __future__ import annotations

import ast
import email.utils
import json
import math
import pathlib
import socket
import time

import httpx
import pytest
import trio
from classify_corpus import CORPUS, Case
from hypothesis import given
from hypothesis import strategies as st

from oswitch.core.classify import Classification, classify, classify_stream_error
from oswitch.core.error_class import ErrorClass
from oswitch.core.secret import Secret

C = ErrorClass
NOW = 1_700_000_000.0


# --- the corpus ----------------------------------------------------------------------


@pytest.mark.parametrize("case", CORPUS, ids=[case.id for case in CORPUS])
def test_corpus_case(case: Case) -> None:
    """Each recorded provider response gets its expected class, delay and fields."""
    result = classify(case.status, case.headers, case.body, now=NOW)
    assert result.error_class is case.expected
    if case.retry_after is None:
        assert result.retry_after is None
    else:
        assert result.retry_after == pytest.approx(case.retry_after)
    assert result.status == case.status
    if case.code is not None:
        assert result.code == case.code
    if case.message_prefix is not None:
        assert result.message.startswith(case.message_prefix)


@pytest.mark.parametrize("case", CORPUS, ids=[case.id for case in CORPUS])
def test_corpus_case_as_bytes(case: Case) -> None:
    """A body given as bytes classifies exactly as the same body given as str."""
    as_text = classify(case.status, case.headers, case.body, now=NOW)
    as_bytes = classify(case.status, case.headers, case.body.encode(), now=NOW)
    assert as_bytes == as_text


def test_corpus_is_broad() -> None:
    """The corpus has 40+ cases and exercises every class classify() can return."""
    assert len(CORPUS) >= 40
    assert len({case.id for case in CORPUS}) == len(CORPUS)
    produced = {case.expected for case in CORPUS}
    response_classes = set(ErrorClass) - {C.INTERRUPTED_EXECUTION, C.TRANSPORT_FAILURE}
    assert response_classes <= produced


# --- statuses alone ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, C.INVALID_REQUEST),
        (401, C.AUTH_FAILURE),
        (402, C.QUOTA_EXHAUSTED),
        (403, C.PERMISSION_FAILURE),
        (404, C.MODEL_UNAVAILABLE),
        (408, C.TRANSIENT_SERVER_FAILURE),
        (409, C.INVALID_REQUEST),
        (413, C.REQUEST_TOO_LARGE),
        (418, C.INVALID_REQUEST),
        (422, C.INVALID_REQUEST),
        (429, C.RATE_LIMITED),
        (500, C.TRANSIENT_SERVER_FAILURE),
        (502, C.TRANSIENT_SERVER_FAILURE),
        (503, C.TRANSIENT_SERVER_FAILURE),
        (504, C.TRANSIENT_SERVER_FAILURE),
        (520, C.TRANSIENT_SERVER_FAILURE),
        (529, C.MODEL_UNAVAILABLE),
        (302, C.TRANSIENT_SERVER_FAILURE),
        (100, C.TRANSIENT_SERVER_FAILURE),
    ],
)
@pytest.mark.parametrize("body", [None, "", b"", "   \n"])
def test_empty_body_classifies_by_status(
    status: int, expected: ErrorClass, body: bytes | str | None
) -> None:
    """With nothing in the body, the status decides."""
    result = classify(status, None, body, now=NOW)
    assert result.error_class is expected
    assert result.message == ""
    assert result.code is None


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_success_has_no_error_class(status: int) -> None:
    """A 2xx is not an error, whatever its headers or body say."""
    body = '{"error": {"type": "overloaded_error"}}'
    result = classify(status, {"retry-after": "9"}, body, now=NOW)
    assert result == Classification(error_class=None, retry_after=None, status=status)


def test_success_whose_body_broke_is_a_transport_failure() -> None:
    """A 2xx whose body never completed is a TransportFailure carrying the status."""
    result = classify(200, {}, None, httpx.ReadError("connection reset"), now=NOW)
    assert result.error_class is C.TRANSPORT_FAILURE
    assert result.status == 200
    assert result.connect_failure is False


def test_error_status_wins_over_exception() -> None:
    """When a response status arrived, it is classified even if reading the body failed."""
    result = classify(503, {"retry-after": "4"}, "", httpx.RemoteProtocolError("cut"), now=NOW)
    assert result.error_class is C.TRANSIENT_SERVER_FAILURE
    assert result.retry_after == 4.0


# --- no response: exceptions ---------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "connect_failure", "local_fault"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), True, False),
        (httpx.ConnectError("[Errno -2] Name or service not known"), True, False),
        (httpx.ConnectTimeout("timed out"), True, False),
        (httpx.PoolTimeout("no connection available"), True, True),
        (httpx.ReadTimeout("timed out"), False, False),
        (httpx.WriteTimeout("timed out"), False, False),
        (httpx.ReadError("reset"), False, False),
        (httpx.WriteError("broken pipe"), False, False),
        (httpx.RemoteProtocolError("peer closed connection"), False, False),
        (httpx.LocalProtocolError("illegal header"), False, False),
        (httpx.UnsupportedProtocol("Request URL is missing a scheme"), True, False),
        (trio.BrokenResourceError(), False, False),
        (trio.ClosedResourceError(), False, False),
        (ConnectionRefusedError(111, "Connection refused"), True, False),
        (ConnectionResetError(104, "Connection reset by peer"), False, False),
        (socket.gaierror(-2, "Name or service not known"), True, False),
        (TimeoutError(), False, False),
        (OSError(113, "No route to host"), False, False),
        (RuntimeError("something unexpected"), False, False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_exceptions_are_transport_failures(
    exc: BaseException, connect_failure: bool, local_fault: bool
) -> None:
    """Without a response every exception is a TransportFailure, flagged where it never left."""
    result = classify(None, None, None, exc, now=NOW)
    assert result.error_class is C.TRANSPORT_FAILURE
    assert result.connect_failure is connect_failure
    assert result.local_fault is local_fault
    assert result.retry_after is None
    assert result.status is None
    assert result.message.startswith(type(exc).__name__)


def test_no_response_and_no_exception_is_a_transport_failure() -> None:
    """status None without an exception is still a TransportFailure."""
    result = classify(None, None, None, now=NOW)
    assert result.error_class is C.TRANSPORT_FAILURE


def test_exception_whose_str_raises() -> None:
    """An exception that cannot be printed is described by its class name."""

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise ValueError("no")

    result = classify(None, None, None, Unprintable(), now=NOW)
    assert result.message == "Unprintable"


# --- delays --------------------------------------------------------------------------


def test_retry_after_header_seconds() -> None:
    """A Retry-After in seconds is the delay of a 429."""
    result = classify(429, {"Retry-After": "7"}, "", now=NOW)
    assert (result.error_class, result.retry_after) == (C.RATE_LIMITED, 7.0)


def test_retry_after_header_http_date_is_relative_to_now() -> None:
    """A Retry-After date is turned into seconds from the given wall clock."""
    date = email.utils.formatdate(NOW + 90, usegmt=True)
    result = classify(429, {"retry-after": date}, "", now=NOW)
    assert result.retry_after == pytest.approx(90.0)


def test_now_defaults_to_the_wall_clock() -> None:
    """Without now, an HTTP date is measured from time.time()."""
    date = email.utils.formatdate(time.time() + 100, usegmt=True)
    result = classify(429, {"retry-after": date}, "")
    assert result.retry_after is not None
    assert 90.0 <= result.retry_after <= 100.0


def test_headers_are_case_insensitive() -> None:
    """Header names match whatever their case, in a dict or in httpx.Headers."""
    for headers in (
        {"RETRY-AFTER-MS": "250"},
        {"Retry-After-Ms": "250"},
        httpx.Headers({"retry-after-ms": "250"}),
    ):
        assert classify(429, headers, "", now=NOW).retry_after == 0.25


def test_openai_reset_headers_give_the_delay() -> None:
    """OpenAI's x-ratelimit-reset-* durations are read when no Retry-After is sent."""
    headers = {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    body = json.dumps({"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}})
    result = classify(429, headers, body, now=NOW)
    assert (result.error_class, result.retry_after) == (C.RATE_LIMITED, 360.0)


def test_header_delay_wins_over_body_delay() -> None:
    """Headers are read before the body."""
    body = '{"error": {"message": "Please try again in 20s."}}'
    assert classify(429, {"retry-after": "3"}, body, now=NOW).retry_after == 3.0


def test_delay_reported_for_non_rate_classes() -> None:
    """A 503 with Retry-After keeps its class and reports the delay."""
    result = classify(503, {"retry-after": "120"}, "", now=NOW)
    assert (result.error_class, result.retry_after) == (C.TRANSIENT_SERVER_FAILURE, 120.0)


# --- the quota cap -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delay", "expected"),
    [("3599", C.RATE_LIMITED), ("3600", C.QUOTA_EXHAUSTED), ("86400", C.QUOTA_EXHAUSTED)],
)
def test_rate_limit_delay_at_the_cap_is_quota(delay: str, expected: ErrorClass) -> None:
    """A RateLimited delay at or beyond one hour becomes QuotaExhausted."""
    result = classify(429, {"retry-after": delay}, "", now=NOW)
    assert result.error_class is expected
    assert result.retry_after == float(delay)


def test_quota_cap_is_configurable() -> None:
    """quota_after_s moves the cap."""
    assert classify(429, {"retry-after": "60"}, "", now=NOW, quota_after_s=60).error_class is (
        C.QUOTA_EXHAUSTED
    )
    assert classify(429, {"retry-after": "60"}, "", now=NOW, quota_after_s=61).error_class is (
        C.RATE_LIMITED
    )


def test_quota_cap_leaves_other_classes_alone() -> None:
    """Only RateLimited turns into QuotaExhausted; a long 503 stays transient."""
    result = classify(503, {"retry-after": "7200"}, "", now=NOW)
    assert result.error_class is C.TRANSIENT_SERVER_FAILURE


# --- garbage and oddities ------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        '{"error": ',
        "[1, 2, 3]",
        '"just a string"',
        "42",
        "null",
        "true",
        '{"error": null}',
        '{"error": 5}',
        '{"error": ["a", "b"]}',
        '{"error": {"message": 7, "type": [], "code": {}, "details": "x", "metadata": 3}}',
        '{"error": {"details": [1, null, "x", {"@type": 5}]}}',
        '{"error": {"metadata": {"raw": "not json"}}}',
        '{"error": {"metadata": {"raw": "[[["}}}',
        "[" * 50_000 + "]" * 50_000,
        b"\xff\xfe\x00garbage\x80",
        "\x00\x01\x02",
        "<<<>>>",
    ],
    ids=lambda body: repr(body)[:30],
)
@pytest.mark.parametrize("status", [400, 429, 500])
def test_garbage_bodies_classify_by_status(body: bytes | str, status: int) -> None:
    """Invalid or oddly shaped bodies fall back to the status, never raising."""
    result = classify(status, {}, body, now=NOW)
    assert result.error_class is classify(status, {}, None, now=NOW).error_class
    assert len(result.message) <= 1000


def test_huge_body_is_classified_by_status() -> None:
    """A multi-megabyte body is not parsed and the status decides."""
    body = b'{"error": {"message": "' + b"x" * 5_000_000 + b'", "type": "insufficient_quota"}}'
    result = classify(429, {}, body, now=NOW)
    assert result.error_class is C.RATE_LIMITED
    assert len(result.message) <= 1000


def test_long_message_is_truncated() -> None:
    """The reported message is cut to about 1000 characters."""
    body = json.dumps({"error": {"message": "m" * 5000, "type": "api_error"}})
    result = classify(500, {}, body, now=NOW)
    assert 900 <= len(result.message) <= 1000


def test_plain_text_body_becomes_the_message() -> None:
    """A non-JSON, non-HTML body is reported as the message."""
    result = classify(502, {}, "upstream connect error or disconnect/reset before headers", now=NOW)
    assert result.error_class is C.TRANSIENT_SERVER_FAILURE
    assert result.message == "upstream connect error or disconnect/reset before headers"


def test_per_minute_quota_id_beats_the_quota_wording() -> None:
    """Gemini's 'exceeded your current quota' with a PerMinute quotaId is a rate limit."""
    body = json.dumps(
        {
            "error": {
                "code": 429,
                "message": "You exceeded your current quota, please check your plan and billing.",
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                        "violations": [{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}],
                    }
                ],
            }
        }
    )
    assert classify(429, {}, body, now=NOW).error_class is C.RATE_LIMITED


def test_error_info_reason_without_type_is_read() -> None:
    """A details entry with a reason but no @type still counts (seen from proxies)."""
    body = json.dumps(
        {
            "error": {
                "code": 400,
                "message": "API Key not found. Please pass a valid API key.",
                "status": "INVALID_ARGUMENT",
                "details": [{"reason": "API_KEY_INVALID", "domain": "googleapis.com"}],
            }
        }
    )
    result = classify(400, {}, body, now=NOW)
    assert (result.error_class, result.code) == (C.AUTH_FAILURE, "API_KEY_INVALID")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)
error_keys = st.sampled_from(
    ["message", "type", "code", "status", "details", "metadata", "innererror", "errors", "raw"]
)
error_shaped = st.fixed_dictionaries(
    {"error": st.dictionaries(error_keys, json_values, max_size=6)}
).map(json.dumps)
bodies = st.none() | st.binary(max_size=300) | st.text(max_size=300) | error_shaped
exceptions = st.none() | st.sampled_from(
    [httpx.ConnectError("x"), httpx.ReadTimeout("x"), httpx.PoolTimeout("x"), ValueError("x")]
)


@given(
    status=st.none() | st.integers(-1000, 10**6),
    headers=st.none() | st.dictionaries(st.text(max_size=25), st.text(max_size=40), max_size=5),
    body=bodies,
    exc=exceptions,
    now=st.none() | st.floats(),
    quota_after_s=st.floats(),
)
def test_classify_never_raises(
    status: int | None,
    headers: dict[str, str] | None,
    body: bytes | str | None,
    exc: BaseException | None,
    now: float | None,
    quota_after_s: float,
) -> None:
    """Any status, headers, body and exception give a well-formed Classification."""
    result = classify(status, headers, body, exc, now=now, quota_after_s=quota_after_s)
    assert result.error_class is not C.INTERRUPTED_EXECUTION
    if result.error_class is None:
        assert status is not None and 200 <= status < 300
    assert result.retry_after is None or (
        math.isfinite(result.retry_after) and result.retry_after >= 0
    )
    assert len(result.message) <= 1000


# --- errors inside a 200 stream ------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected", "status"),
    [
        # https://docs.claude.com/en/docs/build-with-claude/streaming (error event)
        (
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            C.MODEL_UNAVAILABLE,
            529,
        ),
        (
            {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}},
            C.TRANSIENT_SERVER_FAILURE,
            500,
        ),
        (
            {"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down"}},
            C.RATE_LIMITED,
            429,
        ),
        (
            {"type": "error", "error": {"type": "invalid_request_error", "message": "Bad"}},
            C.INVALID_REQUEST,
            400,
        ),
        (
            {"error": {"message": "The server had an error", "type": "server_error", "code": None}},
            C.TRANSIENT_SERVER_FAILURE,
            500,
        ),
        (
            {"error": {"message": "Quota", "type": "insufficient_quota", "code": None}},
            C.QUOTA_EXHAUSTED,
            429,
        ),
        (
            {"error": {"code": 502, "message": "Provider returned error"}},
            C.TRANSIENT_SERVER_FAILURE,
            502,
        ),
        (
            {
                "error": {
                    "code": 503,
                    "message": "The model is overloaded.",
                    "status": "UNAVAILABLE",
                }
            },
            C.MODEL_UNAVAILABLE,
            503,
        ),
        ({"error": {"message": "boom"}}, C.TRANSIENT_SERVER_FAILURE, None),
    ],
)
def test_stream_error_classified_by_its_type(
    payload: object, expected: ErrorClass, status: int | None
) -> None:
    """An error event mid-stream is classified as the status its type stands for."""
    result = classify_stream_error(payload)
    assert (result.error_class, result.status) == (expected, status)


def test_stream_error_from_raw_data_line() -> None:
    """The raw JSON text of a data line is accepted too."""
    line = '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    result = classify_stream_error(line)
    assert (result.error_class, result.message, result.code) == (
        C.MODEL_UNAVAILABLE,
        "Overloaded",
        "overloaded_error",
    )
    assert classify_stream_error(line.encode()) == result


def test_stream_error_carries_the_provider_delay() -> None:
    """A Gemini stream error with RetryInfo reports its delay."""
    payload = {
        "error": {
            "code": 429,
            "message": "Resource exhausted",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "9s"}],
        }
    }
    result = classify_stream_error(payload)
    assert (result.error_class, result.retry_after) == (C.RATE_LIMITED, 9.0)


@pytest.mark.parametrize("payload", [None, 42, "not json", "", [], {}, {"error": None}, b"\xff"])
def test_stream_error_garbage_is_a_server_failure(payload: object) -> None:
    """An error event that cannot be read is a TransientServerFailure."""
    assert classify_stream_error(payload).error_class is C.TRANSIENT_SERVER_FAILURE


@given(json_values)
def test_classify_stream_error_never_raises(payload: object) -> None:
    """Any payload gives a classification other than InterruptedExecution."""
    result = classify_stream_error(payload)
    assert result.error_class is not None
    assert result.error_class is not C.INTERRUPTED_EXECUTION


# --- layering ------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["classify", "retry_after"])
def test_classifier_modules_are_pure_core(module: str) -> None:
    """The classifier and delay parser import neither trio nor httpx nor any I/O library."""
    path = pathlib.Path(__file__).parent.parent / "oswitch" / "core" / f"{module}.py"
    tree = ast.parse(path.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"trio", "httpx", "httpcore", "anyio", "socket", "asyncio"}


# --- keys in provider messages --------------------------------------------------------

# No character of the key is in the filler ("m", " "), "***", "…" or "ReadError: ".
KEY = "SK-LIV-0123456789ABCDFGHIJKLMNOPQSTUVWXYZ"


def key_left_in(message: str) -> str:
    """Whatever characters of KEY are in ``message``."""
    return "".join(sorted(set(message) & set(KEY)))


@pytest.mark.parametrize("offset", range(len(KEY) + 1))
def test_a_key_straddling_the_cut_is_scrubbed_whole_at_every_offset(offset: int) -> None:
    """A key that the 1000-character cut falls inside, however much of it lies before
    the cut, is scrubbed before the cut: not one character of it is reported."""
    message = "m" * (999 - offset) + KEY + " m" * 600
    for result in (
        classify(400, {}, json.dumps({"error": {"message": message}}), secrets=[Secret(KEY)]),
        classify(502, {}, message, secrets=[Secret(KEY)]),  # a plain-text body
        classify_stream_error({"error": {"message": message}}, secrets=[Secret(KEY)]),
    ):
        assert len(result.message) == 1000
        assert result.message.endswith("…")
        assert key_left_in(result.message) == ""


def test_a_key_echoed_in_an_exception_is_scrubbed_before_the_cut() -> None:
    """An exception whose text carries the key (a proxy echoing a header) straddling
    the cut leaves nothing of the key either."""
    exc = httpx.ReadError("m" * (990 - len("ReadError: ")) + KEY + " m" * 600)
    result = classify(None, None, None, exc, secrets=[Secret(KEY)])
    assert key_left_in(result.message) == ""
