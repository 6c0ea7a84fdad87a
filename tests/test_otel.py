"""OpenTelemetry (the otel extra): one span per request and a child per attempt, with
the GenAI attributes and oswitch's, continuing an incoming traceparent; off unless
configured; exported by OTLP/HTTP to a receiver on loopback."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import trio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from oswitch.config import OtelConfig, SwitcherConfig, parse_config
from oswitch.errors import ConfigError
from oswitch.otel import deadline_of, open_tracing
from oswitch.runtime.switcher import open_switcher
from oswitch.sidecar.serve import run_gateway, serve_sidecar
from oswitch.testing import FakeProvider, hang, rate_limited, reply, serve_fake_provider, stream
from support import BASE_URL

GUARD_S = 15.0
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"
KEY = "sk-otel-test-key-000000000000"


def mapping(**extra: Any) -> dict[str, Any]:
    return {
        "targets": [
            {
                "target_id": target_id,
                "provider_id": provider,
                "base_url": BASE_URL,
                "api_key": f"key-{target_id}",
                "model": "gpt-4o",
                "operator_priority": priority,
            }
            for target_id, provider, priority in (("alpha", "openai", 1), ("beta", "groq", 0))
        ],
        **extra,
    }


@asynccontextmanager
async def traced_sidecar(
    fake: FakeProvider, config: SwitcherConfig
) -> AsyncIterator[tuple[str, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    tracing = open_tracing(OtelConfig(), config=config, exporter=exporter)
    async with open_switcher(config, transport=fake.transport()) as switcher:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_sidecar, switcher, port=0, tracing=tracing))
            yield f"http://127.0.0.1:{port}", exporter
            nursery.cancel_scope.cancel()


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **extra}


async def test_a_request_is_one_span_with_a_child_per_attempt() -> None:
    """A request that fails over is one SERVER span (child of the caller's traceparent)
    with a CLIENT child per attempt, carrying GenAI and oswitch attributes, and no key."""
    fake = FakeProvider().on("key-alpha", rate_limited(retry_after=30.0)).on("key-beta", reply())
    config = parse_config(mapping())
    with trio.fail_after(GUARD_S):
        async with traced_sidecar(fake, config) as (base, exporter), httpx.AsyncClient() as http:
            answer = await http.post(
                f"{base}/v1/chat/completions", json=body(), headers={"traceparent": TRACEPARENT}
            )
            assert answer.status_code == 200
    spans = exporter.get_finished_spans()
    [request] = [s for s in spans if s.name == "chat gpt-4o"]
    attempts = sorted(
        (s for s in spans if s.name.startswith("attempt ")), key=lambda s: s.start_time
    )
    assert [s.name for s in attempts] == ["attempt alpha", "attempt beta"]
    assert request.kind is SpanKind.SERVER and {s.kind for s in attempts} == {SpanKind.CLIENT}
    assert f"{request.context.trace_id:032x}" == TRACE_ID
    assert request.parent is not None and f"{request.parent.span_id:016x}" == PARENT_SPAN
    assert all(
        s.parent is not None and s.parent.span_id == request.context.span_id for s in attempts
    )
    assert request.start_time <= attempts[0].start_time <= attempts[1].end_time <= request.end_time
    attributes = dict(request.attributes or {})
    assert attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o",
        "gen_ai.system": "groq",
        "gen_ai.provider.name": "groq",
        "gen_ai.usage.input_tokens": attributes["gen_ai.usage.input_tokens"],
        "gen_ai.usage.output_tokens": attributes["gen_ai.usage.output_tokens"],
        "gen_ai.response.finish_reasons": ("stop",),
        "oswitch.request_id": answer.headers["x-oswitch-request-id"],
        "oswitch.outcome": "ok",
        "oswitch.target_id": "beta",
        "oswitch.attempts": 2,
        "oswitch.stream": False,
        "oswitch.queue_wait_s": attributes["oswitch.queue_wait_s"],
        "oswitch.decision": "return",
    }
    assert attributes["gen_ai.usage.input_tokens"] >= 0
    failed = dict(attempts[0].attributes or {})
    assert (failed["oswitch.error_class"], failed["error.type"]) == ("RateLimited", "RateLimited")
    assert (failed["http.response.status_code"], failed["oswitch.retry_after_s"]) == (429, 30.0)
    assert (failed["gen_ai.system"], failed["oswitch.decision"]) == ("openai", "cooldown")
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert attempts[1].status.status_code is StatusCode.UNSET
    everything = json.dumps([dict(s.attributes or {}) for s in spans], default=str)
    assert "key-alpha" not in everything and "key-beta" not in everything


async def test_a_stream_span_carries_its_finish_reason_and_no_parent_without_traceparent() -> None:
    """A streamed request's span has the finish reason of its last chunk; without a
    traceparent it starts a trace of its own."""
    fake = FakeProvider().on("key-alpha", stream("one two three"))
    config = parse_config(mapping())
    with trio.fail_after(GUARD_S):
        async with traced_sidecar(fake, config) as (base, exporter), httpx.AsyncClient() as http:
            answer = await http.post(f"{base}/v1/chat/completions", json=body(stream=True))
            assert answer.status_code == 200 and answer.text.endswith("data: [DONE]\n\n")
    [request] = [s for s in exporter.get_finished_spans() if s.name == "chat gpt-4o"]
    assert request.parent is None
    attributes = dict(request.attributes or {})
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["oswitch.stream"] is True and attributes["oswitch.target_id"] == "alpha"


async def test_a_deadline_that_fired_is_named_on_the_spans() -> None:
    """Attempts abandoned at max_expected_latency_ms say oswitch.deadline = attempt; the
    request that gave up is an error span with the error's type and class."""
    fake = FakeProvider().on("key-alpha", hang()).on("key-beta", hang())
    config = parse_config(mapping(max_expected_latency_ms=50, retry_budget=0))
    with trio.fail_after(GUARD_S):
        async with traced_sidecar(fake, config) as (base, exporter), httpx.AsyncClient() as http:
            answer = await http.post(f"{base}/v1/chat/completions", json=body())
            assert answer.status_code >= 500
    spans = exporter.get_finished_spans()
    [request] = [s for s in spans if s.name == "chat gpt-4o"]
    attempts = [s for s in spans if s.name.startswith("attempt ")]
    assert len(attempts) == 2
    assert {dict(s.attributes or {})["oswitch.deadline"] for s in attempts} == {"attempt"}
    attributes = dict(request.attributes or {})
    assert attributes["error.type"] == "AllTargetsFailed"
    assert attributes["oswitch.error_class"] == "TransportFailure"
    assert attributes["oswitch.deadline"] == "attempt"
    assert request.status.status_code is StatusCode.ERROR


def test_deadline_notes() -> None:
    """Each deadline's note in a trace maps to its name; other notes to None."""
    assert deadline_of("abandoned: no headers in time") == "first_token"
    assert deadline_of("abandoned: no answer in time") == "attempt"
    assert deadline_of("stalled: stalled: no next chunk within 0.500s") == "stream_idle"
    assert deadline_of("request deadline") == "request"
    assert deadline_of("malformed") is None


def test_off_unless_configured_and_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """No otel.endpoint: no tracing at all. An endpoint without the opentelemetry
    packages: a ConfigError naming the extra to install."""
    assert open_tracing(OtelConfig()) is None
    assert parse_config(mapping()).otel == OtelConfig(endpoint=None, service_name="oswitch")
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(ConfigError) as caught:
        open_tracing(OtelConfig(endpoint="http://127.0.0.1:4318/v1/traces"))
    assert list(caught.value.problems) == [
        ("$.otel.endpoint", "OpenTelemetry is not installed: pip install 'oswitch[otel]'")
    ]


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, list[ExportTraceServiceRequest]]]:
    """A fake collector on 127.0.0.1: takes OTLP/HTTP protobuf POSTs to /v1/traces."""
    received: list[ExportTraceServiceRequest] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers["content-length"]))
            if self.path == "/v1/traces":
                message = ExportTraceServiceRequest()
                message.ParseFromString(data)
                received.append(message)
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", received
    finally:
        server.shutdown()
        server.server_close()


