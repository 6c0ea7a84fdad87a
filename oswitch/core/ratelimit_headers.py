"""Reading the limits a provider reports on every reply: how many requests and tokens a
key may still send, out of how many, and when the window resets.

Providers say it in four dialects, each a table below (docs/rate-limits.md lists what
each provider sends and cites its documentation):

- **OpenAI style** — OpenAI, Azure OpenAI, Groq, and most OpenAI-compatible servers:
  ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``; the reset is a Go
  duration from now (``6m0s``, ``1.2s``, ``120ms``, ``1h2m3.5s``) or, as Azure sends,
  plain seconds.
- **Anthropic** — ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
  {limit,remaining,reset}``; the reset is an RFC 3339 time.
- **Plain** — OpenRouter and many gateways: ``X-RateLimit-Limit``, ``-Remaining``,
  ``-Reset`` for requests; OpenRouter's reset is epoch milliseconds, others send epoch
  seconds, a delay in seconds, a Go duration, or a date — all are read.
- **IETF draft** — ``RateLimit-Limit``, ``-Remaining``, ``-Reset`` (seconds from now).

Pure: no I/O, no clock of its own (``now`` is the wall clock, epoch seconds, and every
``reset_at`` is on that clock). A malformed value is ignored and named in ``problems``;
nothing here raises on what a provider sent.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

from oswitch.core.clip import shorten
from oswitch.core.retry_after import parse_duration

__all__ = [
    "DIMENSIONS",
    "Dimension",
    "LimitWindow",
    "ProviderLimits",
    "parse_limits",
    "parse_lowered_limits",
]

Dimension = Literal["requests", "tokens", "input_tokens", "output_tokens"]
DIMENSIONS: tuple[Dimension, ...] = ("requests", "tokens", "input_tokens", "output_tokens")
_Field = Literal["limit", "remaining", "reset"]

# Header values longer than this are not counts or times; skip them unparsed.
_MAX_VALUE_CHARS = 128
# A count has at most this many digits (10**18 tokens is no real limit).
_MAX_COUNT_DIGITS = 18
# Plain ``X-RateLimit-Reset`` numbers: at or above this they are epoch milliseconds
# (OpenRouter), at or above _EPOCH_SECONDS_FROM epoch seconds, below it a delay in
# seconds. 1e11 ms is March 1973 and 1e11 s is the year 5138, so the ranges do not meet.
_EPOCH_MS_FROM = 1e11
_EPOCH_SECONDS_FROM = 1e9


@attrs.frozen(kw_only=True)
class LimitWindow:
    """What the provider reported for one dimension: ``limit`` per window,
    ``remaining`` in the current one, ``reset_at`` (wall clock, epoch seconds) when it
    refills. Each is None when not reported (or malformed)."""

    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None

    @property
    def reported(self) -> bool:
        """True when any of the three was reported."""
        return self.limit is not None or self.remaining is not None or self.reset_at is not None


_NOTHING = LimitWindow()


@attrs.frozen(kw_only=True)
class ProviderLimits:
    """The provider's view of one key after one reply.

    ``observed_at`` is the ``now`` it was read at; ``dialect`` names the table that
    matched ("anthropic", "openai", "plain", "ietf", or None when no header was recognised);
    ``problems`` lists each malformed header (its name and why), already clipped.
    """

    requests: LimitWindow = _NOTHING
    tokens: LimitWindow = _NOTHING
    input_tokens: LimitWindow = _NOTHING
    output_tokens: LimitWindow = _NOTHING
    observed_at: float = 0.0
    dialect: str | None = None
    problems: tuple[str, ...] = ()

    def window(self, dimension: Dimension) -> LimitWindow:
        """The window reported for ``dimension``."""
        window: LimitWindow = getattr(self, dimension)
        return window

    @property
    def reported(self) -> bool:
        """True when the provider reported anything usable."""
        return any(self.window(d).reported for d in DIMENSIONS)


# --- reading values ----------------------------------------------------------------

_Reader = Callable[[str, float], float | None]


def _count(text: str, _now: float) -> float | None:
    value = text.strip()
    # isdecimal is the regex's \d (Unicode category Nd), without the regex's cost.
    if not (value.isdecimal() and len(value) <= _MAX_COUNT_DIGITS):
        return None
    return float(int(value))


def _first_count(text: str, now: float) -> float | None:
    """A count, or the first of a policy list as the IETF draft and some gateways send
    it ("100, 100;window=60, 10000;window=86400" or "100;w=60"): its leading number."""
    head = text.split(",", 1)[0].split(";", 1)[0]
    return _count(head, now)


def _finite(seconds: float) -> float | None:
    return seconds if math.isfinite(seconds) else None


def _delay_seconds(text: str) -> float | None:
    """A Go duration ("6m0s") or plain non-negative seconds ("20", "1.5")."""
    delay = parse_duration(text)
    if delay is not None:
        return delay
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0.0:
        return None
    return number


def _rfc3339(text: str) -> float | None:
    value = text.strip()
    # Python 3.11's fromisoformat reads "Z" and offsets; require a time and a zone so
    # a bare date or a naive time (whose zone we would have to guess) is refused.
    if "T" not in value.upper() or not re.search(r"(?:[Zz]|[+-]\d\d:?\d\d)$", value):
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
        at = moment.timestamp()
    except (ValueError, OverflowError, OSError):
        return None
    return _finite(at)


def _http_date(text: str) -> float | None:
    try:
        moment = email.utils.parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    try:
        return _finite(moment.timestamp())
    except (OverflowError, OSError, ValueError):
        return None


# Delays by their text, as read (a pure function of it): a key's replies repeat a few
# ("6ms", "0s", "1m30s"), and reading one costs more than the rest of its header.
# Bounded in entries (and each text in _MAX_VALUE_CHARS): cleared when full.
_DELAYS: dict[str, float | None] = {}
_MAX_DELAYS = 256


def _reset_after(text: str, now: float) -> float | None:
    """OpenAI style: a delay from now, as a Go duration or seconds."""
    value = text.strip()
    try:
        delay = _DELAYS[value]
    except KeyError:
        delay = _delay_seconds(value)
        if len(_DELAYS) >= _MAX_DELAYS:
            _DELAYS.clear()
        _DELAYS[value] = delay
    return None if delay is None else _finite(now + delay)


def _reset_rfc3339(text: str, _now: float) -> float | None:
    """Anthropic: an absolute RFC 3339 time."""
    return _rfc3339(text)


def _reset_any(text: str, now: float) -> float | None:
    """Plain ``X-RateLimit-Reset``: epoch ms, epoch s, delay s, a duration or a date."""
    value = text.strip()
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if math.isfinite(number) and number >= 0.0:
        if number >= _EPOCH_MS_FROM:
            return number / 1000.0
        if number >= _EPOCH_SECONDS_FROM:
            return number
        return now + number
    delay = parse_duration(value)
    if delay is not None:
        return _finite(now + delay)
    at = _rfc3339(value)
    return at if at is not None else _http_date(value)


_READERS: dict[_Field, str] = {
    "limit": "not a count",
    "remaining": "not a count",
    "reset": "not a reset time",
}


# --- the tables --------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _Rule:
    header: str  # lower case
    dimension: Dimension
    field: _Field
    read: _Reader


def _family(names: Mapping[Dimension, str], pattern: str, reset: _Reader) -> tuple[_Rule, ...]:
    rules: list[_Rule] = []
    for dimension, name in names.items():
        for field in ("limit", "remaining", "reset"):
            rules.append(
                _Rule(
                    header=pattern.format(field=field, name=name),
                    dimension=dimension,
                    field=field,
                    read=reset if field == "reset" else _count,
                )
            )
    return tuple(rules)


# https://platform.openai.com/docs/guides/rate-limits (headers section);
# https://console.groq.com/docs/rate-limits; Azure OpenAI sends the same names.
_OPENAI = _family(
    {"requests": "requests", "tokens": "tokens"},
    "x-ratelimit-{field}-{name}",
    _reset_after,
)
# https://docs.anthropic.com/en/api/rate-limits (response headers).
_ANTHROPIC = _family(
    {
        "requests": "requests",
        "tokens": "tokens",
        "input_tokens": "input-tokens",
        "output_tokens": "output-tokens",
    },
    "anthropic-ratelimit-{name}-{field}",
    _reset_rfc3339,
)
# https://openrouter.ai/docs/api-reference/limits: X-RateLimit-Limit/-Remaining/-Reset
# (the reset in epoch milliseconds); the same three names are common elsewhere.
_PLAIN = (
    _Rule(header="x-ratelimit-limit", dimension="requests", field="limit", read=_first_count),
    _Rule(
        header="x-ratelimit-remaining", dimension="requests", field="remaining", read=_first_count
    ),
    _Rule(header="x-ratelimit-reset", dimension="requests", field="reset", read=_reset_any),
)
# https://datatracker.ietf.org/doc/draft-ietf-httpapi-ratelimit-headers/ (draft 07):
# RateLimit-Limit / -Remaining / -Reset, the reset in seconds from now.
_IETF = (
    _Rule(header="ratelimit-limit", dimension="requests", field="limit", read=_first_count),
    _Rule(header="ratelimit-remaining", dimension="requests", field="remaining", read=_first_count),
    _Rule(header="ratelimit-reset", dimension="requests", field="reset", read=_reset_after),
)

# First dialect with any header present wins: a reply speaks one dialect, and a proxy
# that adds plain headers in front of OpenAI's must not shadow the more detailed ones.
_DIALECTS: tuple[tuple[str, tuple[_Rule, ...]], ...] = (
    ("anthropic", _ANTHROPIC),
    ("openai", _OPENAI),
    ("plain", _PLAIN),
    ("ietf", _IETF),
)


# Every rule's header, with its dialect's rank in _DIALECTS: one pass over a reply's
# header names finds the dialect to read (the lowest rank present) without a scan
# per dialect. Every name contains "ratelimit", so others are skipped unlowered-cheap.
_RANKS: dict[str, int] = {
    rule.header: rank for rank, (_, rules) in enumerate(_DIALECTS) for rule in rules
}
_MARK = "ratelimit"


def _lowered(headers: Mapping[str, str]) -> dict[str, object]:
    """The rate-limit headers of ``headers`` by lower-cased name (others left out)."""
    lowered: dict[str, object] = {}
    try:
        items = list(headers.items())
    except Exception:
        return lowered
    for key, value in items:
        if isinstance(key, str):
            name = key.lower()
            if _MARK in name:
                lowered[name] = value
    return lowered


def parse_limits(headers: Mapping[str, str], *, now: float) -> ProviderLimits:
    """Read a reply's rate-limit headers (names matched case-insensitively) at ``now``,
    the wall clock in epoch seconds.

    Only the first dialect present is read (Anthropic, OpenAI style, plain, IETF).
    Counts must be whole non-negative numbers; a reset is read by its dialect's format
    and returned as an absolute time on ``now``'s clock. A value that does not parse is
    left None and named in ``problems``. Never raises.
    """
    return parse_lowered_limits(_lowered(headers), now=now)


def parse_lowered_limits(lowered: Mapping[str, object], *, now: float) -> ProviderLimits:
    """:func:`parse_limits` of headers whose names are already lower case (other names
    are never matched): for a caller that picked the rate-limit headers out itself."""
    rank = len(_DIALECTS)
    for name in lowered:
        rank = min(rank, _RANKS.get(name, rank))
    if rank == len(_DIALECTS):
        return ProviderLimits(observed_at=now)
    dialect, rules = _DIALECTS[rank]
    return _read(lowered, dialect, rules, now)


# Where a rule's value goes in a window's (limit, remaining, reset_at).
_SLOTS: dict[_Field, int] = {"limit": 0, "remaining": 1, "reset": 2}


def _read(
    lowered: Mapping[str, object], dialect: str, rules: tuple[_Rule, ...], now: float
) -> ProviderLimits:
    fields: dict[Dimension, list[Any]] = {}
    problems: list[str] = []
    for rule in rules:
        raw = lowered.get(rule.header)
        if raw is None:
            continue
        value: float | None = None
        if isinstance(raw, str) and len(raw) <= _MAX_VALUE_CHARS:
            value = rule.read(raw, now)
        if value is None:
            shown = repr(shorten(raw)) if isinstance(raw, str) else type(raw).__name__
            problems.append(f"{rule.header}: {_READERS[rule.field]} ({shown}), ignored")
            continue
        found = fields.get(rule.dimension)
        if found is None:
            found = fields[rule.dimension] = [None, None, None]
        slot = _SLOTS[rule.field]
        found[slot] = value if slot == 2 else int(value)
    windows = {d: LimitWindow(limit=f[0], remaining=f[1], reset_at=f[2]) for d, f in fields.items()}
    return ProviderLimits(
        requests=windows.get("requests", _NOTHING),
        tokens=windows.get("tokens", _NOTHING),
        input_tokens=windows.get("input_tokens", _NOTHING),
        output_tokens=windows.get("output_tokens", _NOTHING),
        observed_at=now,
        dialect=dialect,
        problems=tuple(problems),
    )
