"""OpenTelemetry traces of requests (``pip install 'oswitch[otel]'``; off unless
``otel.endpoint`` is set).

A request becomes one span (``chat <model>``, kind SERVER) with a child span per
attempt (``attempt <target_id>``, kind CLIENT), built when the request ends from its
:class:`~oswitch.core.trace.RequestTrace` — the same record ``inspect_request`` shows —
so the engine carries no tracing calls. Attributes: the GenAI semantic conventions
(``gen_ai.operation.name``, ``gen_ai.system`` / ``gen_ai.provider.name``,
``gen_ai.request.model``, ``gen_ai.response.model``, ``gen_ai.usage.input_tokens`` /
``output_tokens``, ``gen_ai.response.finish_reasons``, ``error.type``) and oswitch's
(``oswitch.request_id``, ``oswitch.target_id``, ``oswitch.error_class``,
``oswitch.decision``, ``oswitch.deadline`` — which deadline fired — and a few more).
No prompt or completion text, no key: traces keep none.

The sidecar continues an incoming W3C ``traceparent`` (and ``tracestate``): the
request span is its child. Spans go to an OTLP/HTTP endpoint from the SDK's batch
processor (its own thread: exporting never blocks routing). Metrics stay Prometheus.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import trio

from oswitch.config import OtelConfig, SwitcherConfig
from oswitch.core.trace import AttemptRecord, RequestTrace
from oswitch.errors import ConfigError

log = logging.getLogger("oswitch.otel")

INSTALL_HINT = "pip install 'oswitch[otel]'"
SHUTDOWN_TIMEOUT_S = 5.0
"""At exit, the longest spent sending the spans still queued."""

# Which deadline an attempt's trace note says fired (the notes are the engine's own).
_DEADLINE_NOTES = (
    ("no first token within", "first_token"),
    ("no headers in time", "first_token"),
    ("no next chunk within", "stream_idle"),
    ("no answer in time", "attempt"),
    ("request deadline", "request"),
)


# The trace's own ``AttemptRecord.deadline`` starts with the learned deadline's name.
_DEADLINE_NAMES = {
    "first_token": "first_token",
    "chunk_gap": "stream_idle",
    "response_headers": "attempt",
}


def attempt_deadline(attempt: AttemptRecord) -> str | None:
    """The deadline that fired for ``attempt`` (or was its hedge point): from its note,
    else from the trace's ``deadline`` field (``first_token 10.000s cold_start …``)."""
    fired = deadline_of(attempt.note)
    if fired is None and attempt.deadline:
        fired = _DEADLINE_NAMES.get(attempt.deadline.partition(" ")[0])
    return fired


def _trace_usage(trace: RequestTrace) -> dict[str, int] | None:
    """The tokens the trace's attempts report (what the providers said they used),
    summed; None when none reported any."""
    reported = [a for a in trace.attempts if a.prompt_tokens is not None]
    if not reported:
        return None
    return {
        "prompt_tokens": sum(a.prompt_tokens or 0 for a in reported),
        "completion_tokens": sum(a.completion_tokens or 0 for a in reported),
    }


