"""A fake provider key with real per-minute limits: ``TokenMeter`` enforces a token
budget (and optionally a request budget) the way OpenAI and Anthropic describe theirs,
and reports what is left on every reply, in either provider's headers.

Its accounting, per key:

- a bucket of ``tokens_per_minute`` tokens, refilled continuously (full again one
  minute after it was empty); a request is admitted when the bucket holds its prompt
  tokens plus its completion limit (``max_completion_tokens`` / ``max_tokens``,
  else ``default_max_tokens``), which are taken; once answered, the unused part of
  the completion limit is given back. Prompt tokens are the fake's own count:
  ``ceil(characters of the messages' text / 4)``;
- a request it cannot admit gets a 429 in OpenAI's shape ("Rate limit reached for
  tokens ... Please try again in 1.2s"), with the headers;
- every reply, 429s included, carries the limits: OpenAI style
  (``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, resets as Go durations
  until the bucket is full) or Anthropic style (``anthropic-ratelimit-{requests,tokens}-
  {limit,remaining,reset}``, resets as RFC 3339 times).

The completion length is ``completion_fraction`` of its limit (at least 1 token). The
meter records what it admitted and answered (``admitted``, ``prompt_tokens``,
``completion_tokens``, ``rejected``) so tests and the bench can compare them with
what oswitch accounted. Time runs on trio's clock; the meter's minute lasts
``60 * time_scale`` seconds of it (resets and delays are reported on trio's clock).
"""

from __future__ import annotations

import datetime
import json
import math
import time
from collections.abc import Mapping
from typing import Any, Literal

import attrs
import httpx
import trio

from oswitch.core.bucket import TokenBucket
from oswitch.testing.behaviour import Behaviour
from oswitch.testing.replies import completion

HeaderStyle = Literal["openai", "anthropic", "none"]


def go_duration(seconds: float) -> str:
    """``seconds`` as OpenAI writes a reset: ``6m0s``, ``1.2s``, ``120ms``."""
    if seconds < 1.0:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60.0)
    shown = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{shown}s" if minutes else f"{shown}s"


