"""Counters and histograms kept as plain numbers, turned into Prometheus metric families
only when scraped.

prometheus_client's ``Counter.inc`` and ``Histogram.observe`` take a lock, validate and
walk the buckets in Python on every call; a sidecar request makes half a dozen of them,
about as much work as the sidecar's whole reply encoding (docs/bench.md, "Run of
3 December, night"). Here a count is one dict update and a histogram observation one
bisect, all in the switcher's trio thread; a scrape (possibly from another thread)
reads a copy. The exposition is prometheus_client's own: the same names, ``_total``,
``_bucket``/``_count``/``_sum`` and ``_created`` samples, rendered by
``generate_latest``.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Callable, Sequence
from typing import cast

from prometheus_client import utils
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

# How prometheus_client writes a bucket's bound (``1.0``, ``+Inf``); it has no annotations.
_bound_text = cast(Callable[[float], str], utils.floatToGoString)


class CounterTable:
    """A counter family: one count per tuple of label values, created at its first use."""

    __slots__ = ("_created", "_documentation", "_labels", "_name", "counts")

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self._name = name
        self._documentation = documentation
        self._labels = tuple(labels)
        self.counts: dict[tuple[str, ...], float] = {}
        self._created: dict[tuple[str, ...], float] = {}

    def add(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        """Count ``amount`` (never negative: the callers only count what happened) for
        the label values ``key``, in the order of the table's labels."""
        counts = self.counts
        if key in counts:
            counts[key] += amount
        else:
            self._created[key] = time.time()
            counts[key] = amount

    def family(self) -> CounterMetricFamily:
        """The family as a scrape reads it (its counts copied first)."""
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labels)
        created = self._created.copy()
        for key, value in self.counts.copy().items():
            family.add_metric(key, value, created=created.get(key))
        return family


class HistogramTable:
    """A histogram family with fixed upper bounds (``+Inf`` added): per tuple of label
    values, a count per bucket and the sum of what was observed. An unlabelled one
    exists, all zeros, from the start, as prometheus_client's does."""

    __slots__ = ("_bounds", "_created", "_documentation", "_labels", "_name", "_rows", "_sums")

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], bounds: Sequence[float]
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labels = tuple(labels)
        self._bounds = tuple(float(bound) for bound in bounds)
        self._rows: dict[tuple[str, ...], list[int]] = {}
        self._sums: dict[tuple[str, ...], float] = {}
        self._created: dict[tuple[str, ...], float] = {}
        if not self._labels:
            self._row(())

    def _row(self, key: tuple[str, ...]) -> list[int]:
        row = self._rows.get(key)
        if row is None:
            self._created[key] = time.time()
            self._sums[key] = 0.0
            # One slot per bound and one past the last (+Inf), not yet cumulative.
            row = self._rows[key] = [0] * (len(self._bounds) + 1)
        return row

    def observe(self, key: tuple[str, ...], value: float) -> None:
        """Count ``value`` in the first bucket whose bound is at least it."""
        row = self._rows.get(key) or self._row(key)
        row[bisect.bisect_left(self._bounds, value)] += 1
        self._sums[key] += value

    def family(self) -> HistogramMetricFamily:
        """The family as a scrape reads it: cumulative buckets, count, sum, created."""
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labels)
        names = [*(_bound_text(bound) for bound in self._bounds), "+Inf"]
        sums, created = self._sums.copy(), self._created.copy()
        for key, row in self._rows.copy().items():
            totals = itertools.accumulate(list(row))
            family.add_metric(list(key), list(zip(names, totals, strict=True)), sums.get(key, 0.0))
            family.add_sample(
                self._name + "_created",
                dict(zip(self._labels, key, strict=True)),
                created.get(key, 0.0),
            )
        return family
