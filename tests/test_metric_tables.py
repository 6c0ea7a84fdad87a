"""oswitch.metric_tables: counters and histograms kept as numbers render exactly as
prometheus_client's own Counter and Histogram do (created times aside)."""

from __future__ import annotations

import math

import prometheus_client.metrics
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from oswitch.core.error_class import ErrorClass
from oswitch.metric_tables import CounterTable, HistogramTable
from oswitch.metrics import LATENCY_BUCKETS


class _Tables(Collector):
    def __init__(self, *tables: CounterTable | HistogramTable) -> None:
        self._tables = tables

    def collect(self):  # type: ignore[no-untyped-def]
        for table in self._tables:
            yield table.family()


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample a scraper reads, by name and labels; created times left out."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


labels = st.sampled_from(["a", "b", "c"])
durations = st.floats(min_value=0.0, max_value=500.0, allow_nan=False) | st.sampled_from(
    [float(bound) for bound in LATENCY_BUCKETS]
)


@given(
    counts=st.lists(st.tuples(labels, labels, st.integers(min_value=0, max_value=10**6))),
    observed=st.lists(st.tuples(labels, durations)),
    unlabelled=st.lists(durations),
)
def test_tables_read_as_prometheus_clients_own_metrics(
    counts: list[tuple[str, str, int]],
    observed: list[tuple[str, float]],
    unlabelled: list[float],
) -> None:
    """Whatever is counted and observed (bounds themselves included), a scrape reads the
    same samples from the tables as from a Counter and Histograms fed the same."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    table = CounterTable("x_events", "Events.", ["target_id", "kind"])
    spread = HistogramTable("x_seconds", "Durations.", ["stream"], LATENCY_BUCKETS)
    plain = HistogramTable("x_first_seconds", "First.", [], LATENCY_BUCKETS)
    ours.register(_Tables(table, spread, plain))
    counter = Counter("x_events", "Events.", ["target_id", "kind"], registry=theirs)
    histogram = Histogram(
        "x_seconds", "Durations.", ["stream"], buckets=LATENCY_BUCKETS, registry=theirs
    )
    first = Histogram("x_first_seconds", "First.", buckets=LATENCY_BUCKETS, registry=theirs)
    for target, kind, amount in counts:
        table.add((target, kind), amount)
        counter.labels(target, kind).inc(amount)
    for stream, seconds in observed:
        spread.observe((stream,), seconds)
        histogram.labels(stream).observe(seconds)
    for seconds in unlabelled:
        plain.observe((), seconds)
        first.observe(seconds)
    ours_read, theirs_read = samples(ours), samples(theirs)
    assert ours_read.keys() == theirs_read.keys()
    for key, value in theirs_read.items():
        assert math.isclose(ours_read[key], value, rel_tol=1e-9, abs_tol=1e-9), key


def test_a_series_appears_at_its_first_count_with_its_created_time() -> None:
    """A labelled series is listed once counted, with a ``_created`` sample; an
    unlabelled histogram is listed, all zeros, before anything is observed."""
    registry = CollectorRegistry()
    table = CounterTable("x_events", "Events.", ["kind"])
    plain = HistogramTable("x_first_seconds", "First.", [], (0.5, 1))
    registry.register(_Tables(table, plain))
    text = generate_latest(registry).decode()
    assert "x_events_total{" not in text
    assert 'x_first_seconds_bucket{le="+Inf"} 0.0' in text
    assert "x_first_seconds_created " in text
    table.add(("prompt",), 3)
    table.add(("prompt",), 4)
    plain.observe((), 0.5)
    text = generate_latest(registry).decode()
    assert 'x_events_total{kind="prompt"} 7.0' in text
    assert 'x_events_created{kind="prompt"} ' in text
    assert 'x_first_seconds_bucket{le="0.5"} 1.0' in text  # a bound is in its own bucket
    assert "x_first_seconds_sum 0.5" in text


def test_label_values_are_written_as_str_makes_them_and_merge_when_they_read_the_same() -> None:
    """A label value that is not a string (None, an enum) is written as ``str()`` makes
    it, as prometheus_client's ``labels()`` does, and keys that read the same are one
    series: a scrape never fails on them."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    table = CounterTable("x_events", "Events.", ["error_class"])
    spread = HistogramTable("x_seconds", "Durations.", ["error_class"], (1.0,))
    ours.register(_Tables(table, spread))
    counter = Counter("x_events", "Events.", ["error_class"], registry=theirs)
    histogram = Histogram(
        "x_seconds", "Durations.", ["error_class"], buckets=(1.0,), registry=theirs
    )
    for value in (None, "None", ErrorClass.RATE_LIMITED, "RateLimited", 3):
        table.add((value,))
        spread.observe((value,), 0.5)
        counter.labels(value).inc()
        histogram.labels(value).observe(0.5)
    assert samples(ours) == samples(theirs)
    assert samples(ours)[("x_events_total", (("error_class", "None"),))] == 2.0


def test_a_nan_is_summed_and_counted_in_no_bucket() -> None:
    """A NaN observation makes the sum NaN and leaves every bucket and the count as they
    were, as prometheus_client's Histogram does."""
    registry = CollectorRegistry()
    spread = HistogramTable("x_seconds", "Durations.", [], (1.0,))
    registry.register(_Tables(spread))
    spread.observe((), 0.5)
    spread.observe((), math.nan)
    read = samples(registry)
    assert read[("x_seconds_bucket", (("le", "1.0"),))] == 1.0
    assert read[("x_seconds_bucket", (("le", "+Inf"),))] == 1.0
    assert read[("x_seconds_count", ())] == 1.0
    assert math.isnan(read[("x_seconds_sum", ())])


def test_created_samples_follow_prometheus_clients_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """With prometheus_client's created series turned off (``disable_created_metrics``,
    or ``PROMETHEUS_DISABLE_CREATED_SERIES``), the tables write none either."""
    registry = CollectorRegistry()
    table = CounterTable("x_events", "Events.", ["kind"])
    spread = HistogramTable("x_seconds", "Durations.", [], (1.0,))
    registry.register(_Tables(table, spread))
    table.add(("prompt",))
    assert "_created" in generate_latest(registry).decode()
    monkeypatch.setattr(prometheus_client.metrics, "_use_created", False)
    text = generate_latest(registry).decode()
    assert "_created" not in text
    assert 'x_events_total{kind="prompt"} 1.0' in text
