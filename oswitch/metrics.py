"""Prometheus metrics for one switcher, in a registry of its own (never the global one).

The sidecar serves them on ``/metrics``; an embedder builds ``SwitcherMetrics(switcher)``
and serves ``render()`` wherever it likes. Attempt, failover and breaker counters are
fed by the switcher's events; per-target gauges (breaker state, cooldowns, in-flight)
and admission gauges are read from the switcher at scrape time, so they are never
stale; request counts and durations come from whoever answers the requests (the
sidecar calls :meth:`SwitcherMetrics.observe_request`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from oswitch.metric_tables import CounterTable, HistogramTable
from oswitch.runtime.switcher import Switcher

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)
BREAKER_STATES = ("Closed", "HalfOpen", "Open")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The attempt decisions that send a request on after an attempt (audit ``decision``):
# to another target or model, the same target again, a wait for a cooldown, a stream
# resumed elsewhere. ``return``, ``give_up``, ``cancelled`` and ``hedge_lost`` end an
# attempt without the request moving because of it.
MOVE_DECISIONS = frozenset({"failover", "fallback", "backoff", "cooldown", "retry", "resume"})


class _TablesCollector(Collector):
    """The counted families (requests, attempts, moves, breakers, tokens, cost and the
    latency histograms), read from their tables at each scrape."""

    def __init__(self, metrics: SwitcherMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for table in self._metrics.tables():
            yield table.family()


class _SwitcherCollector(Collector):
    """Reads live state from the switcher at each scrape."""

    def __init__(self, switcher: Switcher) -> None:
        self._switcher = switcher

    def collect(self) -> Iterator[Metric]:
        switcher = self._switcher
        views = switcher.list_targets()
        breaker = GaugeMetricFamily(
            "oswitch_target_breaker_state",
            "1 for the breaker state each target is in.",
            labels=["target_id", "state"],
        )
        condition = GaugeMetricFamily(
            "oswitch_target_info",
            "1 per target, labelled with its state, condition and deployment mode hint.",
            labels=["target_id", "provider_id", "state", "condition", "deployment_mode_hint"],
        )
        cooldown = GaugeMetricFamily(
            "oswitch_target_cooldown_seconds",
            "Seconds until the target's cooldown or quota wait ends (0 when none).",
            labels=["target_id"],
        )
        in_flight = GaugeMetricFamily(
            "oswitch_target_in_flight", "Attempts running on the target.", labels=["target_id"]
        )
        health = GaugeMetricFamily(
            "oswitch_target_health", "Health EWMA of the target (0..1).", labels=["target_id"]
        )
        deadline = GaugeMetricFamily(
            "oswitch_target_deadline_seconds",
            "The deadline a target applies per model it served: first_token (where a "
            "stream is hedged), chunk_gap (a stall), response_headers (a non-streamed "
            "call); source says why (learned, floor, cap, cold_start, override).",
            labels=["target_id", "model", "deadline", "source"],
        )
        observations = GaugeMetricFamily(
            "oswitch_target_deadline_observations",
            "Observations (censored ones included) behind each learned deadline.",
            labels=["target_id", "model", "deadline"],
        )
        for view in views:
            for entry in view.deadlines:
                for name in ("first_token", "chunk_gap", "response_headers"):
                    value = getattr(entry, name)
                    deadline.add_metric(
                        [view.target_id, entry.model, name, str(value.source)], value.seconds
                    )
                    observations.add_metric(
                        [view.target_id, entry.model, name], float(value.observations)
                    )
            for state in BREAKER_STATES:
                breaker.add_metric(
                    [view.target_id, state], 1.0 if view.breaker_state == state else 0.0
                )
            condition.add_metric(
                [
                    view.target_id,
                    view.provider_id,
                    view.state,
                    view.condition,
                    view.deployment_mode_hint,
                ],
                1.0,
            )
            cooldown.add_metric([view.target_id], view.cooldown_remaining_s or 0.0)
            in_flight.add_metric([view.target_id], float(view.in_flight))
            health.add_metric([view.target_id], view.health)
        yield from (breaker, condition, cooldown, in_flight, health, deadline, observations)
        admission = switcher.statistics().admission
        yield GaugeMetricFamily(
            "oswitch_requests_in_flight",
            "Requests holding an admission slot.",
            value=admission.in_flight,
        )
        yield GaugeMetricFamily(
            "oswitch_queue_depth",
            "Requests waiting for an admission slot.",
            value=admission.queued,
        )
        yield GaugeMetricFamily(
            "oswitch_backpressure",
            "1 while the queue is at or past backpressure_threshold.",
            value=1.0 if admission.backpressure else 0.0,
        )
        if switcher.fleet is not None:
            fleet = switcher.fleet.statistics()
            yield GaugeMetricFamily(
                "oswitch_store_degraded",
                "1 while the fleet's shared store is unreachable (on_store_error applies).",
                value=1.0 if fleet.store.degraded else 0.0,
            )
            yield CounterMetricFamily(
                "oswitch_store_failures",
                "Store calls that failed or timed out.",
                value=float(fleet.store.failures),
            )
            yield CounterMetricFamily(
                "oswitch_store_degraded_decisions",
                "Admissions decided without the store (local share, open or closed).",
                value=float(fleet.degraded_decisions),
            )


# The token kinds a metric counts, each with the ``attempt`` event's field for it.
_TOKEN_FIELDS = (
    ("prompt", "prompt_tokens"),
    ("completion", "completion_tokens"),
    ("cached", "cached_tokens"),
)


class SwitcherMetrics:
    """The metrics of one switcher; ``render()`` gives the Prometheus text format.

    Building one subscribes it to the switcher's events for the switcher's life;
    build one per switcher. Nothing here blocks or raises.
    """

    def __init__(self, switcher: Switcher) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = CounterTable(
            "oswitch_requests",
            "Requests by outcome (ok or the error raised) and error class.",
            ["outcome", "error_class", "stream"],
        )
        self.attempts = CounterTable(
            "oswitch_attempts",
            "Attempts by target and error class ('' for success).",
            ["target_id", "error_class"],
        )
        self.failovers = CounterTable(
            "oswitch_failovers",
            "Times a request moved on after an attempt (another target or model, a retry, "
            "a wait for a cooldown or backoff, a stream resume) or started a hedge, by "
            "decision.",
            ["decision"],
        )
        self.breaker_transitions = CounterTable(
            "oswitch_breaker_transitions",
            "Circuit breaker transitions by target and new state.",
            ["target_id", "state"],
        )
        self.tokens = CounterTable(
            "oswitch_tokens",
            "Tokens the providers reported used, by target, served model and kind "
            "(prompt, completion, cached: the cached ones are among the prompt ones).",
            ["target_id", "model", "kind"],
        )
        self.cost = CounterTable(
            "oswitch_cost",
            "Cost of the tokens used, at the targets' configured prices (targets with "
            "a price only), by target and served model.",
            ["target_id", "model"],
        )
        self.latency = HistogramTable(
            "oswitch_request_duration_seconds",
            "Time from arrival to the whole reply (streams: to the last chunk).",
            ["stream"],
            LATENCY_BUCKETS,
        )
        self.time_to_first_token = HistogramTable(
            "oswitch_time_to_first_token_seconds",
            "Time from arrival to the first content chunk of a stream.",
            [],
            LATENCY_BUCKETS,
        )
        self.registry.register(_TablesCollector(self))
        self.registry.register(_SwitcherCollector(switcher))
        switcher.events.add_listener(self._on_event)

    def tables(self) -> tuple[CounterTable | HistogramTable, ...]:
        """Every counted family, in the order a scrape lists them."""
        return (
            self.requests,
            self.attempts,
            self.failovers,
            self.breaker_transitions,
            self.tokens,
            self.cost,
            self.latency,
            self.time_to_first_token,
        )

    def _on_event(self, name: str, fields: dict[str, Any]) -> None:
        if name == "attempt":
            self.attempts.add(
                (str(fields.get("target_id", "")), str(fields.get("error_class") or ""))
            )
            decision = fields.get("decision")
            if decision in MOVE_DECISIONS:
                self.failovers.add((str(decision),))
            if fields.get("prompt_tokens") is not None:
                self._count_tokens(fields)
        elif name == "hedge":
            # A hop to a fallback model is not counted again here (its ``fallback``
            # event): the attempt that caused it was counted with its decision.
            self.failovers.add((name,))
        elif name == "breaker":
            self.breaker_transitions.add(
                (str(fields.get("target_id", "")), str(fields.get("state", "")))
            )

    def _count_tokens(self, fields: dict[str, Any]) -> None:
        target_id, model = str(fields.get("target_id", "")), str(fields.get("model", ""))
        for kind, field in _TOKEN_FIELDS:
            count = fields.get(field)
            if isinstance(count, int) and count > 0:
                self.tokens.add((target_id, model, kind), count)
        cost = fields.get("cost")
        if isinstance(cost, int | float) and cost > 0:
            self.cost.add((target_id, model), cost)

    def observe_request(
        self,
        *,
        outcome: str,
        error_class: str,
        stream: bool,
        started: float,
        first_token_at: float | None = None,
    ) -> None:
        """Record one finished request (``started`` and ``first_token_at`` on trio's clock)."""
        now = trio.current_time()
        streamed = "true" if stream else "false"
        self.requests.add((outcome, error_class, streamed))
        self.latency.observe((streamed,), now - started)
        if first_token_at is not None:
            self.time_to_first_token.observe((), first_token_at - started)

    def render(self) -> bytes:
        return generate_latest(self.registry)
