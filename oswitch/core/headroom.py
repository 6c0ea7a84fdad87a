"""Can this key take this request now, and if not, from when? The stricter of what the
operator configured and what the provider reported decides.

Two sources, each per dimension:

- **configured**: the target's own buckets (``rate_limit.requests_per_minute`` and,
  with the issue's runtime work, ``tokens_per_minute``), given as their state at
  ``now``: capacity, tokens available, refill rate.
- **learned**: the provider's latest :class:`ProviderLimits` for the key, less what
  was sent since it was observed (the provider's ``remaining`` does not count those
  yet).

A request needs 1 request, ``estimate.total_tokens`` tokens, ``prompt_tokens`` input
tokens and ``completion_tokens`` output tokens. A dimension whose limit is below the
need can never take it (``too_large``: route to a key that can, or refuse as
RequestTooLarge — never send it to be refused). A learned window short of the need is
not ready until its reset (providers report the time the window is full again), or,
for a provider that refills continuously, until enough has refilled; one
whose reset has passed counts as refilled; one with no reset time is trusted for
STALE_AFTER_S after it was observed, and none holds a key back longer than
MAX_LEARNED_HOLD_S after it was observed. A configured bucket short of the need is ready
when it has refilled enough.

Pure: time is passed in; one clock (the wall clock of the learned view) for all of it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import attrs

from oswitch.core.bucket import TokenBucket
from oswitch.core.ratelimit_headers import DIMENSIONS, LimitWindow, ProviderLimits
from oswitch.core.tokens import TokenEstimate

__all__ = [
    "MAX_LEARNED_HOLD_S",
    "STALE_AFTER_S",
    "ConfiguredBudget",
    "ConfiguredLimits",
    "Headroom",
    "budget_of",
    "headroom",
]

# A provider's "remaining" with no reset time is believed for one minute (the window
# every provider here limits by), then the key is tried again.
STALE_AFTER_S = 60.0
# However far ahead a reported reset is, it holds a key back at most this long after it
# was observed; then the key is tried again and its reply refreshes the view. A day's
# exhaustion costs one probe an hour (classified as the provider answers it), and a
# reset read wrongly cannot strand a key.
MAX_LEARNED_HOLD_S = 3600.0


@attrs.frozen(kw_only=True)
class ConfiguredBudget:
    """One configured bucket's state at ``now``: at most ``capacity`` at once,
    ``available`` now, refilled at ``refill_per_s``."""

    capacity: float
    available: float
    refill_per_s: float


@attrs.frozen(kw_only=True)
class ConfiguredLimits:
    """The operator's buckets for a key; None where none is configured."""

    requests: ConfiguredBudget | None = None
    tokens: ConfiguredBudget | None = None


def budget_of(bucket: TokenBucket, now: float) -> ConfiguredBudget:
    """The state of ``bucket`` at ``now`` (its own clock), for :func:`headroom`."""
    return ConfiguredBudget(
        capacity=bucket.burst, available=bucket.available(now), refill_per_s=bucket.rate_per_s
    )


@attrs.frozen(kw_only=True)
class Headroom:
    """The verdict for one key and one request at ``now``.

    ``can_take``: send it now. ``ready_at``: the moment it could be sent (``now`` when
    it can; None when ``too_large``: some limit is below the request's need, so this
    key never can). ``binding``: the limit that decided, e.g. ``"learned.tokens"`` or
    ``"configured.requests"`` — the one furthest from ready, else the one with least
    to spare; None when nothing limits the key. ``spare``: the smallest fraction of any
    known limit left after this request (0.0 to 1.0; 1.0 when nothing is known), for
    preferring keys with more headroom before any runs out.
    """

    can_take: bool
    ready_at: float | None
    too_large: bool
    binding: str | None
    spare: float


class _Check(NamedTuple):
    source: str
    ready_at: float | None  # None: too large
    spare: float


# The learned dimensions' names in verdicts, in DIMENSIONS order (built once: routing
# reads a verdict several times per request).
_LEARNED_SOURCES: tuple[str, ...] = tuple(f"learned.{dimension}" for dimension in DIMENSIONS)


def _needs(estimate: TokenEstimate) -> tuple[int, int, int, int]:
    """What ``estimate`` needs of each dimension, in DIMENSIONS order (requests: 1)."""
    prompt, completion = estimate.prompt_tokens, estimate.completion_tokens
    return (1, prompt + completion, prompt, completion)


def _fraction(left: float, whole: float) -> float:
    if not (whole > 0.0 and math.isfinite(whole)):
        return 1.0 if left >= 0.0 else 0.0
    return min(1.0, max(0.0, left / whole))


def _configured(source: str, budget: ConfiguredBudget, need: float, now: float) -> _Check:
    if need > budget.capacity:
        return _Check(source, None, 0.0)
    short = need - budget.available
    if short <= 0.0:
        return _Check(source, now, _fraction(-short, budget.capacity))
    if not (budget.refill_per_s > 0.0 and math.isfinite(budget.refill_per_s)):
        return _Check(source, None, 0.0)
    return _Check(source, now + short / budget.refill_per_s, 0.0)


