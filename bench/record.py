"""What a bench run observes, aggregated as it goes, and the figures made from it.

A :class:`Recorder` is fed every call's end (from the load generator), every audit
event (an ``EventHub`` listener) and periodic target snapshots. It keeps counters
and latency arrays rather than one object per call, so a 100,000-request soak does
not measure the bench's own memory. :meth:`Recorder.figures` turns it into a frozen
:class:`Figures` value for the report.
"""

from __future__ import annotations

import math
import os
import resource
import sys
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@attrs.frozen(kw_only=True)
class Percentiles:
    """Latency percentiles in milliseconds (None when nothing was measured)."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Percentiles:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000.0, 3)

        return cls(
            count=len(seconds),
            p50=ms(percentile(seconds, 50)),
            p95=ms(percentile(seconds, 95)),
            p99=ms(percentile(seconds, 99)),
            max=ms(max(seconds) if seconds else None),
        )


@attrs.frozen(kw_only=True)
class Answer:
    """How one call ended, as the caller saw it.

    ``outcome`` is ``"ok"`` or the caller-visible error (``Overloaded``,
    ``AllTargetsFailed``, ``RequestFailed``, ...); ``error_class`` the oswitch error
    class the error carried; ``text`` what the caller received.
    """

    outcome: str
    error_class: str | None = None
    target_id: str | None = None
    attempts: int = 0
    text: str = ""
    ttft_s: float | None = None


@attrs.frozen(kw_only=True)
class Transition:
    """A change a target reported: its breaker, condition or lifecycle state."""

    at: float
    target_id: str
    kind: str
    state: str
    note: str


@attrs.define
class Bucket:
    """Everything seen in one slice of time (calls by their start, attempts by their end)."""

    attempts: Counter[str] = attrs.Factory(Counter)
    served: Counter[str] = attrs.Factory(Counter)
    outcomes: Counter[str] = attrs.Factory(Counter)
    latencies: array[float] = attrs.Factory(lambda: array("d"))


@attrs.frozen(kw_only=True)
class BucketFigures:
    """One bucket of the traffic chart: attempts and answers per target, errors, latency."""

    start_s: float
    attempts: Mapping[str, int]
    served: Mapping[str, int]
    requests: int
    failed: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None


@attrs.frozen(kw_only=True)
class Figures:
    """The figures of one run (scenario or soak), ready for the report and JSON.

    ``cpu_ms_per_request`` is process CPU time (``time.process_time``) divided by
    requests: in virtual time that is oswitch plus the in-process fake upstream.
    ``peak_rss_mb`` is the process's high-water mark so far (``ru_maxrss``).
    """

    requests: int
    succeeded: int
    success_rate: float
    errors: Mapping[str, int]
    latency: Percentiles
    ttft: Percentiles
    cpu_ms_per_request: float
    wall_s: float
    clock_s: float
    peak_rss_mb: float
    text_mismatches: int
    attempts_by_target: Mapping[str, int]
    served_by_target: Mapping[str, int]
    transitions: tuple[Transition, ...]
    bucket_s: float
    buckets: tuple[BucketFigures, ...]
    conditions: tuple[tuple[float, Mapping[str, str]], ...]


def peak_rss_mb() -> float:
    """The process's peak resident set size so far, in MB (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


# The lines ``bench.aiohttp_baseline --phases`` prints as its counted calls start and
# end, so a process serving them can count its own CPU over exactly that phase.
PHASE_COUNTING = b"counting"
PHASE_COUNTED = b"counted"


def warm_up_requests(concurrency: int, *, kept_traces: int = 0) -> int:
    """How many calls a closed-loop round makes before it starts counting: enough to
    open every connection the round will use, and ``kept_traces`` more, so that a
    process running oswitch has filled its store of that many request traces (until it
    is full, every request's trace survives the cyclic collector's young generations and
    makes it run more often: a transient of the process's first requests,
    docs/bench.md)."""
    return max(concurrency, 20) + kept_traces


