"""What the dashboard shows beyond a ``TargetView``: recent traffic, from audit events.

Pure: no trio, no I/O; every time is a float passed in (the switcher's trio clock).
Fed one event at a time (``record``), read as one JSON-ready snapshot. Every part is
bounded — minutes, buckets, samples, models and recent events are capped — so a
flood of traffic or of callers' model names costs a fixed amount of memory.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

import attrs

MINUTE_S = 60.0
WINDOW_MINUTES = 15
"""Per-minute attempts and errors are kept for this many minutes per target."""
SHARE_BUCKET_S = 10.0
SHARE_BUCKETS = 60
"""The traffic-share chart: attempts per target in 10-second buckets, 10 minutes."""
LATENCY_WINDOW_S = 300.0
LATENCY_SAMPLES = 512
"""p50/p99 over the successful attempts of the last 5 minutes, at most 512 a target."""
RECENT_EVENTS = 50
"""Failovers, errors and breaker changes listed, newest first."""
MAX_MODELS = 32
"""Models with a chart of their own; attempts for any more are charted as OTHER_MODEL."""
OTHER_MODEL = "(other models)"

# What is worth an operator's eye in the recent list: failures, moves, breaker trips.
_QUIET_DECISIONS = frozenset({"return", "cancelled", "hedge_lost"})
# An attempt cancelled, or that lost its hedge, never answered: its time is no latency.
_UNANSWERED = frozenset({"cancelled", "hedge_lost"})
_RECENT_NAMES = frozenset({"request_failed", "fallback", "hedge", "breaker", "target_state"})
_RECENT_FIELDS = (
    "request_id",
    "target_id",
    "model",
    "error_class",
    "decision",
    "status",
    "state",
    "note",
)


@attrs.define
class _TargetTraffic:
    # minute index -> [attempts, Counter of error classes]
    minutes: dict[int, tuple[list[int], Counter[str]]] = attrs.Factory(dict)
    latencies: deque[tuple[float, float]] = attrs.Factory(lambda: deque(maxlen=LATENCY_SAMPLES))


def quantile(values: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(q * len(ordered))))
    return ordered[rank - 1]


class TrafficStats:
    """Recent traffic per target and per model, and the recent notable events.

    ``version`` grows with every event recorded, so a reader can tell whether
    anything changed since its last snapshot.
    """

    def __init__(self) -> None:
        self._targets: dict[str, _TargetTraffic] = {}
        self._share: dict[str, dict[int, Counter[str]]] = {}
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self.version = 0

    def record(self, name: str, fields: Mapping[str, Any], now: float) -> None:
        """Take one audit event (its name and fields) that happened at ``now``."""
        self.version += 1
        if name == "attempt":
            self._attempt(fields, now)
        elif name in _RECENT_NAMES:
            self._remember(name, fields, now)

    def _attempt(self, fields: Mapping[str, Any], now: float) -> None:
        target_id = fields.get("target_id")
        if not isinstance(target_id, str):
            return
        traffic = self._targets.get(target_id)
        if traffic is None:
            traffic = self._targets[target_id] = _TargetTraffic()
        minute = int(now // MINUTE_S)
        counts = traffic.minutes.get(minute)
        if counts is None:
            counts = traffic.minutes[minute] = ([0], Counter())
            for old in [m for m in traffic.minutes if m <= minute - WINDOW_MINUTES]:
                del traffic.minutes[old]
        counts[0][0] += 1
        error_class = fields.get("error_class")
        latency = fields.get("latency_ms")
        if error_class:
            counts[1][str(error_class)] += 1
        elif isinstance(latency, int | float) and fields.get("decision") not in _UNANSWERED:
            traffic.latencies.append((now, float(latency)))
        self._count_share(str(fields.get("model") or ""), target_id, now)
        decision = fields.get("decision")
        if error_class or decision not in _QUIET_DECISIONS:
            self._remember("attempt", fields, now)

    def _count_share(self, model: str, target_id: str, now: float) -> None:
        if model not in self._share and len(self._share) >= MAX_MODELS:
            model = OTHER_MODEL
        buckets = self._share.get(model)
        if buckets is None:
            buckets = self._share[model] = {}
        bucket = int(now // SHARE_BUCKET_S)
        counts = buckets.get(bucket)
        if counts is None:
            counts = buckets[bucket] = Counter()
            for old in [b for b in buckets if b <= bucket - SHARE_BUCKETS]:
                del buckets[old]
        counts[target_id] += 1

    def _remember(self, name: str, fields: Mapping[str, Any], now: float) -> None:
        entry: dict[str, Any] = {"event": name, "at": now}
        for key in _RECENT_FIELDS:
            value = fields.get(key)
            if value is not None and value != "":
                entry[key] = value
        self._recent.appendleft(entry)

    def target_stats(self, target_id: str, now: float) -> dict[str, Any]:
        """One target's recent traffic: ``minutes`` (attempts and errors per minute,
        oldest first, the current minute last), ``errors_by_class`` over that window,
        and ``p50_ms`` / ``p99_ms`` of its successful attempts (None without any)."""
        traffic = self._targets.get(target_id) or _TargetTraffic()
        current = int(now // MINUTE_S)
        minutes = []
        errors: Counter[str] = Counter()
        for minute in range(current - WINDOW_MINUTES + 1, current + 1):
            attempts, classes = traffic.minutes.get(minute, ([0], Counter()))
            minutes.append({"attempts": attempts[0], "errors": sum(classes.values())})
            errors.update(classes)
        recent = [ms for at, ms in traffic.latencies if at > now - LATENCY_WINDOW_S]
        return {
            "minutes": minutes,
            "errors_by_class": dict(errors.most_common()),
            "p50_ms": quantile(recent, 0.5),
            "p99_ms": quantile(recent, 0.99),
        }

    def share(self, now: float) -> dict[str, Any]:
        """Per model: attempts per target in each of the last ``SHARE_BUCKETS``
        buckets of ``SHARE_BUCKET_S`` seconds, oldest first."""
        current = int(now // SHARE_BUCKET_S)
        charts = {}
        for model, buckets in sorted(self._share.items()):
            series = [
                dict(buckets.get(b, {})) for b in range(current - SHARE_BUCKETS + 1, current + 1)
            ]
            if any(series):
                charts[model] = series
        return {"bucket_s": SHARE_BUCKET_S, "models": charts}

    def recent(self, now: float) -> list[dict[str, Any]]:
        """The recent notable events, newest first, each with ``ago_s``."""
        return [{**entry, "ago_s": now - entry["at"]} for entry in self._recent]

    def forget_targets_except(self, target_ids: set[str]) -> None:
        """Drop what is kept of targets no longer configured (after a reload)."""
        for gone in [t for t in self._targets if t not in target_ids]:
            del self._targets[gone]
