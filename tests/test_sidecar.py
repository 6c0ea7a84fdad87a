"""The sidecar over real loopback sockets, on the real clock, each test under fail_after."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import httpx
import openai
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from oswitch.config import ServerConfig, SwitcherConfig
from oswitch.core.secret import Secret
from oswitch.runtime.switcher import Switcher, open_switcher
from oswitch.sidecar.serve import run_gateway, serve_sidecar
from oswitch.testing import (
    FakeProvider,
    bad_request,
    hang,
    rate_limited,
    reply,
    serve_fake_provider,
    server_error,
    stream,
)
from support import chat, config, target

ANSWER = "one two three four five six seven eight nine ten eleven twelve"


@asynccontextmanager
async def gateway(
    fake: FakeProvider, cfg: SwitcherConfig, server: ServerConfig | None = None
) -> AsyncIterator[tuple[str, Switcher]]:
    """A switcher on ``fake`` behind a sidecar on 127.0.0.1:<free port>."""
    shutdown = trio.Event()
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(serve_sidecar, switcher, port=0, server=server, shutdown_trigger=shutdown)
            )
            yield f"http://127.0.0.1:{port}", switcher
            shutdown.set()


def sse_events(body: str) -> list[str]:
    return [line[6:] for line in body.splitlines() if line.startswith("data: ")]


async def test_openai_sdk_gets_whole_answers_while_keys_fail() -> None:
    """The official OpenAI SDK gets complete answers, streamed and not, while one key is
    rate-limited and one cuts its streams."""
    fake = FakeProvider()
    fake.on("key-limited", rate_limited(30.0))
    fake.on("key-cutter", stream(ANSWER, cut_after=4), reply("whole from cutter"))
    fake.on("key-good", stream(ANSWER), reply("whole from good"))
    cfg = config(
        target("limited", operator_priority=2),
        target("cutter", operator_priority=1),
        target("good"),
    )
    with trio.fail_after(20):
        async with gateway(fake, cfg) as (base, _):
            client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)

            def streamed() -> str:
                pieces = client.chat.completions.create(
                    model="gpt-4o",
                    messages=[{"role": "user", "content": "count"}],
                    stream=True,
                )
                return "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)

            def plain() -> tuple[str, str]:
                completion = client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
                )
                return completion.choices[0].message.content or "", completion.model

            try:
                assert await trio.to_thread.run_sync(streamed) == ANSWER
                text, model = await trio.to_thread.run_sync(plain)
            finally:
                client.close()
            assert text.startswith("whole from")
            assert model == "gpt-4o"


async def test_chat_completion_reply_and_request_id_header() -> None:
    """A non-streamed reply keeps OpenAI's shape plus 'oswitch', and names its request id."""
    fake = FakeProvider().on("key-a", reply("hello there"))
    with trio.fail_after(10):
        async with (
            gateway(fake, config(target("a"))) as (base, _),
            httpx.AsyncClient() as client,
        ):
            response = await client.post(f"{base}/v1/chat/completions", json=chat())
    body = response.json()
    assert response.status_code == 200
    assert body["choices"][0]["message"]["content"] == "hello there"
    assert body["oswitch"]["request_id"] == response.headers["x-oswitch-request-id"]
    assert body["oswitch"]["target_id"] == "a"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{not json", "request body is not valid JSON"),
        (b"[1, 2]", "must be a JSON object (got list) @ $"),
        (b'{"model": "gpt-4o"}', "required: a non-empty array of messages @ $.messages"),
        (
            b'{"model": "gpt-4o", "messages": [{"role": "robot", "content": "x"}]}',
            "@ $.messages[0].role",
        ),
        (
            b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream": 1}',
            "must be true or false @ $.stream",
        ),
    ],
    ids=["invalid-json", "not-object", "no-messages", "bad-role", "bad-stream"],
)
async def test_malformed_bodies_are_400_naming_the_problem(payload: bytes, message: str) -> None:
    """Bodies that are not chat requests get 400 with a message naming what and where."""
    fake = FakeProvider().on("key-a", reply())
    with trio.fail_after(10):
        async with gateway(fake, config(target("a"))) as (base, _), httpx.AsyncClient() as client:
            response = await client.post(
                f"{base}/v1/chat/completions",
                content=payload,
                headers={"content-type": "application/json"},
            )
            health = await client.get(f"{base}/healthz")
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
    assert response.headers["x-oswitch-request-id"].startswith("req_")
    assert health.status_code == 200  # still serving
    assert fake.calls == []


