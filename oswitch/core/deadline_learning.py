"""Deadlines that learn: a decaying latency histogram and the policy that reads it.

Each target keeps, per model it serves, one :class:`LatencyHistogram` for the time
to first token, one for the gaps between stream chunks and one for the time to
response headers of non-streamed calls. A deadline is then
``clamp(k × high quantile, floor, cap)`` (:func:`first_token_deadline`,
:func:`chunk_gap_deadline`, :func:`learned_deadline`), with a cold-start value until
enough observations are in and an explicit override winning over all of it.

Why this histogram (and not P² or a t-digest):

- **Log-spaced buckets, fixed.** 8 buckets per octave from 1 ms to ~1048 s (161
  doubles in one ``array``): every value is placed within 9 % of itself, which is far
  finer than any deadline needs (``k`` is 2). Memory is constant whatever is fed, an
  observation is one ``log2`` and one add (O(1): it runs for every chunk of every
  stream), and two histograms, rescaled to one landmark, add bucket by bucket.
  P² keeps five markers per quantile, cannot take a censored sample and cannot decay.
- **Forward decay.** A sample observed at ``now`` weighs ``2 ** ((now - landmark) /
  half_life)``: newer samples weigh more, old ones are never touched, and since only
  ratios matter the quantile of an idle target does not drift while nothing comes
  in. Once the exponent passes :data:`_RENORMALISE_AFTER` half-lives every bucket is
  scaled down once and the landmark moves (O(buckets) once per 32 half-lives), so no
  weight overflows whatever the clock does.
- **Censored samples** ("the first token took longer than t": a lost hedge, an
  abandoned attempt) redistribute their weight over the buckets at and above ``t``
  in proportion to the weight already there (the Kaplan-Meier "redistribute to the
  right"), or land in the bucket of ``t`` when nothing above ``t`` is known yet. The
  new distribution function is then nowhere above the old one, so a censored sample
  can never lower any quantile (proof in docs/deadlines.md); a slow model whose fast
  fallback keeps winning still warms up, one lost hedge at a time.
- **Quantiles read the upper edge** of the bucket where the cumulative weight
  reaches the fraction: an estimate is never below the values it summarises (the
  safe side for a deadline), at most 9 % above.

Garbage never raises: a NaN, negative or infinite value or time is ignored, and a
clock that goes backwards is read as standing still.

Pure core: no trio, no I/O; time is a float passed in.
"""

from __future__ import annotations

import array
import enum
import math
from collections import OrderedDict

import attrs

# Bucket layout: bucket 0 holds [0, 1 ms); bucket i >= 1 holds
# [1 ms × 2^((i-1)/8), 1 ms × 2^(i/8)); the last also takes everything longer.
_SMALLEST_S = 0.001
_PER_OCTAVE = 8
_OCTAVES = 20  # 1 ms × 2^20 ≈ 1048 s: above every cap
BUCKETS = 1 + _PER_OCTAVE * _OCTAVES
_UPPER_EDGES: tuple[float, ...] = tuple(
    float(_SMALLEST_S * 2.0 ** (i / _PER_OCTAVE)) for i in range(BUCKETS)
)
# Scale the weights down once the newest sample weighs 2^32 times the landmark's.
_RENORMALISE_AFTER = 32.0
# The observation count saturates here (it only decides cold start).
MAX_COUNTED = 1 << 31
# A passthrough target serves whatever model names callers send: it keeps timings
# for this many models at most, forgetting the one used least recently.
MAX_MODELS = 32


def bucket_of(value_s: float) -> int:
    """The bucket a (finite, non-negative) value falls in."""
    if value_s < _SMALLEST_S:
        return 0
    if value_s >= _UPPER_EDGES[-2]:
        return BUCKETS - 1
    index = min(BUCKETS - 1, int(math.log2(value_s / _SMALLEST_S) * _PER_OCTAVE) + 1)
    # log2 can round a value at an edge into the bucket below: keep edge >= value.
    while index < BUCKETS - 1 and _UPPER_EDGES[index] < value_s:
        index += 1
    return index


def upper_edge(index: int) -> float:
    """What a quantile that lands in bucket ``index`` reads as, in seconds."""
    return _UPPER_EDGES[index]


def _usable(x: float) -> bool:
    return math.isfinite(x) and x >= 0.0


@attrs.frozen(kw_only=True)
class HistogramStatistics:
    """A histogram at one moment: ``observations`` counted since it was created
    (censored included, saturating at :data:`MAX_COUNTED`), ``censored`` of them,
    and ``weight``, the decayed weight (≈ observations within a few half-lives)."""

    observations: int
    censored: int
    weight: float


