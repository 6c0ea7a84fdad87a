"""A target's learned deadlines: its :class:`~oswitch.core.deadline_learning.TimingBook`
read through its settings.

The target actor owns one :class:`TargetTimings`; its attempts feed the histograms
of the model they serve (the exchange and the stream reader observe first tokens,
chunk gaps and response times, and censored samples when an attempt is cut short),
and the dispatcher reads the deadlines from here: where to hedge a stream, how long
a non-streamed attempt may take. Everything here is synchronous bookkeeping.

Which samples are censored (``observe_longer_than``), and why only these:

- a streamed attempt cancelled (a lost hedge, the caller gone) or abandoned after
  its response headers came but before its first content: the model is working,
  and its first token takes longer than that;
- a non-streamed attempt cancelled or abandoned before its reply: its one phase is
  the time to the response, which takes longer than that.

Silence *before the headers* of a stream is not a first-token sample: a target
that accepts a connection and never answers is broken, not slow, and learning it
as slow would hedge it ever later. A stall between chunks is not a gap sample
either, for the same reason: it would lengthen the next stall deadline.
"""

from __future__ import annotations

import attrs

from oswitch.core.deadline_learning import (
    MAX_MODELS,
    Deadline,
    DeadlinePolicy,
    DeadlineSource,
    LatencyHistogram,
    ModelTimings,
    TimingBook,
    learned_deadline,
)
from oswitch.runtime.settings import TargetSettings

# Read for a model never seen: nothing is ever observed into it.
_NOTHING_SEEN = LatencyHistogram(half_life_s=1.0)
# A deadline is re-read from its histogram (a scan of its buckets) once its
# observations have grown by this fraction since the last reading, and on every new
# observation while they are few (below twice the policy's minimum): every attempt
# reads its deadlines, and the chunk gaps of a busy target grow by thousands a minute.
_REREAD_GROWTH = 1.0 / 32.0


@attrs.frozen(kw_only=True)
class ModelDeadlines:
    """The deadlines one target applies to one model right now (``list_targets``):
    ``first_token`` is where a stream is hedged (or abandoned, when it is an
    explicit ``first_token_timeout_ms``), ``chunk_gap`` the stall limit,
    ``response_headers`` the limit of a non-streamed attempt."""

    model: str
    first_token: Deadline
    chunk_gap: Deadline
    response_headers: Deadline


class TargetTimings:
    """One target's timings per model and the deadlines they give (module doc)."""

    def __init__(self, settings: TargetSettings) -> None:
        self.settings = settings
        self._book = TimingBook(half_life_s=settings.policies.half_life_s)
        # id(histogram) -> (histogram, policy, override, observations, deadline)
        self._read: dict[
            int, tuple[LatencyHistogram, DeadlinePolicy, float | None, int, Deadline]
        ] = {}

    def _deadline(
        self, histogram: LatencyHistogram, policy: DeadlinePolicy, override_s: float | None
    ) -> Deadline:
        """``learned_deadline`` of ``histogram``, re-read only as often as it can change
        enough to matter (``_REREAD_GROWTH``)."""
        count = histogram.observations
        cached = self._read.get(id(histogram))
        if cached is not None:
            seen, was_policy, was_override, was_count, deadline = cached
            if seen is histogram and was_policy is policy and was_override == override_s:
                fresh = count == was_count or (
                    was_count >= 2 * policy.min_observations
                    and count - was_count < was_count * _REREAD_GROWTH
                )
                if fresh:
                    return deadline
        deadline = learned_deadline(histogram, policy, override_s=override_s)
        if len(self._read) > 8 * MAX_MODELS:  # forgotten models' histograms linger
            self._read.clear()
        self._read[id(histogram)] = (histogram, policy, override_s, count, deadline)
        return deadline

    def for_model(self, model: str) -> ModelTimings:
        """The histograms ``model``'s attempts feed (created cold when new)."""
        return self._book.for_model(model)

    def _histograms(self, model: str) -> tuple[LatencyHistogram, ...]:
        timings = self._book.get(model)
        if timings is None:
            return (_NOTHING_SEEN, _NOTHING_SEEN, _NOTHING_SEEN)
        return (timings.first_token, timings.chunk_gap, timings.response_headers)

    def first_token(self, model: str) -> Deadline:
        """The first-token deadline of a stream: the explicit setting, else learned."""
        first, _, _ = self._histograms(model)
        s = self.settings
        return self._deadline(first, s.policies.first_token, s.first_token_override_s)

    def hedge_point(self, model: str) -> Deadline | None:
        """Where a stream is hedged when ``hedge_after_ms`` is not set: the learned
        first-token deadline. None with an explicit ``first_token_timeout_ms``: that
        is a hard limit, where the attempt is abandoned and failed over."""
        if self.settings.first_token_override_s is not None:
            return None
        return self.first_token(model)

    def silence_cap(self, model: str) -> Deadline:
        """How long a stream may go without content before it is abandoned for good."""
        s = self.settings
        if s.first_token_override_s is not None:
            return self.first_token(model)
        learned = self.first_token(model)
        return Deadline(
            seconds=s.policies.first_token.cap_s,
            source=DeadlineSource.CAP,
            quantile_s=learned.quantile_s,
            observations=learned.observations,
        )

    def chunk_gap(self, model: str) -> Deadline:
        """The longest gap between content chunks before a stream counts as stalled."""
        _, gap, _ = self._histograms(model)
        s = self.settings
        return self._deadline(gap, s.policies.chunk_gap, s.idle_override_s)

    def response_headers(self, model: str) -> Deadline:
        """How long a non-streamed attempt may wait for its reply."""
        _, _, headers = self._histograms(model)
        return self._deadline(headers, self.settings.response_policy, None)

    def deadlines(self) -> tuple[ModelDeadlines, ...]:
        """The deadlines of every model with timings, least recently used first."""
        return tuple(
            ModelDeadlines(
                model=model,
                first_token=self.first_token(model),
                chunk_gap=self.chunk_gap(model),
                response_headers=self.response_headers(model),
            )
            for model in self._book.models()
        )