def _rfc3339(epoch: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    chars = 0
    for message in body.get("messages") or ():
        if isinstance(message, Mapping):
            content = message.get("content")
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                chars += sum(
                    len(part.get("text") or "") for part in content if isinstance(part, Mapping)
                )
    return math.ceil(chars / 4)


def _limit(body: Mapping[str, Any], default: int) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return default


@attrs.define
class TokenMeter:
    """One key's limits on the fake's side (see the module doc).

    ``requests_per_minute`` None: requests are not limited. ``headers``: which
    provider's headers report the limits ("none": none are sent).
    """

    tokens_per_minute: float
    requests_per_minute: float | None = None
    headers: HeaderStyle = "openai"
    completion_fraction: float = 0.5
    default_max_tokens: int = 1024
    time_scale: float = 1.0
    admitted: int = 0
    rejected: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # (trio time, prompt + completion tokens) of every answer, for any minute's total.
    admissions: list[tuple[float, int]] = attrs.Factory(list)
    _tokens: TokenBucket | None = None
    _requests: TokenBucket | None = None

    def _buckets(self, now: float) -> tuple[TokenBucket, TokenBucket | None]:
        minute = 60.0 * self.time_scale
        if self._tokens is None:
            self._tokens = TokenBucket(
                rate_per_s=self.tokens_per_minute / minute, burst=self.tokens_per_minute, now=now
            )
            if self.requests_per_minute is not None:
                self._requests = TokenBucket(
                    rate_per_s=self.requests_per_minute / minute,
                    burst=self.requests_per_minute,
                    now=now,
                )
        return self._tokens, self._requests

    def window_peak(self, window_s: float = 60.0) -> int:
        """The most tokens answered (prompt and completion) within any ``window_s``
        seconds of the meter's minute (``window_s * time_scale`` on trio's clock)."""
        span = window_s * self.time_scale
        peak, start, total = 0, 0, 0
        for at, taken in self.admissions:
            total += taken
            while self.admissions[start][0] <= at - span:
                total -= self.admissions[start][1]
                start += 1
            peak = max(peak, total)
        return peak

    def headers_now(self, now: float) -> dict[str, str]:
        """The limit headers a reply sent at ``now`` carries."""
        tokens, requests = self._buckets(now)
        windows = [("tokens", tokens)]
        if requests is not None:
            windows.append(("requests", requests))
        out: dict[str, str] = {}
        for name, bucket in windows:
            left = max(0.0, bucket.available(now))
            # Until full again, on trio's clock (what a provider's reset means).
            until_full = (bucket.burst - bucket.available(now)) / bucket.rate_per_s
            if self.headers == "openai":
                out[f"x-ratelimit-limit-{name}"] = str(int(bucket.burst))
                out[f"x-ratelimit-remaining-{name}"] = str(math.floor(left))
                out[f"x-ratelimit-reset-{name}"] = go_duration(until_full)
            elif self.headers == "anthropic":
                out[f"anthropic-ratelimit-{name}-limit"] = str(int(bucket.burst))
                out[f"anthropic-ratelimit-{name}-remaining"] = str(math.floor(left))
                out[f"anthropic-ratelimit-{name}-reset"] = _rfc3339(time.time() + until_full)
        return out

    def admit(self, body: Mapping[str, Any], now: float) -> tuple[int, int] | float:
        """Admit a request: its (prompt tokens, completion limit), or the seconds (on
        trio's clock) until it could be admitted."""
        tokens, requests = self._buckets(now)
        prompt = _prompt_tokens(body)
        limit = _limit(body, self.default_max_tokens)
        need = min(float(prompt + limit), tokens.burst)
        wait = tokens.wait_time(now, need)
        if requests is not None:
            wait = max(wait, requests.wait_time(now))
        if wait > 0.0:
            self.rejected += 1
            return wait
        tokens.try_take(now, need)
        if requests is not None:
            requests.try_take(now)
        self.admitted += 1
        return prompt, limit

    def answered(self, prompt: int, limit: int, now: float) -> int:
        """Count an admitted request's answer; returns its completion tokens and gives
        back the unused part of its completion limit."""
        used = max(1, math.floor(limit * self.completion_fraction)) if limit else 0
        tokens, _ = self._buckets(now)
        tokens.adjust(now, used - limit)
        self.prompt_tokens += prompt
        self.completion_tokens += used
        self.admissions.append((now, prompt + used))
        return used


def metered(meter: TokenMeter, text: str = "ok", *, latency: float = 0.0) -> Behaviour:
    """Answer within ``meter``'s limits (a completion whose ``usage`` is the meter's
    count), or 429 past them; every reply carries the meter's limit headers."""

    async def respond(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        now = trio.current_time()
        admitted = meter.admit(body, now)
        if isinstance(admitted, float):
            headers = meter.headers_now(now)
            message = (
                f"Rate limit reached for tokens on this key. Please try again in "
                f"{go_duration(admitted)}."
            )
            error = {"message": message, "type": "tokens", "code": "rate_limit_exceeded"}
            return httpx.Response(429, json={"error": error}, headers=headers)  # noqa: ASYNC910 (a Responder: handle checkpoints)
        prompt, limit = admitted
        if latency > 0:
            await trio.sleep(latency)
        used = meter.answered(prompt, limit, trio.current_time())
        served = str(body.get("model") or "fake-model")
        answer = completion(text, model=served)
        answer["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": used,
            "total_tokens": prompt + used,
        }
        return httpx.Response(  # noqa: ASYNC910 (a Responder: handle checkpoints)
            200,
            content=json.dumps(answer).encode(),
            headers={
                "content-type": "application/json",
                **meter.headers_now(trio.current_time()),
            },
        )

    return Behaviour(name="metered", respond=respond)