class LatencyHistogram:
    """A bounded, decaying histogram of durations (see the module doc).

    ``half_life_s``: an observation's weight halves every this many seconds of the
    clock passed in. Raises ``ValueError`` only for a half-life that is not a
    positive finite number; every method after that never raises.
    """

    __slots__ = ("_censored", "_count", "_half_life_s", "_landmark", "_latest", "_weights")

    def __init__(self, *, half_life_s: float) -> None:
        if not (math.isfinite(half_life_s) and half_life_s > 0.0):
            raise ValueError(f"half_life_s must be a positive number (got {half_life_s!r})")
        self._half_life_s = half_life_s
        self._weights = array.array("d", bytes(8 * BUCKETS))
        self._landmark: float | None = None  # the time a weight of 1 stands for
        self._latest = -math.inf  # the latest time seen (the clock never goes back)
        self._count = 0
        self._censored = 0

    def observe(self, value_s: float, *, now: float) -> None:
        """Record that something took ``value_s`` seconds, seen at ``now``."""
        if not (_usable(value_s) and math.isfinite(now)):
            return
        # The weight first: it may renormalise the bucket it is then added to.
        weight = self._weight_at(now)
        self._weights[bucket_of(value_s)] += weight
        self._count = min(self._count + 1, MAX_COUNTED)

    def observe_longer_than(self, elapsed_s: float, *, now: float) -> None:
        """Record that something took longer than ``elapsed_s`` (it was abandoned or
        lost a hedge then): a censored sample. Never lowers any quantile."""
        if not (_usable(elapsed_s) and math.isfinite(now)):
            return
        exponent = self._advance(now)
        start = bucket_of(elapsed_s)
        weights = self._weights
        above = math.fsum(weights[start:])
        # Renormalise in the same step when due: scaling first could underflow the
        # weight above ``elapsed_s`` to zero and lose the shape it must keep.
        scale = 1.0
        if exponent > _RENORMALISE_AFTER:
            scale = 2.0**-exponent
            self._landmark = self._latest
            exponent = 0.0
        weight = float(2.0**exponent)
        for index in range(start):
            weights[index] *= scale
        if above > 0.0:
            share = weight / above
            for index in range(start, BUCKETS):
                weights[index] = weights[index] * scale + weights[index] * share
        else:
            for index in range(start, BUCKETS):
                weights[index] *= scale
            weights[start] += weight
        self._count = min(self._count + 1, MAX_COUNTED)
        self._censored = min(self._censored + 1, MAX_COUNTED)

    def quantile(self, fraction: float) -> float | None:
        """The ``fraction`` quantile in seconds (upper bucket edge), or None when
        nothing has been observed (or ``fraction`` is not a number in (0, 1])."""
        if not (0.0 < fraction <= 1.0):
            return None
        total = math.fsum(self._weights)
        if total <= 0.0:
            return None
        wanted = fraction * total
        running = 0.0
        last_nonzero = 0
        for index, weight in enumerate(self._weights):
            if weight <= 0.0:
                continue
            running += weight
            last_nonzero = index
            # The relative slack absorbs rounding in the running sum.
            if running >= wanted * (1.0 - 1e-12):
                return _UPPER_EDGES[index]
        return _UPPER_EDGES[last_nonzero]

    @property
    def observations(self) -> int:
        return self._count

    def statistics(self, *, now: float) -> HistogramStatistics:
        """The counts and the decayed weight as seen at ``now``."""
        weight = 0.0
        if self._landmark is not None:
            seen = max(self._latest, now) if math.isfinite(now) else self._latest
            weight = math.fsum(self._weights) * 2.0 ** -(
                (seen - self._landmark) / self._half_life_s
            )
        return HistogramStatistics(observations=self._count, censored=self._censored, weight=weight)

    def _advance(self, now: float) -> float:
        """Move the clock to ``now`` (never back); the exponent of a sample seen then."""
        now = max(now, self._latest)
        self._latest = now
        if self._landmark is None:
            self._landmark = now
        return (now - self._landmark) / self._half_life_s

    def _weight_at(self, now: float) -> float:
        """The weight of a sample seen at ``now`` (renormalising first if due)."""
        exponent = self._advance(now)
        if exponent > _RENORMALISE_AFTER:
            # 2.0 ** -huge is 0.0, never an error: a very long silence forgets all.
            scale = 2.0**-exponent
            weights = self._weights
            for index in range(BUCKETS):
                weights[index] *= scale
            self._landmark = self._latest
            exponent = 0.0
        return float(2.0**exponent)


class DeadlineSource(enum.StrEnum):
    """Why a deadline has the value it has (traces and listings say it)."""

    OVERRIDE = "override"  # an explicit *_timeout_ms on the target or globally
    COLD_START = "cold_start"  # fewer than min_observations seen yet
    LEARNED = "learned"  # k × the observed quantile, within [floor, cap]
    FLOOR = "floor"  # k × quantile was below the floor
    CAP = "cap"  # k × quantile was above the cap


