"""Health and latency tracking per target, and ranking targets into an ordered plan."""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Sequence

import attrs


@attrs.frozen(kw_only=True)
class Weights:
    """How much each signal counts in :func:`score`; defaults are o-switcher's."""

    health: float = 1.0
    latency: float = 0.5
    failure: float = 0.8
    priority: float = 0.3


def _alpha(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{attribute.name} must be in (0, 1] (got {value})")


def _positive_int(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1 (got {value})")


@attrs.frozen(kw_only=True)
class HealthStatistics:
    """A snapshot of a :class:`HealthTracker`."""

    health: float
    latency_s: float | None
    failure_rate: float
    successes: int
    failures: int
    window_outcomes: int


# Validated on construction only (as documented): an attribute set afterwards goes
# straight in, without attrs' per-assignment hook (the averages change per attempt).
@attrs.define(on_setattr=attrs.setters.NO_OP)
class HealthTracker:
    """Moving averages of one target's outcomes and latency.

    ``health`` is an EWMA of outcomes (success 1, failure 0) starting at 1.0,
    ``latency_s`` an EWMA of successful attempts' latency (None before the first),
    ``failure_rate`` the share of failures among the last ``window`` outcomes.

    Old news fades: the ``*_at(now)`` readings forget the averages towards a clean
    record with ``forget_half_life_s`` (given outcomes were recorded with their time),
    ``health_at = h + (1 - h) * f``, ``failure_rate_at = r * (1 - f)``, ``latency_at =
    l * (1 - f)``, ``f = 1 - 0.5 ** (idle / half_life)``. A target that went quiet after
    failing is thus tried again in time, instead of being starved of the traffic that
    would show it recovered (its breaker still guards against a dead one).
    Raises ``ValueError`` on construction unless 0 < ``alpha`` <= 1 and ``window`` >= 1.
    """

    alpha: float = attrs.field(default=0.2, validator=_alpha)
    window: int = attrs.field(default=20, validator=_positive_int)
    forget_half_life_s: float = 30.0
    _last_at: float | None = attrs.field(init=False, default=None)
    _health: float = attrs.field(init=False, default=1.0)
    _latency_s: float | None = attrs.field(init=False, default=None)
    # True marks a failure.
    _outcomes: deque[bool] = attrs.field(init=False)
    _successes: int = attrs.field(init=False, default=0)
    _failures: int = attrs.field(init=False, default=0)

    @_outcomes.default
    def _new_outcomes(self) -> deque[bool]:
        return deque(maxlen=self.window)

    @property
    def health(self) -> float:
        """EWMA of outcomes in [0, 1]; 1.0 before any."""
        return self._health

    @property
    def latency_s(self) -> float | None:
        """EWMA of successful attempts' latency in seconds; None before the first."""
        return self._latency_s

    @property
    def failure_rate(self) -> float:
        """Failures over the last ``window`` outcomes; 0.0 when there are none."""
        if not self._outcomes:
            return 0.0
        return sum(self._outcomes) / len(self._outcomes)

    def _forgotten(self, now: float) -> float:
        if self._last_at is None or self.forget_half_life_s <= 0:
            return 0.0
        idle = max(0.0, now - self._last_at)
        return 1.0 - float(0.5 ** (idle / self.forget_half_life_s))

    def health_at(self, now: float) -> float:
        """``health`` with what was learnt faded by the time since the last outcome."""
        forgotten = self._forgotten(now)
        return self._health + (1.0 - self._health) * forgotten

    def failure_rate_at(self, now: float) -> float:
        """``failure_rate`` faded by the time since the last outcome."""
        return self.failure_rate * (1.0 - self._forgotten(now))

    def latency_at(self, now: float) -> float | None:
        """``latency_s`` faded towards unknown by the time since the last outcome."""
        if self._latency_s is None:
            return None
        return self._latency_s * (1.0 - self._forgotten(now))

    def record_success(self, latency_s: float, now: float | None = None) -> None:
        """Count a success that took ``latency_s`` seconds (negative counts as 0), at
        ``now`` when given (for fading).

        Raises ``ValueError`` when ``latency_s`` is NaN or infinite (nothing recorded).
        """
        if not math.isfinite(latency_s):
            raise ValueError(f"latency_s must be finite (got {latency_s})")
        latency_s = max(0.0, latency_s)
        self._settle_fade(now)
        self._outcome(failed=False)
        if self._latency_s is None:
            self._latency_s = latency_s
        else:
            self._latency_s += self.alpha * (latency_s - self._latency_s)

    def record_failure(self, now: float | None = None) -> None:
        """Count a failure, at ``now`` when given (for fading). Never raises."""
        self._settle_fade(now)
        self._outcome(failed=True)

    def _settle_fade(self, now: float | None) -> None:
        """Fold the fading since the last outcome into the averages before a new one."""
        if now is None:
            return
        forgotten = self._forgotten(now)
        if forgotten > 0.0:
            self._health += (1.0 - self._health) * forgotten
            if self._latency_s is not None:
                self._latency_s *= 1.0 - forgotten
            keep = round(len(self._outcomes) * (1.0 - forgotten))
            while len(self._outcomes) > keep:
                self._outcomes.popleft()
        self._last_at = now

    def statistics(self) -> HealthStatistics:
        """A snapshot of the averages and counters. Never raises."""
        return HealthStatistics(
            health=self._health,
            latency_s=self._latency_s,
            failure_rate=self.failure_rate,
            successes=self._successes,
            failures=self._failures,
            window_outcomes=len(self._outcomes),
        )

    def _outcome(self, *, failed: bool) -> None:
        sample = 0.0 if failed else 1.0
        self._health += self.alpha * (sample - self._health)
        self._outcomes.append(failed)
        if failed:
            self._failures += 1
        else:
            self._successes += 1


@attrs.frozen(kw_only=True)
class Candidate:
    """One eligible target as the ranker sees it.

    ``tier`` is the operator priority (higher preferred, compared first);
    ``priority`` feeds the priority weight after normalisation within the set.
    """

    target_id: str
    tier: int
    health: float
    latency_s: float | None
    failure_rate: float
    priority: float
    in_flight: int


def score(
    candidate: Candidate,
    weights: Weights,
    *,
    max_expected_latency_s: float,
    priority_norm: float = 0.0,
) -> float:
    """How good ``candidate`` is; higher is better.

    ``w.health * health + w.latency * (1 - min(latency / max_expected_latency_s, 1))
    - w.failure * failure_rate + w.priority * priority_norm``, where an unknown latency
    counts as 0 (optimistic, so a new target gets traffic and a measured latency).
    Raises ``ValueError`` unless ``max_expected_latency_s`` > 0.
    """
    if not max_expected_latency_s > 0.0:
        raise ValueError(f"max_expected_latency_s must be > 0 (got {max_expected_latency_s})")
    latency = 0.0 if candidate.latency_s is None else max(0.0, candidate.latency_s)
    latency_penalty = min(latency / max_expected_latency_s, 1.0)
    return (
        weights.health * candidate.health
        + weights.latency * (1.0 - latency_penalty)
        - weights.failure * candidate.failure_rate
        + weights.priority * priority_norm
    )


def rank(
    candidates: Sequence[Candidate],
    weights: Weights,
    *,
    max_expected_latency_s: float,
    rng: random.Random,
    margin: float = 0.05,
) -> list[Candidate]:
    """Order ``candidates`` into the plan to try them in.

    Higher ``tier`` first. Within a tier by :func:`score` descending, with
    ``priority_norm = (priority - min) / (max - min)`` over the whole set (0 when all
    equal). Candidates within ``margin`` of the best remaining score in their tier
    form a band, ordered by fewest ``in_flight`` then at random (``rng``), so equally
    good targets share the load and noise in the averages does not pin one of them.
    O(n log n); ``rng`` draws exactly one number per candidate.
    Raises ``ValueError`` unless ``max_expected_latency_s`` > 0 and ``margin`` >= 0.
    """
    if not margin >= 0.0:
        raise ValueError(f"margin must be >= 0 (got {margin})")
    if not max_expected_latency_s > 0.0:
        raise ValueError(f"max_expected_latency_s must be > 0 (got {max_expected_latency_s})")
    if not candidates:
        return []
    low = min(c.priority for c in candidates)
    spread = max(c.priority for c in candidates) - low
    keyed: list[tuple[int, float, float, Candidate]] = []
    for candidate in candidates:
        norm = (candidate.priority - low) / spread if spread > 0.0 else 0.0
        value = score(
            candidate, weights, max_expected_latency_s=max_expected_latency_s, priority_norm=norm
        )
        keyed.append((candidate.tier, value, rng.random(), candidate))
    keyed.sort(key=lambda k: (-k[0], -k[1]))
    plan: list[Candidate] = []
    start = 0
    while start < len(keyed):
        tier, best, _, _ = keyed[start]
        end = start + 1
        while end < len(keyed) and keyed[end][0] == tier and keyed[end][1] >= best - margin:
            end += 1
        band = sorted(keyed[start:end], key=lambda k: (k[3].in_flight, k[2]))
        plan.extend(k[3] for k in band)
        start = end
    return plan


def choose(
    candidates: Sequence[Candidate],
    weights: Weights,
    *,
    max_expected_latency_s: float,
    rng: random.Random,
    margin: float = 0.05,
    temperature: float = 0.15,
) -> Candidate:
    """Pick one candidate: usually the head of :func:`rank`'s plan, sometimes a worse one.

    Within the highest tier, candidates within ``margin`` of the best score form the
    band (the plan's head is its least busy member). Every other candidate of that
    tier has weight ``exp(-(deficit - margin) / temperature)``, the band as a whole
    weight ``len(band)``; one is drawn by weight. A target that scored a little worse
    after a failure or two keeps a trickle of traffic (and with it the chance to show
    it recovered); a bad one gets next to none. Raises ``ValueError`` for an empty
    ``candidates`` or bad arguments (see :func:`rank`).
    """
    if not candidates:
        raise ValueError("choose() needs at least one candidate")
    plan = rank(
        candidates, weights, max_expected_latency_s=max_expected_latency_s, rng=rng, margin=margin
    )
    if temperature <= 0.0:
        return plan[0]
    top = [c for c in plan if c.tier == plan[0].tier]
    low = min(c.priority for c in candidates)
    spread = max(c.priority for c in candidates) - low

    def value(candidate: Candidate) -> float:
        norm = (candidate.priority - low) / spread if spread > 0.0 else 0.0
        return score(
            candidate, weights, max_expected_latency_s=max_expected_latency_s, priority_norm=norm
        )

    scores = [value(c) for c in top]
    best = max(scores)
    band = sum(1 for v in scores if v >= best - margin)
    outsiders = [
        (c, math.exp(-(best - v - margin) / temperature))
        for c, v in zip(top, scores, strict=True)
        if v < best - margin
    ]
    total = band + sum(w for _, w in outsiders)
    draw = rng.random() * total
    if draw < band or not outsiders:
        return plan[0]
    draw -= band
    for candidate, weight in outsiders:
        if draw < weight:
            return candidate
        draw -= weight
    return outsiders[-1][0]
