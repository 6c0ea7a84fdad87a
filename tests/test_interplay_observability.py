"""How the dashboard and OpenTelemetry (#18) read requests that were hedged (#13) and
whose usage oswitch asked for itself (#15): engine traces on virtual time fed to the
dashboard's traffic stats and to the span builder, and a sidecar over loopback."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import pytest
import trio
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_interplay_tokens_hedging import usage_stream
from test_otel import GUARD_S, traced_sidecar

from oswitch.config import OtelConfig
from oswitch.otel import open_tracing
from oswitch.runtime.switcher import Switcher, open_switcher
from oswitch.sidecar.dashboard.stats import TrafficStats
from oswitch.testing import FakeProvider, hang
from support import chat, config, target


async def hedged(switcher: Switcher) -> str:
    async with switcher.stream(chat(stream=True)) as chunks:
        async for _ in chunks:
            pass
    return chunks.request_id


async def test_a_lost_hedge_is_not_a_successful_attempts_latency(autojump_clock: object) -> None:
    """The dashboard's p50/p99 are of successful attempts: a silent key that only ever
    lost hedges (after 1 s each) shows none, and the winner shows its own."""
    fake = FakeProvider().on("key-a", hang()).on("key-b", usage_stream(latency=0.25))
    cfg = config(target("a", operator_priority=1), target("b"), hedge_after_ms=1000)
    stats = TrafficStats()
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        switcher.events.add_listener(
            lambda name, fields: stats.record(name, fields, trio.current_time())
        )
        for _ in range(3):
            await hedged(switcher)
        now = trio.current_time()
    assert stats.target_stats("b", now)["p50_ms"] == pytest.approx(250.0)
    assert stats.target_stats("a", now)["p50_ms"] is None


async def test_a_lost_hedge_is_quiet_and_the_hedge_is_listed(autojump_clock: object) -> None:
    """The dashboard lists the hedge event of a hedged request, not the lost attempt
    (a lost hedge is not a failure)."""
    fake = FakeProvider().on("key-a", hang()).on("key-b", usage_stream())
    cfg = config(target("a", operator_priority=1), target("b"), hedge_after_ms=1000)
    stats = TrafficStats()
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        switcher.events.add_listener(
            lambda name, fields: stats.record(name, fields, trio.current_time())
        )
        await hedged(switcher)
        recent = stats.recent(trio.current_time())
        now = trio.current_time()
    assert [entry["event"] for entry in recent] == ["hedge"]
    assert recent[0]["target_id"] == "b"
    assert stats.target_stats("a", now)["errors_by_class"] == {}


async def test_a_lost_hedges_span_says_its_hedge_point(autojump_clock: object) -> None:
    """The span of a first attempt that lost its hedge carries the deadline the trace
    names for it (the hedge point), as the trace and the hedge event do."""
    fake = FakeProvider().on("key-a", hang()).on("key-b", usage_stream())
    cfg = config(target("a", operator_priority=1), target("b"))
    exporter = InMemorySpanExporter()
    tracing = open_tracing(OtelConfig(), config=cfg, exporter=exporter)
    assert tracing is not None
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        trace = switcher.inspect_request(await hedged(switcher))
        tracing.record(trace, config=cfg)
    lost = next(a for a in trace.attempts if a.decision == "hedge_lost")
    assert lost.deadline == "first_token 10.000s cold_start (0 observations)"
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "attempt a"]
    attributes = dict(span.attributes or {})
    assert attributes["oswitch.decision"] == "hedge_lost"
    assert attributes.get("oswitch.deadline") == "first_token"


async def test_a_stalls_span_names_the_gap_deadline(autojump_clock: object) -> None:
    """A stream cut at its chunk-gap deadline: the attempt's span names the stream idle
    deadline, as its trace names chunk_gap."""
    from oswitch.testing import stream

    fake = FakeProvider().on("key-a", stream("one two three four", stall_after=2))
    fake.on("key-b", stream("one two three four"))
    cfg = config(target("a", operator_priority=1), target("b"), stream_idle_timeout_ms=1000)
    exporter = InMemorySpanExporter()
    tracing = open_tracing(OtelConfig(), config=cfg, exporter=exporter)
    assert tracing is not None
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        trace = switcher.inspect_request(await hedged(switcher))
        tracing.record(trace, config=cfg)
    assert trace.attempts[0].deadline == "chunk_gap 1.000s override (explicit setting)"
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "attempt a"]
    assert dict(span.attributes or {})["oswitch.deadline"] == "stream_idle"


async def test_a_streams_span_has_the_usage_oswitch_asked_for() -> None:
    """A chat stream whose caller did not ask for usage, to a provider that reports it
    when oswitch asks: the request span carries the tokens the trace records."""
    seen: list[Mapping[str, Any]] = []
    fake = FakeProvider().on("key-a", usage_stream(seen))
    cfg = config(target("a"))
    with trio.fail_after(GUARD_S):
        async with traced_sidecar(fake, cfg) as (base, exporter), httpx.AsyncClient() as http:
            answer = await http.post(
                f"{base}/v1/chat/completions",
                json={
                    "model": "gpt-4o",
                    "messages": [{"role": "user", "content": "hi"}],
                    "stream": True,
                },
            )
            assert answer.status_code == 200 and "usage" not in answer.text
    assert seen[0]["stream_options"] == {"include_usage": True}
    [request] = [s for s in exporter.get_finished_spans() if s.name == "chat gpt-4o"]
    attributes = dict(request.attributes or {})
    assert attributes.get("gen_ai.usage.input_tokens") == 7
    assert attributes.get("gen_ai.usage.output_tokens") == 3


async def test_a_stream_whose_caller_asked_has_its_usage_in_the_span() -> None:
    """The contrast: a caller that asked for usage gets it, and so does its span."""
    fake = FakeProvider().on("key-a", usage_stream())
    cfg = config(target("a"))
    with trio.fail_after(GUARD_S):
        async with traced_sidecar(fake, cfg) as (base, exporter), httpx.AsyncClient() as http:
            answer = await http.post(
                f"{base}/v1/chat/completions",
                json={
                    "model": "gpt-4o",
                    "messages": [{"role": "user", "content": "hi"}],
                    "stream": True,
                    "stream_options": {"include_usage": True},
                },
            )
            assert answer.status_code == 200 and '"usage"' in answer.text
    [request] = [s for s in exporter.get_finished_spans() if s.name == "chat gpt-4o"]
    attributes = dict(request.attributes or {})
    assert attributes.get("gen_ai.usage.input_tokens") == 7


async def test_a_messages_requests_span_has_its_usage() -> None:
    """A Messages request served by an OpenAI target is traced like a chat request: one
    request span, carrying the usage the caller got in its message."""
    from oswitch.testing import reply

    fake = FakeProvider().on("key-a", reply("whole answer"))
    cfg = config(target("a", serves=("claude-test",)))
    with trio.fail_after(GUARD_S):
        async with traced_sidecar(fake, cfg) as (base, exporter), httpx.AsyncClient() as http:
            answer = await http.post(
                f"{base}/v1/messages",
                json={
                    "model": "claude-test",
                    "max_tokens": 64,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            )
            assert answer.status_code == 200
            got = answer.json()["usage"]
    assert got["input_tokens"] > 0
    spans = exporter.get_finished_spans()
    requests = [s for s in spans if s.name.startswith("chat ")]
    assert len(requests) == 1
    attributes = dict(requests[0].attributes or {})
    assert attributes.get("oswitch.target_id") == "a"
    assert attributes.get("gen_ai.usage.input_tokens") == got["input_tokens"]
