"""Exponential backoff with jitter, and choosing between it and a provider's own delay."""

from __future__ import annotations

import math
import random
from typing import Literal

import attrs

Jitter = Literal["full", "equal", "none"]


def _non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a finite number >= 0 (got {value})")


def _at_least_one(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (value >= 1.0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a finite number >= 1 (got {value})")


@attrs.frozen(kw_only=True)
class BackoffSettings:
    """Backoff between retries of one target; defaults are o-switcher's (1 s ×2 up to 30 s).

    Raises ``ValueError`` on construction when a value is out of range.
    """

    base_s: float = attrs.field(default=1.0, validator=_non_negative)
    multiplier: float = attrs.field(default=2.0, validator=_at_least_one)
    max_s: float = attrs.field(default=30.0, validator=_non_negative)
    jitter: Jitter = attrs.field(
        default="full", validator=attrs.validators.in_(("full", "equal", "none"))
    )


@attrs.frozen(kw_only=True)
class RetryDelay:
    """How long to wait before the next try, and where that figure came from.

    ``quota_exhausted`` means the provider asked for so long a pause that the target
    is to be treated as QuotaExhausted for ``wait_s`` rather than waited on.
    """

    wait_s: float
    from_provider: bool
    quota_exhausted: bool


def backoff_delay(settings: BackoffSettings, attempt: int, rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt`` (0 is the first retry).

    ``cap = min(max_s, base_s * multiplier ** attempt)``, then by ``jitter``:
    ``"full"`` → ``uniform(0, cap)``; ``"equal"`` → ``cap / 2 + uniform(0, cap / 2)``;
    ``"none"`` → ``cap``. Huge attempt numbers give ``max_s``, never an overflow.
    Raises ``ValueError`` when ``attempt`` is negative.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0 (got {attempt})")
    try:
        grown = settings.base_s * settings.multiplier**attempt
    except OverflowError:
        grown = math.inf
    # base_s == 0 times an infinite growth would be NaN; it means "no delay".
    cap = 0.0 if settings.base_s == 0.0 else min(settings.max_s, grown)
    if settings.jitter == "full":
        return rng.uniform(0.0, cap)
    if settings.jitter == "equal":
        return cap / 2.0 + rng.uniform(0.0, cap / 2.0)
    return cap


def retry_delay(
    settings: BackoffSettings,
    attempt: int,
    rng: random.Random,
    *,
    provider_delay: float | None,
    quota_cap_s: float,
) -> RetryDelay:
    """Decide the wait before retry number ``attempt``.

    A provider delay (Retry-After and kin) wins and is used exactly, without jitter:
    ``wait_s = max(0, provider_delay)``, and when ``provider_delay >= quota_cap_s``
    the result is ``quota_exhausted=True`` (a day-long "retry after" is an exhausted
    quota, not a pause). Without one (None or NaN) ``wait_s`` is
    :func:`backoff_delay`. ``rng`` is drawn from only in that case.
    Raises ``ValueError`` when ``attempt`` is negative.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0 (got {attempt})")
    if provider_delay is not None and not math.isnan(provider_delay):
        wait = max(0.0, provider_delay)
        return RetryDelay(wait_s=wait, from_provider=True, quota_exhausted=wait >= quota_cap_s)
    return RetryDelay(
        wait_s=backoff_delay(settings, attempt, rng), from_provider=False, quota_exhausted=False
    )