def _refill_rate(window: LimitWindow, observed_at: float) -> float | None:
    """Per second, for a continuously refilled window: from ``remaining`` to ``limit``
    by ``reset_at``; None when that cannot be told."""
    limit, remaining, reset_at = window.limit, window.remaining, window.reset_at
    if limit is None or remaining is None or reset_at is None or reset_at <= observed_at:
        return None
    if limit <= remaining:
        return None
    return (limit - remaining) / (reset_at - observed_at)


def _learned(
    source: str,
    window: LimitWindow,
    need: int,
    sent: int,
    observed_at: float,
    now: float,
    *,
    continuous: bool = False,
) -> _Check | None:
    limit, remaining, reset_at = window.limit, window.remaining, window.reset_at
    if limit is not None and need > limit:
        return _Check(source, None, 0.0)
    if remaining is None:
        return None
    if reset_at is not None and reset_at <= now:
        # The window has refilled since the provider spoke.
        return None if limit is None else _Check(source, now, _fraction(limit - need, limit))
    left: float = remaining - sent
    rate = _refill_rate(window, observed_at) if continuous else None
    if rate is not None:
        assert limit is not None
        left = min(float(limit), left + rate * max(0.0, now - observed_at))
    if left >= need:
        return _Check(source, now, _fraction(left - need, limit if limit else remaining))
    until = reset_at if reset_at is not None else observed_at + STALE_AFTER_S
    if rate is not None:
        # Refilling as it goes: ready once enough has come back, not only when full.
        until = min(until, now + (need - left) / rate)
    return _Check(source, max(now, min(until, observed_at + MAX_LEARNED_HOLD_S)), 0.0)


def headroom(
    *,
    estimate: TokenEstimate,
    now: float,
    learned: ProviderLimits | None = None,
    configured: ConfiguredLimits | None = None,
    sent_requests: int = 0,
    sent_tokens: TokenEstimate | None = None,
    continuous: bool = False,
) -> Headroom:
    """Say whether a key can take a request of ``estimate`` at ``now``, and if not, when.

    ``learned`` is the provider's latest view of the key; ``sent_requests`` and
    ``sent_tokens`` are what was sent on the key since that view was observed (taken
    off its ``remaining``). ``configured`` holds the key's configured buckets, their
    state taken at ``now``. Every limit must allow the request: it can be taken when
    all allow it now, it is ready when the last of them allows it, and it is too large
    when any limit is below its need. ``continuous``: the provider refills its windows
    continuously, reaching ``limit`` at the reported reset (OpenAI, Anthropic), so a
    short learned window is ready once it has refilled enough, at the rate from
    ``remaining`` to ``limit`` by the reset; otherwise only at the reset. Never raises.
    """
    needs = _needs(estimate)
    checks: list[_Check] = []
    if configured is not None:
        if configured.requests is not None:
            checks.append(_configured("configured.requests", configured.requests, 1, now))
        if configured.tokens is not None:
            checks.append(_configured("configured.tokens", configured.tokens, needs[1], now))
    if learned is not None:
        sent_needs = (0, 0, 0, 0) if sent_tokens is None else _needs(sent_tokens)
        windows = (learned.requests, learned.tokens, learned.input_tokens, learned.output_tokens)
        for index, window in enumerate(windows):
            if window.limit is None and window.remaining is None:
                continue  # nothing reported of it: it limits nothing (_learned says None)
            check = _learned(
                _LEARNED_SOURCES[index],
                window,
                needs[index],
                sent_requests if index == 0 else sent_needs[index],
                learned.observed_at,
                now,
                continuous=continuous,
            )
            if check is not None:
                checks.append(check)
    return _verdict(checks, now)


def _verdict(checks: list[_Check], now: float) -> Headroom:
    if not checks:
        return Headroom(can_take=True, ready_at=now, too_large=False, binding=None, spare=1.0)
    # One pass: the first too-large check, the first of the latest ready, the first of
    # the least spare (what max() and min() by key would pick).
    latest = tightest = checks[0]
    for check in checks:
        ready_at = check.ready_at
        if ready_at is None:
            return Headroom(
                can_take=False, ready_at=None, too_large=True, binding=check.source, spare=0.0
            )
        assert latest.ready_at is not None
        if ready_at > latest.ready_at:
            latest = check
        if check.spare < tightest.spare:
            tightest = check
    spare = tightest.spare
    assert latest.ready_at is not None
    if latest.ready_at > now:
        return Headroom(
            can_take=False,
            ready_at=latest.ready_at,
            too_large=False,
            binding=latest.source,
            spare=spare,
        )
    return Headroom(
        can_take=True, ready_at=now, too_large=False, binding=tightest.source, spare=spare
    )