@attrs.frozen(kw_only=True)
class DeadlinePolicy:
    """``deadline = clamp(k × quantile(fraction), floor_s, cap_s)`` once
    ``min_observations`` are in, ``cold_start_s`` before. Raises ``ValueError`` when
    the numbers do not make sense (``floor_s <= cold_start_s <= cap_s`` must hold,
    so every deadline that is not an override lies within [floor, cap])."""

    fraction: float
    k: float
    floor_s: float
    cap_s: float
    cold_start_s: float
    min_observations: int

    def __attrs_post_init__(self) -> None:
        numbers = (self.k, self.floor_s, self.cap_s, self.cold_start_s)
        if not all(math.isfinite(x) and x > 0.0 for x in numbers):
            raise ValueError(f"k and the deadlines must be positive numbers: {self!r}")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1]: {self!r}")
        if not self.floor_s <= self.cold_start_s <= self.cap_s:
            raise ValueError(f"floor_s <= cold_start_s <= cap_s must hold: {self!r}")
        if self.min_observations < 1:
            raise ValueError(f"min_observations must be >= 1: {self!r}")


# Defaults (the reasons are in docs/deadlines.md):
# - first token: cold 10 s rescues a silent target or a 20 s first token with a
#   fallback answer by 10.9 s; p95 × 2 keeps a reasoning model (25-45 s) at >= 50 s
#   once 20 are in; floor 2 s, so a 0.5 s model is hedged after 2 s, not 30 s; cap
#   120 s, the default request deadline (nothing waits longer anyway).
FIRST_TOKEN = DeadlinePolicy(
    fraction=0.95, k=2.0, floor_s=2.0, cap_s=120.0, cold_start_s=10.0, min_observations=20
)
# - chunk gaps: cold 10 s rescues "20 tokens, then a stall" by ~11.2 s; the floor is
#   the cold value, so learning only ever lengthens a stall deadline: a wrongly cut
#   stream costs a resume (the prompt again, a seam), and rare long pauses are
#   under-sampled by any quantile of gaps. p99.9 × 2 gives a model whose pauses
#   reach 8 s about 16 s; cap 60 s.
CHUNK_GAP = DeadlinePolicy(
    fraction=0.999, k=2.0, floor_s=10.0, cap_s=60.0, cold_start_s=10.0, min_observations=100
)
# - response headers of non-streamed calls (they come after the whole answer is
#   generated): cold 30 s, the plugin's max_expected_latency_ms; floor 5 s; cap 120 s.
RESPONSE_HEADERS = DeadlinePolicy(
    fraction=0.95, k=2.0, floor_s=5.0, cap_s=120.0, cold_start_s=30.0, min_observations=20
)
# Decay: a half-life of two minutes learns a model that got slower within a minute
# under steady traffic and forgets a slow spell in about ten (p95 falls once the
# slow samples are under 5 % of the weight: log2(20) ≈ 4.3 half-lives).
HALF_LIFE_S = 120.0


@attrs.frozen(kw_only=True)
class DeadlinePolicies:
    """The three policies and the decay a target's timings use (one set per switcher).

    :meth:`scaled` multiplies every duration by a factor (the bench's compressed
    wire runs and loopback tests scale time down; ``k`` and fractions stay).
    """

    first_token: DeadlinePolicy = FIRST_TOKEN
    chunk_gap: DeadlinePolicy = CHUNK_GAP
    response_headers: DeadlinePolicy = RESPONSE_HEADERS
    half_life_s: float = HALF_LIFE_S

    def scaled(self, factor: float) -> DeadlinePolicies:
        """Every duration multiplied by ``factor`` (a positive number, else ValueError)."""
        if not (math.isfinite(factor) and factor > 0.0):
            raise ValueError(f"factor must be a positive number (got {factor!r})")

        def scale(policy: DeadlinePolicy) -> DeadlinePolicy:
            return attrs.evolve(
                policy,
                floor_s=policy.floor_s * factor,
                cap_s=policy.cap_s * factor,
                cold_start_s=policy.cold_start_s * factor,
            )

        return DeadlinePolicies(
            first_token=scale(self.first_token),
            chunk_gap=scale(self.chunk_gap),
            response_headers=scale(self.response_headers),
            half_life_s=self.half_life_s * factor,
        )


def bounded_by(policy: DeadlinePolicy, limit_s: float) -> DeadlinePolicy:
    """``policy`` with ``limit_s`` as both its cold start and its cap (its floor lowered
    to it when above): learning can then only shorten the limit. The response
    deadline of non-streamed calls is bounded so by ``max_expected_latency_ms``."""
    return attrs.evolve(
        policy, cold_start_s=limit_s, cap_s=limit_s, floor_s=min(policy.floor_s, limit_s)
    )