def current_rss_mb() -> float:
    """The process's resident set size now, in MB (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024.0 * 1024.0)


@attrs.define
class Recorder:
    """Collects one run's observations; times are scenario seconds since ``origin``
    (clock seconds divided by ``scale``, so a compressed wire run reads like a virtual one).
    """

    origin: float
    bucket_s: float
    scale: float = 1.0
    requests: int = 0
    outcomes: Counter[str] = attrs.Factory(Counter)
    latencies: array[float] = attrs.Factory(lambda: array("d"))
    ttfts: array[float] = attrs.Factory(lambda: array("d"))
    latency_by_outcome: dict[str, array[float]] = attrs.Factory(dict)
    buckets: dict[int, Bucket] = attrs.Factory(dict)
    attempts: Counter[str] = attrs.Factory(Counter)
    attempt_errors: Counter[str] = attrs.Factory(Counter)
    served: Counter[str] = attrs.Factory(Counter)
    transitions: list[Transition] = attrs.Factory(list)
    conditions: list[tuple[float, dict[str, str]]] = attrs.Factory(list)
    text_mismatches: int = 0
    # Attempts on a target that the same request had already tried (never twice).
    repeated_attempts: Counter[str] = attrs.Factory(Counter)
    _tried: set[tuple[str, str]] = attrs.Factory(set)
    in_flight: int = 0
    clock: Callable[[], float] | None = None

    def _bucket(self, at: float) -> Bucket:
        index = max(0, int(at // self.bucket_s))
        bucket = self.buckets.get(index)
        if bucket is None:
            bucket = self.buckets[index] = Bucket()
        return bucket

    def now(self) -> float:
        if self.clock is None:
            return 0.0
        return (self.clock() - self.origin) / self.scale

    def call_ended(
        self, *, sent_at: float, latency_s: float, answer: Answer, expected: str | None
    ) -> None:
        """Count one call; ``expected`` is the text the caller must have received."""
        self.requests += 1
        name = answer.outcome
        if answer.outcome != "ok" and answer.error_class:
            name = f"{answer.outcome}({answer.error_class})"
        self.outcomes[name] += 1
        self.latency_by_outcome.setdefault(answer.outcome, array("d")).append(latency_s)
        bucket = self._bucket(sent_at)
        bucket.outcomes[answer.outcome] += 1
        if answer.outcome == "ok":
            self.latencies.append(latency_s)
            bucket.latencies.append(latency_s)
            if answer.ttft_s is not None:
                self.ttfts.append(answer.ttft_s)
            if answer.target_id:
                self.served[answer.target_id] += 1
                bucket.served[answer.target_id] += 1
            if expected is not None and answer.text != expected:
                self.text_mismatches += 1

    def event(self, name: str, fields: Mapping[str, Any]) -> None:
        """An ``EventHub`` listener: attempts feed the traffic chart, the rest transitions."""
        at = self.now()
        target_id = str(fields.get("target_id") or "")
        if name == "attempt" and target_id:
            self.attempts[target_id] += 1
            self._bucket(at).attempts[target_id] += 1
            tried = (str(fields.get("request_id") or ""), target_id)
            if tried in self._tried:
                self.repeated_attempts[target_id] += 1
            self._tried.add(tried)
            error_class = fields.get("error_class")
            if error_class:
                self.attempt_errors[f"{target_id}:{error_class}"] += 1
        elif name in ("breaker", "target_condition", "target_state") and target_id:
            kind = {"breaker": "breaker", "target_condition": "condition"}.get(name, "state")
            state = fields.get("condition") if kind == "condition" else fields.get("state")
            self.transitions.append(
                Transition(
                    at=round(at, 6),
                    target_id=target_id,
                    kind=kind,
                    state=str(state),
                    note=str(fields.get("note") or ""),
                )
            )

    def sample(self, at: float, conditions: dict[str, str]) -> None:
        """Record each target's condition (or non-Active state) at ``at``."""
        if self.conditions and self.conditions[-1][1] == conditions:
            return
        self.conditions.append((round(at, 6), conditions))

    # ---- reading it back -----------------------------------------------------------

    def window(self, start: float, end: float) -> Bucket:
        """The buckets whose start lies in ``[start, end)``, merged."""
        merged = Bucket()
        first = int(start // self.bucket_s)
        last = math.ceil(end / self.bucket_s)
        for index in range(first, last):
            bucket = self.buckets.get(index)
            if bucket is None:
                continue
            merged.attempts.update(bucket.attempts)
            merged.served.update(bucket.served)
            merged.outcomes.update(bucket.outcomes)
            merged.latencies.extend(bucket.latencies)
        return merged

    def share(self, target_ids: Iterable[str], start: float, end: float) -> float | None:
        """Fraction of attempts in ``[start, end)`` that went to ``target_ids``."""
        window = self.window(start, end)
        total = sum(window.attempts.values())
        if total == 0:
            return None
        return sum(window.attempts[t] for t in target_ids) / total

    def attempts_in(self, start: float, end: float) -> int:
        """How many attempts were made in ``[start, end)``."""
        return sum(self.window(start, end).attempts.values())

    def answers_in(self, start: float, end: float) -> int:
        """How many answers were served for requests sent in ``[start, end)``."""
        return sum(self.window(start, end).served.values())

    def served_share(self, target_ids: Iterable[str], start: float, end: float) -> float | None:
        """Fraction of answers in ``[start, end)`` (by send time) served by ``target_ids``."""
        window = self.window(start, end)
        total = sum(window.served.values())
        if total == 0:
            return None
        return sum(window.served[t] for t in target_ids) / total

    def figures(
        self, *, cpu_s: float, wall_s: float, clock_s: float, target_ids: Sequence[str]
    ) -> Figures:
        succeeded = self.outcomes.get("ok", 0)
        buckets: list[BucketFigures] = []
        last = max(self.buckets) if self.buckets else -1
        for index in range(last + 1):
            bucket = self.buckets.get(index, Bucket())
            requests = sum(bucket.outcomes.values())
            latencies = list(bucket.latencies)
            p50 = percentile(latencies, 50)
            p99 = percentile(latencies, 99)
            buckets.append(
                BucketFigures(
                    start_s=round(index * self.bucket_s, 6),
                    attempts={t: bucket.attempts[t] for t in target_ids if bucket.attempts[t]},
                    served={t: bucket.served[t] for t in target_ids if bucket.served[t]},
                    requests=requests,
                    failed=requests - bucket.outcomes.get("ok", 0),
                    latency_p50_ms=None if p50 is None else round(p50 * 1000.0, 3),
                    latency_p99_ms=None if p99 is None else round(p99 * 1000.0, 3),
                )
            )
        return Figures(
            requests=self.requests,
            succeeded=succeeded,
            success_rate=succeeded / self.requests if self.requests else 0.0,
            errors={name: n for name, n in sorted(self.outcomes.items()) if name != "ok"},
            latency=Percentiles.of(self.latencies),
            ttft=Percentiles.of(self.ttfts),
            cpu_ms_per_request=round(cpu_s * 1000.0 / self.requests, 4) if self.requests else 0.0,
            wall_s=round(wall_s, 3),
            clock_s=round(clock_s, 3),
            peak_rss_mb=round(peak_rss_mb(), 1),
            text_mismatches=self.text_mismatches,
            attempts_by_target={t: self.attempts[t] for t in target_ids},
            served_by_target={t: self.served[t] for t in target_ids},
            transitions=tuple(self.transitions),
            bucket_s=self.bucket_s,
            buckets=tuple(buckets),
            conditions=tuple(self.conditions),
        )