async def test_routing_errors_body_limits_and_auth() -> None:
    """Unknown paths 404, wrong methods 405, oversized bodies 413, missing keys 401."""
    fake = FakeProvider().on("key-a", reply())
    server = ServerConfig(api_keys=(Secret("gateway-key-123"),), max_body_bytes=2048)
    with trio.fail_after(10):
        async with gateway(fake, config(target("a")), server) as (base, _):
            async with httpx.AsyncClient() as client:
                missing = await client.post(f"{base}/v1/chat/completions", json=chat())
                wrong = await client.post(
                    f"{base}/v1/chat/completions",
                    json=chat(),
                    headers={"authorization": "Bearer nope"},
                )
                auth = {"authorization": "Bearer gateway-key-123"}
                ok = await client.post(f"{base}/v1/chat/completions", json=chat(), headers=auth)
                big = await client.post(
                    f"{base}/v1/chat/completions", json=chat(text="x" * 5000), headers=auth
                )
                nowhere = await client.get(f"{base}/v2/anything")
                method = await client.get(f"{base}/v1/chat/completions")
    assert (missing.status_code, wrong.status_code, ok.status_code) == (401, 401, 200)
    assert "gateway-key-123" not in wrong.text
    assert big.status_code == 413
    assert (nowhere.status_code, method.status_code) == (404, 405)
    assert len(fake.calls) == 1


@pytest.mark.parametrize(
    ("behaviour", "fields", "status", "retry_after"),
    [
        (rate_limited(20.0), {}, 429, "20"),
        (server_error(), {"retry_budget": 0}, 502, None),
        (bad_request("Invalid 'temperature': 7."), {}, 400, None),
        (hang(), {"request_timeout_ms": 300}, 504, None),
    ],
    ids=["all-rate-limited", "upstream-failure", "invalid-request", "deadline"],
)
async def test_status_codes_are_honest(
    behaviour: Any, fields: dict[str, Any], status: int, retry_after: str | None
) -> None:
    """Each failure maps to its status code, in OpenAI's error shape."""
    fake = FakeProvider().on("key-a", behaviour)
    with trio.fail_after(10):
        async with gateway(fake, config(target("a"), **fields)) as (base, _):
            async with httpx.AsyncClient() as client:
                response = await client.post(f"{base}/v1/chat/completions", json=chat())
    assert response.status_code == status
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.headers.get("retry-after") == retry_after
    if status == 400:
        assert "Invalid 'temperature': 7." in response.json()["error"]["message"]


async def test_overloaded_is_503_with_retry_after() -> None:
    """With the queue full, the gateway sheds at once with 503 and Retry-After."""
    fake = FakeProvider().on("key-a", reply(latency=1.0))
    cfg = config(target("a"), concurrency_limit=1, queue_limit=0, backpressure_threshold=0)
    with trio.fail_after(10):
        async with gateway(fake, cfg) as (base, _), httpx.AsyncClient() as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(client.post, f"{base}/v1/chat/completions", json=chat()))
                await trio.sleep(0.3)
                shed = await client.post(f"{base}/v1/chat/completions", json=chat())
    assert shed.status_code == 503
    assert int(shed.headers["retry-after"]) >= 1
    assert shed.json()["error"]["code"] == "overloaded"


async def test_streaming_sse_ends_with_done_and_usage_when_asked() -> None:
    """SSE chunks end with a usage chunk (include_usage) and 'data: [DONE]'."""
    fake = FakeProvider().on("key-a", stream(ANSWER, api="anthropic"))
    with trio.fail_after(10):
        async with gateway(fake, config(target("a", api="anthropic"))) as (base, _):
            async with httpx.AsyncClient() as client:
                response = await client.post(
                    f"{base}/v1/chat/completions",
                    json=chat(stream=True, stream_options={"include_usage": True}),
                )
    events = sse_events(response.text)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    usage_chunk = json.loads(events[-2])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["prompt_tokens"] == 10
    text = "".join(
        json.loads(e)["choices"][0]["delta"].get("content") or ""
        for e in events[:-2]
        if json.loads(e)["choices"]
    )
    assert text == ANSWER


async def test_stream_failing_after_content_ends_in_band_without_done() -> None:
    """A stream that cannot be finished ends with an error event and no [DONE]."""
    fake = FakeProvider().on("key-a", stream(ANSWER, cut_after=3))
    cfg = config(target("a"), retry_budget=0)
    with trio.fail_after(10):
        async with gateway(fake, cfg) as (base, _), httpx.AsyncClient() as client:
            response = await client.post(f"{base}/v1/chat/completions", json=chat(stream=True))
    events = sse_events(response.text)
    assert response.status_code == 200
    assert "[DONE]" not in events
    assert "error" in json.loads(events[-1])


