"""A key's limits as its provider last told them, kept across replies.

:func:`~oswitch.core.ratelimit_headers.parse_limits` reads one reply; a reply may
carry only some of the headers (Anthropic's 429 may name only the window it hit, a
proxy may drop some), so each reply is merged into what was known
(:meth:`LearnedLimits.observe`): a field the reply gives replaces the old one, a field
it leaves out is kept while its window has not reset, less what was sent on the key
since it was observed. What is sent between two replies is counted here too
(:meth:`LearnedLimits.record_sent`), so the verdict (:func:`oswitch.core.headroom.
headroom`) can take it off the provider's ``remaining``.

Two clocks meet here, once: providers give resets on the wall clock (RFC 3339 times,
or delays from the moment of the reply), the engine runs on trio's clock.
:func:`on_engine_clock` moves a freshly parsed view onto the engine's clock at the
edge, with both clocks' readings passed in; everything after works on one clock.

Pure: no I/O, no clock of its own.
"""

from __future__ import annotations

import attrs

from oswitch.core.ratelimit_headers import DIMENSIONS, Dimension, LimitWindow, ProviderLimits
from oswitch.core.tokens import TokenEstimate

__all__ = ["CONTINUOUS_DIALECTS", "LearnedLimits", "merge_limits", "on_engine_clock"]

# Dialects whose providers document a continuously refilled bucket, the reset being the
# moment it is full again (OpenAI: "the time until the rate limit resets to its initial
# state"; Anthropic: "replenished continuously ... fully replenished" at the reset).
# A short key there is ready as soon as it has refilled enough, not at the reset.
CONTINUOUS_DIALECTS = frozenset({"openai", "anthropic"})

_NO_TOKENS = TokenEstimate(prompt_tokens=0, completion_tokens=0)


def on_engine_clock(
    limits: ProviderLimits, *, wall_now: float, engine_now: float
) -> ProviderLimits:
    """``limits`` parsed at ``wall_now`` (epoch seconds), with every time moved onto
    the engine's clock, whose reading at that moment is ``engine_now``. Never raises."""
    shift = engine_now - wall_now

    def moved(window: LimitWindow) -> LimitWindow:
        if window.reset_at is None:
            return window
        # Built directly: attrs.evolve costs several times as much, once per reply.
        return LimitWindow(
            limit=window.limit, remaining=window.remaining, reset_at=window.reset_at + shift
        )

    return ProviderLimits(
        requests=moved(limits.requests),
        tokens=moved(limits.tokens),
        input_tokens=moved(limits.input_tokens),
        output_tokens=moved(limits.output_tokens),
        observed_at=engine_now,
        dialect=limits.dialect,
        problems=limits.problems,
    )


def _sent_of(dimension: Dimension, requests: int, tokens: TokenEstimate) -> int:
    if dimension == "requests":
        return requests
    if dimension == "tokens":
        return tokens.total_tokens
    if dimension == "input_tokens":
        return tokens.prompt_tokens
    return tokens.completion_tokens


def _carried(window: LimitWindow, sent: int, now: float) -> LimitWindow:
    """An old window as it stands at ``now``: past its reset its count is refilled
    (forgotten, the limit kept); else what was sent since is taken off it."""
    if window.reset_at is not None and window.reset_at <= now:
        return LimitWindow(limit=window.limit)
    if window.remaining is None:
        return window
    return attrs.evolve(window, remaining=max(0, window.remaining - sent))


def merge_limits(
    old: ProviderLimits | None,
    new: ProviderLimits,
    *,
    sent_requests: int = 0,
    sent_tokens: TokenEstimate = _NO_TOKENS,
) -> ProviderLimits:
    """What is known after ``new`` arrives, ``old`` having been observed before it and
    ``sent_requests`` / ``sent_tokens`` sent on the key since ``old`` was observed.

    Per dimension and field, ``new`` wins where it reports the field; a field it
    leaves out comes from ``old`` as it stands at ``new.observed_at`` (past its
    reset: the count forgotten, the limit kept; else less what was sent since). A
    reply that reports nothing keeps ``old`` (so carried) and its dialect. Never raises.
    """
    if old is None:
        return new
    now = new.observed_at
    windows: dict[Dimension, LimitWindow] = {}
    for dimension in DIMENSIONS:
        fresh = new.window(dimension)
        if fresh.limit is not None and fresh.remaining is not None and fresh.reset_at is not None:
            windows[dimension] = fresh  # every field new: nothing of old is carried
            continue
        carried = _carried(
            old.window(dimension), _sent_of(dimension, sent_requests, sent_tokens), now
        )
        if not fresh.reported:
            windows[dimension] = carried
            continue
        windows[dimension] = LimitWindow(
            limit=fresh.limit if fresh.limit is not None else carried.limit,
            remaining=fresh.remaining if fresh.remaining is not None else carried.remaining,
            reset_at=fresh.reset_at if fresh.reset_at is not None else carried.reset_at,
        )
    if new.dialect is not None and all(windows[d] is new.window(d) for d in DIMENSIONS):
        return new  # the reply said it all (or nothing was known of the rest)
    return ProviderLimits(
        requests=windows["requests"],
        tokens=windows["tokens"],
        input_tokens=windows["input_tokens"],
        output_tokens=windows["output_tokens"],
        observed_at=now,
        dialect=new.dialect or old.dialect,
        problems=new.problems,
    )


@attrs.define
class LearnedLimits:
    """One key's learned view (``view``, None until a reply reported limits) and what
    was sent on the key since it was observed. The target's actor is its only writer."""

    view: ProviderLimits | None = None
    sent_requests: int = 0
    sent_tokens: TokenEstimate = _NO_TOKENS

    def observe(self, limits: ProviderLimits) -> None:
        """Merge one reply's limits (already on the engine's clock) into the view; a
        reply that reports nothing changes nothing."""
        if not limits.reported:
            return
        self.view = merge_limits(
            self.view, limits, sent_requests=self.sent_requests, sent_tokens=self.sent_tokens
        )
        self.sent_requests = 0
        self.sent_tokens = _NO_TOKENS

    def record_sent(self, estimate: TokenEstimate) -> None:
        """One attempt of ``estimate`` was sent since the view was observed."""
        if self.view is None:
            return
        self.sent_requests += 1
        self.sent_tokens = TokenEstimate(
            prompt_tokens=self.sent_tokens.prompt_tokens + estimate.prompt_tokens,
            completion_tokens=self.sent_tokens.completion_tokens + estimate.completion_tokens,
        )

    def unrecord_sent(self, estimate: TokenEstimate) -> None:
        """An attempt recorded by :meth:`record_sent` was not sent after all (refused
        or released before it left); never below nothing (a newer report reset the
        counts meanwhile)."""
        if self.view is None:
            return
        self.sent_requests = max(0, self.sent_requests - 1)
        self.sent_tokens = TokenEstimate(
            prompt_tokens=max(0, self.sent_tokens.prompt_tokens - estimate.prompt_tokens),
            completion_tokens=max(
                0, self.sent_tokens.completion_tokens - estimate.completion_tokens
            ),
        )

    @property
    def continuous(self) -> bool:
        """Whether the provider refills continuously (see :data:`CONTINUOUS_DIALECTS`)."""
        return self.view is not None and self.view.dialect in CONTINUOUS_DIALECTS
