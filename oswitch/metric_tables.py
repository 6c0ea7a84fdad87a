"""Counters and histograms kept as plain numbers, turned into Prometheus metric families
only when scraped.

prometheus_client's ``Counter.inc`` and ``Histogram.observe`` take a lock, validate and
walk the buckets in Python on every call; a sidecar request made half a dozen of them,
35 K instructions in all (12 K now: docs/bench.md, "Run of 3 December, night"). Here a
count is one dict update and a histogram observation one bisect, all in the switcher's
trio thread; a scrape (possibly from another thread) reads a copy. The exposition is
prometheus_client's own: the same names, ``_total``, ``_bucket``/``_count``/``_sum`` and
``_created`` samples, rendered by ``generate_latest``.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Callable, Sequence
from typing import cast

from prometheus_client import metrics as prometheus_metrics
from prometheus_client import utils
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

# How prometheus_client writes a bucket's bound (``1.0``, ``+Inf``); it has no annotations.
_bound_text = cast(Callable[[float], str], utils.floatToGoString)


def _use_created() -> bool:
    """Whether prometheus_client writes ``_created`` samples: not once an operator turned
    them off (``PROMETHEUS_DISABLE_CREATED_SERIES=True`` or ``disable_created_metrics()``),
    which sets this private flag of its ``metrics`` module."""
    return bool(getattr(prometheus_metrics, "_use_created", True))


def _label_values(key: tuple[object, ...]) -> tuple[str, ...]:
    # prometheus_client's ``labels()`` writes every value with str(): None is "None".
    return tuple(value if type(value) is str else str(value) for value in key)


class CounterTable:
    """A counter family: one count per tuple of label values, created at its first use.
    Values that are not strings are written as ``str()`` makes them (as prometheus_client
    does), and keys that read the same are one series."""

    __slots__ = ("_counts", "_created", "_documentation", "_labels", "_name")

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self._name = name
        self._documentation = documentation
        self._labels = tuple(labels)
        self._counts: dict[tuple[object, ...], float] = {}
        self._created: dict[tuple[object, ...], float] = {}

    def add(self, key: tuple[object, ...], amount: float = 1.0) -> None:
        """Count ``amount`` (never negative: the callers only count what happened) for
        the label values ``key``, in the order of the table's labels."""
        counts = self._counts
        if key in counts:
            counts[key] += amount
        else:
            self._created[key] = time.time()  # before the count: a scrape sees both
            counts[key] = amount

    def family(self) -> CounterMetricFamily:
        """The family as a scrape reads it (its counts copied first)."""
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labels)
        created = self._created.copy()
        totals: dict[tuple[str, ...], list[float]] = {}
        for key, value in self._counts.copy().items():
            labels = _label_values(key)
            first = created.get(key, 0.0)
            if labels in totals:
                total = totals[labels]
                total[0] += value
                total[1] = min(total[1], first)
            else:
                totals[labels] = [value, first]
        use_created = _use_created()
        for labels, (value, first) in totals.items():
            family.add_metric(labels, value, created=first if use_created else None)
        return family


class HistogramTable:
    """A histogram family with fixed upper bounds (``+Inf`` added): per tuple of label
    values, a count per bucket and the sum of what was observed. An unlabelled one
    exists, all zeros, from the start, as prometheus_client's does; a NaN is added to
    the sum and counted in no bucket, as there."""

    __slots__ = ("_bounds", "_created", "_documentation", "_labels", "_name", "_rows")

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], bounds: Sequence[float]
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labels = tuple(labels)
        self._bounds = tuple(float(bound) for bound in bounds)
        # Per key: a count per bound and one past the last (+Inf), not yet cumulative,
        # then the sum, in one list so that a scrape copies them together.
        self._rows: dict[tuple[object, ...], list[float]] = {}
        self._created: dict[tuple[object, ...], float] = {}
        if not self._labels:
            self._row(())

    def _row(self, key: tuple[object, ...]) -> list[float]:
        row = self._rows.get(key)
        if row is None:
            self._created[key] = time.time()
            row = self._rows[key] = [0.0] * (len(self._bounds) + 2)
        return row

    def observe(self, key: tuple[object, ...], value: float) -> None:
        """Count ``value`` in the first bucket whose bound is at least it."""
        row = self._rows.get(key) or self._row(key)
        if value == value:  # a NaN is in no bucket
            row[bisect.bisect_left(self._bounds, value)] += 1
        row[-1] += value

    def family(self) -> HistogramMetricFamily:
        """The family as a scrape reads it: cumulative buckets, count, sum, created."""
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labels)
        names = [*(_bound_text(bound) for bound in self._bounds), "+Inf"]
        created = self._created.copy()
        merged: dict[tuple[str, ...], tuple[list[float], float]] = {}
        for key, row in self._rows.copy().items():
            labels = _label_values(key)
            counts = list(row)
            first = created.get(key, 0.0)
            if labels in merged:
                kept, kept_first = merged[labels]
                counts = [a + b for a, b in zip(kept, counts, strict=True)]
                first = min(first, kept_first)
            merged[labels] = (counts, first)
        use_created = _use_created()
        for labels, (counts, first) in merged.items():
            totals = itertools.accumulate(counts[:-1])
            family.add_metric(list(labels), list(zip(names, totals, strict=True)), counts[-1])
            if use_created:
                family.add_sample(
                    self._name + "_created", dict(zip(self._labels, labels, strict=True)), first
                )
        return family