@attrs.frozen(kw_only=True)
class Deadline:
    """A deadline in seconds, why it is that (``source``), the quantile it came from
    (None when none was read) and how many observations were in.

    Frozen at run time, not only to mypy: ``list_targets`` hands out the very records
    the target's attempts use (they are kept, not built per request)."""

    seconds: float
    source: DeadlineSource
    quantile_s: float | None
    observations: int

    def describe(self) -> str:
        """One line for traces and listings: the value and why it is that."""
        text = f"{self.seconds:.3f}s {self.source}"
        if self.source is DeadlineSource.OVERRIDE:
            return text + " (explicit setting)"
        if self.source is DeadlineSource.COLD_START:
            return text + f" ({self.observations} observations)"
        assert self.quantile_s is not None
        return text + f" (quantile {self.quantile_s:.3f}s over {self.observations} observations)"


def learned_deadline(
    histogram: LatencyHistogram, policy: DeadlinePolicy, *, override_s: float | None = None
) -> Deadline:
    """The deadline ``policy`` gives for ``histogram``; an ``override_s`` that is a
    positive finite number wins as it is (anything else counts as unset). Never
    raises."""
    count = histogram.observations
    if override_s is not None and math.isfinite(override_s) and override_s > 0.0:
        return Deadline(
            seconds=override_s, source=DeadlineSource.OVERRIDE, quantile_s=None, observations=count
        )
    observed = histogram.quantile(policy.fraction)
    if observed is None or count < policy.min_observations:
        return Deadline(
            seconds=policy.cold_start_s,
            source=DeadlineSource.COLD_START,
            quantile_s=observed,
            observations=count,
        )
    wanted = policy.k * observed
    if wanted < policy.floor_s:
        seconds, source = policy.floor_s, DeadlineSource.FLOOR
    elif wanted > policy.cap_s:
        seconds, source = policy.cap_s, DeadlineSource.CAP
    else:
        seconds, source = wanted, DeadlineSource.LEARNED
    return Deadline(seconds=seconds, source=source, quantile_s=observed, observations=count)


def first_token_deadline(
    histogram: LatencyHistogram,
    *,
    override_s: float | None = None,
    policy: DeadlinePolicy = FIRST_TOKEN,
) -> Deadline:
    """How long a streamed attempt may go without its first content chunk before it
    is hedged (see :func:`learned_deadline`)."""
    return learned_deadline(histogram, policy, override_s=override_s)


def chunk_gap_deadline(
    histogram: LatencyHistogram,
    *,
    override_s: float | None = None,
    policy: DeadlinePolicy = CHUNK_GAP,
) -> Deadline:
    """How long a stream may go between content chunks before it counts as stalled
    (see :func:`learned_deadline`)."""
    return learned_deadline(histogram, policy, override_s=override_s)


@attrs.define
class ModelTimings:
    """The three histograms a target keeps for one model it serves."""

    first_token: LatencyHistogram
    chunk_gap: LatencyHistogram
    response_headers: LatencyHistogram


class TimingBook:
    """A target's :class:`ModelTimings` per model, at most :data:`MAX_MODELS` of them
    (the least recently used is forgotten: model names are the callers' choice)."""

    def __init__(self, *, half_life_s: float = HALF_LIFE_S, max_models: int = MAX_MODELS) -> None:
        if max_models < 1:
            raise ValueError(f"max_models must be >= 1 (got {max_models})")
        LatencyHistogram(half_life_s=half_life_s)  # validates the half-life
        self._half_life_s = half_life_s
        self._max_models = max_models
        self._models: OrderedDict[str, ModelTimings] = OrderedDict()

    def for_model(self, model: str) -> ModelTimings:
        """The timings of ``model``, created cold when it is new."""
        timings = self._models.get(model)
        if timings is None:
            if len(self._models) >= self._max_models:
                self._models.popitem(last=False)
            timings = self._models[model] = ModelTimings(
                first_token=LatencyHistogram(half_life_s=self._half_life_s),
                chunk_gap=LatencyHistogram(half_life_s=self._half_life_s),
                response_headers=LatencyHistogram(half_life_s=self._half_life_s),
            )
        else:
            self._models.move_to_end(model)
        return timings

    def get(self, model: str) -> ModelTimings | None:
        """The timings of ``model`` if it has any (nothing is created or reordered)."""
        return self._models.get(model)

    def models(self) -> tuple[str, ...]:
        """The models with timings, least recently used first."""
        return tuple(self._models)

    def __len__(self) -> int:
        return len(self._models)