def deadline_of(note: str) -> str | None:
    """The deadline an attempt's note says fired (``first_token``, ``stream_idle``,
    ``attempt`` — max_expected_latency_ms — or ``request``), else None."""
    for marker, name in _DEADLINE_NOTES:
        if marker in note:
            return name
    return None


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class Tracing:
    """Turns finished requests into spans on its own tracer provider (never the
    global one). Build it with :func:`open_tracing`; ``close()`` flushes."""

    def __init__(self, provider: Any, *, config: SwitcherConfig | None = None) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._provider = provider
        self._tracer = provider.get_tracer("oswitch")
        self._propagator = TraceContextTextMapPropagator()
        self._kinds = SpanKind
        self._status = (Status, StatusCode)
        self._in_context = set_span_in_context
        self._providers: dict[str, str] = {}
        self._config_seen: SwitcherConfig | None = None
        if config is not None:
            self._learn(config)

    def _learn(self, config: SwitcherConfig) -> None:
        """Which provider each target calls (``gen_ai.system``), for ``config``."""
        if config is not self._config_seen:
            self._providers = {t.target_id: t.provider_id for t in config.targets}
            self._config_seen = config

    def parent_from(self, headers: Iterable[tuple[bytes, bytes]]) -> Any:
        """The trace context of an incoming request's ``traceparent`` / ``tracestate``
        headers (None when it has none or they are malformed)."""
        carrier = {}
        for name in (b"traceparent", b"tracestate"):
            value = _header(headers, name)
            if value is not None:
                carrier[name.decode()] = value
        return self._propagator.extract(carrier) if "traceparent" in carrier else None

    def record(
        self,
        trace: RequestTrace,
        *,
        config: SwitcherConfig | None = None,
        parent: Any = None,
        reply: Mapping[str, Any] | None = None,
        finish_reason: str | None = None,
        usage: Mapping[str, Any] | None = None,
        deadline_exceeded: bool = False,
    ) -> None:
        """Emit the spans of a finished request. ``parent``: a context from
        :meth:`parent_from`; ``reply`` (a completion) gives usage and finish reason,
        or pass ``usage`` / ``finish_reason`` (a stream's last chunks).
        ``deadline_exceeded``: the request's own deadline ended it. Never raises:
        tracing must not cost a request its answer."""
        try:
            self._record(trace, config, parent, reply, finish_reason, usage, deadline_exceeded)
        except Exception:
            log.exception("otel_record_failed", extra={"request_id": trace.request_id})

    def _record(
        self,
        trace: RequestTrace,
        config: SwitcherConfig | None,
        parent: Any,
        reply: Mapping[str, Any] | None,
        finish_reason: str | None,
        usage: Mapping[str, Any] | None,
        deadline_exceeded: bool,
    ) -> None:
        if config is not None:
            self._learn(config)
        # Trace times are on trio's clock: place them on the wall clock from now.
        offset_ns = time.time_ns() - int(trio.current_time() * 1e9)
        ended = trace.ended_at if trace.ended_at is not None else trio.current_time()

        def wall(at: float) -> int:
            return offset_ns + int(at * 1e9)

        if reply is not None:
            usage = usage or _mapping(reply.get("usage"))
            choices = reply.get("choices")
            if finish_reason is None and isinstance(choices, list) and choices:
                first = choices[0]
                finish_reason = first.get("finish_reason") if isinstance(first, dict) else None
        # A usage chunk oswitch asked for itself never reached the caller: the trace has it.
        usage = usage or _trace_usage(trace)
        attributes = self._request_attributes(trace, usage, finish_reason, deadline_exceeded)
        span = self._tracer.start_span(
            f"chat {trace.model}",
            context=parent,
            kind=self._kinds.SERVER,
            start_time=wall(trace.started_at),
            attributes=attributes,
        )
        if trace.outcome != "ok":
            status, code = self._status
            span.set_status(status(code.ERROR, trace.outcome))
        context = self._in_context(span)
        for attempt in trace.attempts:
            child = self._tracer.start_span(
                f"attempt {attempt.target_id}",
                context=context,
                kind=self._kinds.CLIENT,
                start_time=wall(attempt.started_at),
                attributes=self._attempt_attributes(attempt),
            )
            if attempt.error_class is not None:
                status, code = self._status
                child.set_status(status(code.ERROR, str(attempt.error_class)))
            child.end(end_time=wall(attempt.started_at + attempt.duration_s))
        span.end(end_time=wall(ended))

    def _request_attributes(
        self,
        trace: RequestTrace,
        usage: Mapping[str, Any] | None,
        finish_reason: str | None,
        deadline_exceeded: bool,
    ) -> dict[str, Any]:
        served = trace.served_by
        provider = self._providers.get(served or "") or (
            self._providers.get(trace.attempts[-1].target_id) if trace.attempts else None
        )
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": trace.model,
            "oswitch.request_id": trace.request_id,
            "oswitch.outcome": trace.outcome,
            "oswitch.attempts": len(trace.attempts),
            "oswitch.stream": trace.stream,
            "oswitch.queue_wait_s": trace.queue_wait_s,
        }
        if provider:
            attributes["gen_ai.system"] = provider
            attributes["gen_ai.provider.name"] = provider
        if served:
            attributes["oswitch.target_id"] = served
        if trace.served_model:
            attributes["gen_ai.response.model"] = trace.served_model
        if trace.error_class is not None:
            attributes["oswitch.error_class"] = str(trace.error_class)
        if trace.outcome != "ok":
            attributes["error.type"] = trace.outcome
        if trace.attempts:
            attributes["oswitch.decision"] = trace.attempts[-1].decision
        fired = "request" if deadline_exceeded else None
        fired = fired or next(
            (d for d in (attempt_deadline(a) for a in reversed(trace.attempts)) if d), None
        )
        if fired:
            attributes["oswitch.deadline"] = fired
        if finish_reason:
            attributes["gen_ai.response.finish_reasons"] = (finish_reason,)
        for ours, theirs in (
            ("gen_ai.usage.input_tokens", ("prompt_tokens", "input_tokens")),
            ("gen_ai.usage.output_tokens", ("completion_tokens", "output_tokens")),
        ):
            count = next((usage.get(k) for k in theirs if usage and _count(usage.get(k))), None)
            if count is not None:
                attributes[ours] = count
        return attributes

    def _attempt_attributes(self, attempt: AttemptRecord) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": attempt.model,
            "oswitch.target_id": attempt.target_id,
            "oswitch.decision": attempt.decision,
            "oswitch.attempt": attempt.index,
            "oswitch.hedge": attempt.hedge,
        }
        provider = self._providers.get(attempt.target_id)
        if provider:
            attributes["gen_ai.system"] = provider
            attributes["gen_ai.provider.name"] = provider
        if attempt.error_class is not None:
            attributes["oswitch.error_class"] = str(attempt.error_class)
            attributes["error.type"] = str(attempt.error_class)
        if attempt.status is not None:
            attributes["http.response.status_code"] = attempt.status
        if attempt.retry_after is not None:
            attributes["oswitch.retry_after_s"] = attempt.retry_after
        fired = attempt_deadline(attempt)
        if fired:
            attributes["oswitch.deadline"] = fired
        if attempt.note:
            attributes["oswitch.note"] = attempt.note
        return attributes

    def close(self) -> None:
        """Send the spans still queued (at most ``SHUTDOWN_TIMEOUT_S``) and stop.
        Blocks: call it from a worker thread under trio."""
        self._provider.force_flush(int(SHUTDOWN_TIMEOUT_S * 1000))
        self._provider.shutdown()


def _mapping(value: object) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def open_tracing(
    otel: OtelConfig, *, config: SwitcherConfig | None = None, exporter: Any = None
) -> Tracing | None:
    """The tracing ``otel`` asks for: None while ``otel.endpoint`` is unset (and no
    ``exporter`` is given); else a :class:`Tracing` whose spans go by OTLP/HTTP to
    the endpoint in batches — or, given an ``exporter`` (tests: the SDK's in-memory
    one), straight to it. Raises ConfigError naming the extra to install when the
    opentelemetry packages are missing."""
    if otel.endpoint is None and exporter is None:
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        raise ConfigError(
            [("$.otel.endpoint", f"OpenTelemetry is not installed: {INSTALL_HINT}")]
        ) from None
    provider = TracerProvider(resource=Resource.create({"service.name": otel.service_name}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError(
                [("$.otel.endpoint", f"the OTLP/HTTP exporter is not installed: {INSTALL_HINT}")]
            ) from None
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otel.endpoint)))
    log.info("otel_enabled", extra={"note": otel.endpoint or "in-process exporter"})
    return Tracing(provider, config=config)