async def test_client_disconnect_mid_stream_closes_upstream() -> None:
    """A client that leaves mid-stream cancels the upstream attempt and frees the target."""
    fake = FakeProvider().on("key-a", stream(ANSWER, chunk_latency=0.2))
    with trio.fail_after(10):
        async with gateway(fake, config(target("a"))) as (base, switcher):
            async with (
                httpx.AsyncClient() as client,
                client.stream(
                    "POST", f"{base}/v1/chat/completions", json=chat(stream=True)
                ) as response,
            ):
                async for line in response.aiter_lines():
                    if line.startswith("data: ") and "two" in line:
                        break
            for _ in range(50):
                if switcher.list_targets()[0].in_flight == 0 and fake.open_streams == 0:
                    break
                await trio.sleep(0.05)
            assert switcher.list_targets()[0].in_flight == 0
            assert fake.open_streams == 0
            assert fake.closed_early + fake.cancelled == 1


async def test_models_readyz_and_metrics() -> None:
    """/v1/models lists served models, /readyz follows eligibility, /metrics parses."""
    fake = FakeProvider().on("key-a", server_error(), reply()).on("key-b", reply())
    cfg = config(
        target("a", operator_priority=1),
        target("b", model="gpt-4.1"),
        fallbacks={"gpt-4o": ("gpt-4.1",)},
    )
    with trio.fail_after(10):
        async with gateway(fake, cfg) as (base, switcher), httpx.AsyncClient() as client:
            await client.post(f"{base}/v1/chat/completions", json=chat())
            models = (await client.get(f"{base}/v1/models")).json()
            ready = await client.get(f"{base}/readyz")
            metrics_text = (await client.get(f"{base}/metrics")).text
            for target_id in ("a", "b"):
                await switcher.pause_target(target_id)
            not_ready = await client.get(f"{base}/readyz")
    assert [m["id"] for m in models["data"]] == ["gpt-4.1", "gpt-4o"]
    assert (ready.status_code, not_ready.status_code) == (200, 503)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics_text)
        for s in family.samples
    }
    assert (
        samples[
            (
                "oswitch_requests_total",
                (("error_class", ""), ("outcome", "ok"), ("stream", "false")),
            )
        ]
        == 1
    )
    assert (
        samples[
            (
                "oswitch_attempts_total",
                (("error_class", "TransientServerFailure"), ("target_id", "a")),
            )
        ]
        == 1
    )
    assert samples[("oswitch_target_breaker_state", (("state", "Closed"), ("target_id", "a")))] == 1
    assert ("oswitch_queue_depth", ()) in samples
    assert any(name == "oswitch_request_duration_seconds_count" for name, _ in samples)
    assert "key-a" not in metrics_text


async def test_gateway_over_loopback_upstream_and_graceful_shutdown() -> None:
    """oswitch serve's runner, against a fake upstream on loopback: a stream in flight when
    shutdown is asked finishes whole, new connections are refused, and the runner returns."""
    fake = FakeProvider().on("key-a", stream(ANSWER, chunk_latency=0.1))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            upstream_port = await nursery.start(serve_fake_provider, fake)
            cfg = attrs.evolve(
                config(target("a", base_url=f"http://127.0.0.1:{upstream_port}/v1")),
                server=ServerConfig(shutdown_grace_ms=5000),
            )
            shutdown = trio.Event()
            port, control = await nursery.start(
                partial(run_gateway, cfg, port=0, shutdown=shutdown)
            )
            assert control is None
            base = f"http://127.0.0.1:{port}"
            async with (
                httpx.AsyncClient() as client,
                client.stream(
                    "POST", f"{base}/v1/chat/completions", json=chat(stream=True)
                ) as response,
            ):
                lines = []
                async for line in response.aiter_lines():
                    lines.append(line)
                    if len(lines) == 4:
                        shutdown.set()
            text = "".join(
                json.loads(e)["choices"][0]["delta"].get("content") or ""
                for e in sse_events("\n".join(lines))
                if e != "[DONE]" and json.loads(e).get("choices")
            )
            assert text == ANSWER
            assert sse_events("\n".join(lines))[-1] == "[DONE]"
            await trio.sleep(0.3)
            with pytest.raises(httpx.ConnectError):
                async with httpx.AsyncClient() as client:
                    await client.get(f"{base}/healthz")
            nursery.cancel_scope.cancel()
