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


@attrs.define
class HealthTracker:
    """Moving averages of one target's outcomes and latency.

    ``health`` is an EWMA of outcomes (success 1, failure 0) starting at 1.0,
    ``latency_s`` an EWMA of successful attempts' latency (None before the first),
    ``failure_rate`` the share of failures among the last ``window`` outcomes.
    Raises ``ValueError`` on construction unless 0 < ``alpha`` <= 1 and ``window`` >= 1.
    """

    alpha: float = attrs.field(default=0.2, validator=_alpha)
    window: int = attrs.field(default=20, validator=_positive_int)
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

    def record_success(self, latency_s: float) -> None:
        """Count a success that took ``latency_s`` seconds (negative counts as 0).

        Raises ``ValueError`` when ``latency_s`` is NaN or infinite (nothing recorded).
        """
        if not math.isfinite(latency_s):
            raise ValueError(f"latency_s must be finite (got {latency_s})")
        latency_s = max(0.0, latency_s)
        self._outcome(failed=False)
        if self._latency_s is None:
            self._latency_s = latency_s
        else:
            self._latency_s += self.alpha * (latency_s - self._latency_s)

    def record_failure(self) -> None:
        """Count a failure. Never raises."""
        self._outcome(failed=True)

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