async def test_spans_reach_an_otlp_http_receiver_on_loopback() -> None:
    """`oswitch serve`'s gateway with otel.endpoint set exports the request's spans by
    OTLP/HTTP; they have reached the receiver when the gateway has shut down."""
    fake = FakeProvider().on(KEY, reply("traced"))
    with otlp_receiver() as (endpoint, received), trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            upstream = await nursery.start(serve_fake_provider, fake)
            config = parse_config(
                {
                    "targets": [
                        {
                            "target_id": "only",
                            "provider_id": "openai",
                            "base_url": f"http://127.0.0.1:{upstream}/v1",
                            "api_key": KEY,
                            "model": "gpt-4o",
                        }
                    ],
                    "otel": {"endpoint": endpoint, "service_name": "oswitch-test"},
                }
            )
            shutdown, returned = trio.Event(), trio.Event()

            async def gateway(task_status: trio.TaskStatus[tuple[int, int | None]]) -> None:
                await run_gateway(config, port=0, shutdown=shutdown, task_status=task_status)
                returned.set()

            port, _ = await nursery.start(gateway)
            async with httpx.AsyncClient() as http:
                answer = await http.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    json=body(),
                    headers={"traceparent": TRACEPARENT},
                )
            assert answer.status_code == 200
            shutdown.set()
            await returned.wait()  # after the spans still queued were sent
            nursery.cancel_scope.cancel()
    spans = [
        (resource.resource, span)
        for message in received
        for resource in message.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    names = sorted(span.name for _, span in spans)
    assert names == ["attempt only", "chat gpt-4o"]
    resource, request = next((r, s) for r, s in spans if s.name == "chat gpt-4o")
    service = {a.key: a.value.string_value for a in resource.attributes}["service.name"]
    assert service == "oswitch-test"
    assert request.trace_id.hex() == TRACE_ID and request.parent_span_id.hex() == PARENT_SPAN
    attributes = {a.key: a.value for a in request.attributes}
    assert attributes["gen_ai.request.model"].string_value == "gpt-4o"
    assert attributes["oswitch.target_id"].string_value == "only"
    assert KEY.encode() not in b"".join(m.SerializeToString() for m in received)
