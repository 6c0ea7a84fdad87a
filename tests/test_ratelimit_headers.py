"""Reading every provider's rate-limit headers into one ProviderLimits."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oswitch.core.ratelimit_headers import LimitWindow, ProviderLimits, parse_limits

NOW = 1_700_000_000.0


def _epoch(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


def test_openai_documented_example() -> None:
    """OpenAI's documented example headers give both windows, resets as Go durations
    from now (https://platform.openai.com/docs/guides/rate-limits)."""
    headers = {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-remaining-tokens": "149984",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    limits = parse_limits(headers, now=NOW)
    assert limits == ProviderLimits(
        requests=LimitWindow(limit=60, remaining=59, reset_at=NOW + 1.0),
        tokens=LimitWindow(limit=150000, remaining=149984, reset_at=NOW + 360.0),
        observed_at=NOW,
        dialect="openai",
    )


def test_openai_millisecond_resets_seen_in_replies() -> None:
    """Resets of a few milliseconds, as OpenAI sends on a lightly used key, are read
    exactly (https://community.openai.com/t/1268905 shows "12ms" and "9ms")."""
    limits = parse_limits(
        {"x-ratelimit-reset-requests": "12ms", "x-ratelimit-reset-tokens": "9ms"}, now=NOW
    )
    assert limits.requests.reset_at == NOW + 0.012
    assert limits.tokens.reset_at == NOW + 0.009


def test_groq_documented_example() -> None:
    """Groq's documented example (fractional seconds inside a Go duration) reads the same
    way as OpenAI's (https://console.groq.com/docs/rate-limits)."""
    headers = {
        "x-ratelimit-limit-requests": "14400",
        "x-ratelimit-limit-tokens": "18000",
        "x-ratelimit-remaining-requests": "14370",
        "x-ratelimit-remaining-tokens": "17997",
        "x-ratelimit-reset-requests": "2m59.56s",
        "x-ratelimit-reset-tokens": "7.66s",
        "retry-after": "2",
    }
    limits = parse_limits(headers, now=NOW)
    assert limits.requests == LimitWindow(limit=14400, remaining=14370, reset_at=NOW + 179.56)
    assert limits.tokens == LimitWindow(limit=18000, remaining=17997, reset_at=NOW + 7.66)
    assert limits.problems == ()


def test_azure_plain_second_resets_and_negative_placeholders() -> None:
    """Azure OpenAI's resets in plain seconds are read, and its "-1" placeholders are
    ignored and reported, never taken as a limit
    (https://learn.microsoft.com/en-us/answers/questions/5625878)."""
    headers = {
        "x-ratelimit-remaining-requests": "99",
        "x-ratelimit-reset-requests": "20",
        "x-ratelimit-limit-tokens": "-1",
        "x-ratelimit-remaining-tokens": "-1",
        "x-ratelimit-reset-tokens": "0",
    }
    limits = parse_limits(headers, now=NOW)
    assert limits.requests == LimitWindow(remaining=99, reset_at=NOW + 20.0)
    assert limits.tokens == LimitWindow(reset_at=NOW)
    assert limits.problems == (
        "x-ratelimit-limit-tokens: not a count ('-1'), ignored",
        "x-ratelimit-remaining-tokens: not a count ('-1'), ignored",
    )


def test_anthropic_headers_with_rfc3339_resets() -> None:
    """Anthropic's four dimensions are read with their RFC 3339 resets as absolute times
    (https://docs.anthropic.com/en/api/rate-limits; values from a recorded reply)."""
    headers = {
        "anthropic-ratelimit-input-tokens-limit": "80000",
        "anthropic-ratelimit-input-tokens-remaining": "80000",
        "anthropic-ratelimit-input-tokens-reset": "2025-08-21T12:40:59Z",
        "anthropic-ratelimit-output-tokens-limit": "16000",
        "anthropic-ratelimit-output-tokens-remaining": "16000",
        "anthropic-ratelimit-output-tokens-reset": "2025-08-21T12:41:00Z",
        "anthropic-ratelimit-requests-limit": "1000",
        "anthropic-ratelimit-requests-remaining": "999",
        "anthropic-ratelimit-requests-reset": "2025-08-21T12:40:59Z",
        "anthropic-ratelimit-tokens-limit": "96000",
        "anthropic-ratelimit-tokens-remaining": "96000",
        "anthropic-ratelimit-tokens-reset": "2025-08-21T12:40:59+00:00",
    }
    at = _epoch("2025-08-21T12:40:59+00:00")
    limits = parse_limits(headers, now=NOW)
    assert limits == ProviderLimits(
        requests=LimitWindow(limit=1000, remaining=999, reset_at=at),
        tokens=LimitWindow(limit=96000, remaining=96000, reset_at=at),
        input_tokens=LimitWindow(limit=80000, remaining=80000, reset_at=at),
        output_tokens=LimitWindow(limit=16000, remaining=16000, reset_at=at + 1.0),
        observed_at=NOW,
        dialect="anthropic",
    )


def test_anthropic_reset_without_a_zone_is_refused() -> None:
    """A reset time without a zone is not guessed at: it is ignored and reported."""
    limits = parse_limits({"anthropic-ratelimit-requests-reset": "2025-08-21T12:40:59"}, now=NOW)
    assert limits.requests == LimitWindow()
    assert limits.problems == (
        "anthropic-ratelimit-requests-reset: not a reset time ('2025-08-21T12:40:59'), ignored",
    )


def test_openrouter_reset_in_epoch_milliseconds() -> None:
    """OpenRouter's X-RateLimit-* headers give the requests window, its reset in epoch
    milliseconds (https://openrouter.ai/docs/api-reference/limits)."""
    headers = {
        "X-RateLimit-Limit": "20",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "1741305600000",
    }
    limits = parse_limits(headers, now=NOW)
    assert limits.requests == LimitWindow(limit=20, remaining=0, reset_at=1_741_305_600.0)
    assert limits.dialect == "plain"


def test_plain_reset_in_epoch_seconds_delay_or_date() -> None:
    """A plain X-RateLimit-Reset in epoch seconds, in delay seconds, as a Go duration or
    as an HTTP date is read as the absolute time it names."""
    for raw, expected in [
        ("1741305600", 1_741_305_600.0),
        ("30", NOW + 30.0),
        ("1m30s", NOW + 90.0),
        ("Tue, 14 Nov 2023 22:14:20 GMT", 1_700_000_060.0),
        ("2023-11-14T22:14:20Z", 1_700_000_060.0),
    ]:
        assert parse_limits({"x-ratelimit-reset": raw}, now=NOW).requests.reset_at == expected


def test_names_match_case_insensitively() -> None:
    """Header names are matched whatever their case."""
    limits = parse_limits({"X-RATELIMIT-REMAINING-TOKENS": "7"}, now=NOW)
    assert limits.tokens.remaining == 7


def test_one_dialect_per_reply() -> None:
    """When a proxy adds plain headers beside OpenAI's, the detailed OpenAI-style ones are
    read and the plain ones do not overwrite the requests window."""
    headers = {
        "x-ratelimit-remaining-requests": "5",
        "x-ratelimit-remaining": "900",
    }
    limits = parse_limits(headers, now=NOW)
    assert limits.dialect == "openai"
    assert limits.requests.remaining == 5


def test_no_headers_reports_nothing() -> None:
    """A reply without rate-limit headers yields an empty view, no dialect, no problems."""
    limits = parse_limits({"content-type": "application/json"}, now=NOW)
    assert limits == ProviderLimits(observed_at=NOW)
    assert not limits.reported


def test_malformed_values_are_ignored_and_clipped_in_problems() -> None:
    """Garbage, fractions, huge numbers and over-long values are ignored; each problem
    names its header and never carries more than a clipped echo of the value."""
    headers = {
        "x-ratelimit-limit-requests": "1.5",
        "x-ratelimit-remaining-requests": "9" * 40,
        "x-ratelimit-reset-requests": "-3s",
        "x-ratelimit-limit-tokens": "x" * 10_000,
        "x-ratelimit-remaining-tokens": "12",
    }
    limits = parse_limits(headers, now=NOW)
    assert limits.requests == LimitWindow()
    assert limits.tokens == LimitWindow(remaining=12)
    assert [p.split(":")[0] for p in limits.problems] == [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
    ]
    assert all(len(p) < 400 for p in limits.problems)


_NAMES = st.sampled_from(
    [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-input-tokens-remaining",
        "X-RateLimit-Reset",
        "x-ratelimit-remaining",
    ]
)


@given(
    headers=st.dictionaries(
        st.one_of(_NAMES, st.text(max_size=30)),
        st.one_of(st.text(max_size=200), st.integers(), st.none(), st.floats()),
        max_size=8,
    ),
    now=st.floats(allow_nan=True, allow_infinity=True),
)
def test_never_raises_on_arbitrary_headers(headers: dict[str, object], now: float) -> None:
    """Whatever names, values (of any type) and clock a reply brings, parsing returns."""
    limits = parse_limits(headers, now=now)  # type: ignore[arg-type]
    for window in (limits.requests, limits.tokens, limits.input_tokens, limits.output_tokens):
        assert window.limit is None or window.limit >= 0
        assert window.remaining is None or window.remaining >= 0


_DURATION_PARTS = st.tuples(
    st.integers(0, 48), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999)
)


def _go(parts: tuple[int, int, int, int]) -> str:
    hours, minutes, seconds, millis = parts
    text = f"{seconds}.{millis:03d}s"
    if minutes or hours:
        text = f"{minutes}m" + text
    if hours:
        text = f"{hours}h" + text
    return text


@given(first=_DURATION_PARTS, second=_DURATION_PARTS)
def test_durations_parse_monotonically(
    first: tuple[int, int, int, int], second: tuple[int, int, int, int]
) -> None:
    """A longer Go-duration reset never yields an earlier reset time."""

    def reset(parts: tuple[int, int, int, int]) -> float:
        at = parse_limits({"x-ratelimit-reset-tokens": _go(parts)}, now=NOW).tokens.reset_at
        assert at is not None
        return at

    def seconds(parts: tuple[int, int, int, int]) -> int:
        return ((parts[0] * 60 + parts[1]) * 60 + parts[2]) * 1000 + parts[3]

    if seconds(first) <= seconds(second):
        assert reset(first) <= reset(second)
    else:
        assert reset(first) >= reset(second)


def test_plain_policy_lists_read_their_leading_count() -> None:
    """A plain X-RateLimit-Limit carrying a policy list ("100, 100;window=60, ...")
    gives its leading count (https://developer.whoop.com/docs/developing/rate-limiting)."""
    headers = {
        "X-RateLimit-Limit": "100, 100;window=60, 10000;window=86400",
        "X-RateLimit-Remaining": "98",
        "X-RateLimit-Reset": "3",
    }
    limits = parse_limits(headers, now=NOW)
    assert limits.requests == LimitWindow(limit=100, remaining=98, reset_at=NOW + 3.0)
    assert limits.problems == ()


def test_ietf_draft_headers() -> None:
    """The IETF draft's RateLimit-* headers give the requests window, the reset in
    seconds from now (https://datatracker.ietf.org/doc/draft-ietf-httpapi-ratelimit-headers/)."""
    headers = {"RateLimit-Limit": "10", "RateLimit-Remaining": "0", "RateLimit-Reset": "50"}
    limits = parse_limits(headers, now=NOW)
    assert limits.requests == LimitWindow(limit=10, remaining=0, reset_at=NOW + 50.0)
    assert limits.dialect == "ietf"


def test_reset_delays_are_remembered_within_a_bound() -> None:
    """Reset delays are memoised by their text, each still read right, and the memo
    never holds more than its bound however many distinct texts arrive."""
    from oswitch.core import ratelimit_headers

    for n in range(3 * ratelimit_headers._MAX_DELAYS):
        headers = {"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": f"{n}ms"}
        for _ in range(2):  # read, then remembered
            limits = parse_limits(headers, now=NOW)
            assert limits.requests.reset_at == pytest.approx(NOW + n / 1000.0)
        assert len(ratelimit_headers._DELAYS) <= ratelimit_headers._MAX_DELAYS
    garbage = {"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "soon"}
    for _ in range(2):
        assert parse_limits(garbage, now=NOW).requests.reset_at is None
