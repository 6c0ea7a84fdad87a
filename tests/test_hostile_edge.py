"""Hostile and broken clients against the sidecar (real loopback sockets, real clock,
each test under fail_after) and against the embedded engine (virtual clock)."""

from __future__ import annotations

import json
import logging
import math
import resource
import socket
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from oswitch.config import ServerConfig, SwitcherConfig, parse_config
from oswitch.core.error_class import ErrorClass
from oswitch.errors import AllTargetsFailed, ConfigError, RequestFailed
from oswitch.runtime.switcher import Switcher, open_switcher
from oswitch.sidecar.app import SidecarApp
from oswitch.sidecar.listener import ConnectionGate, ConnectionLimits, serve_connections
from oswitch.sidecar.serve import _ensure_descriptors, http_settings, serve_sidecar
from oswitch.testing import FakeProvider, hang, reply, stream
from support import chat, config, target

CHAT_PATH = "/v1/chat/completions"


@asynccontextmanager
async def gateway(
    fake: FakeProvider, cfg: SwitcherConfig, server: ServerConfig | None = None
) -> AsyncIterator[tuple[int, Switcher]]:
    """A switcher on ``fake`` behind a sidecar on 127.0.0.1:<free port>."""
    shutdown = trio.Event()
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(serve_sidecar, switcher, port=0, server=server, shutdown_trigger=shutdown)
            )
            yield port, switcher
            shutdown.set()


@asynccontextmanager
async def gated_gateway(
    fake: FakeProvider, server: ServerConfig
) -> AsyncIterator[tuple[int, ConnectionGate]]:
    """Like ``gateway``, but handing back the connection gate to read its counts."""
    shutdown = trio.Event()
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        app = SidecarApp(switcher, body_timeout_s=server.body_timeout_ms / 1000.0)
        limits = ConnectionLimits(
            write_timeout_s=server.write_timeout_ms / 1000.0,
            max_connections=server.max_connections,
        )
        async with trio.open_nursery() as nursery:
            port, gate = await nursery.start(
                partial(
                    serve_connections,
                    app,  # type: ignore[arg-type]
                    http_settings("127.0.0.1", 0, server),
                    limits,
                    shutdown_trigger=shutdown,
                )
            )
            yield port, gate
            shutdown.set()


async def connect(port: int, *, receive_buffer: int | None = None) -> trio.socket.SocketType:
    sock = trio.socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await sock.connect(("127.0.0.1", port))
    return sock


def post_head(length: int, *extra: str) -> bytes:
    lines = [
        f"POST {CHAT_PATH} HTTP/1.1",
        "host: 127.0.0.1",
        "content-type: application/json",
        f"content-length: {length}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_until_closed(sock: trio.socket.SocketType) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := await sock.recv(65536):
        data += chunk
    return data


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


async def wait_for(condition: Any) -> None:
    """Poll ``condition`` on the real clock (the caller's fail_after bounds it)."""
    while True:
        if condition():
            return
        await trio.sleep(0.02)


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# ---- item 1: a request oswitch cannot encode is the caller's fault ----------------


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        (b'{"model": "gpt-4o", "temperature": NaN, "messages": [{"role": "user"}]}', "temperature"),
        (b'{"model": "gpt-4o", "top_p": Infinity, "messages": [{"role": "user"}]}', "top_p"),
        (
            b'{"model": "gpt-4o", "seed": 1, "temperature": -Infinity, "messages": '
            b'[{"role": "user"}]}',
            "temperature",
        ),
        (
            b'{"model": "gpt-4o", "temperature": 1e999, "messages": [{"role": "user"}]}',
            "temperature",
        ),
        (
            b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "\\ud800"}]}',
            "messages[0].content",
        ),
        (
            b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x", "\\udc00": 1}]}',
            "messages[0]",
        ),
    ],
    ids=["nan", "infinity", "minus-infinity", "overflow", "surrogate-value", "surrogate-key"],
)
async def test_unencodable_bodies_are_400_and_charge_no_target(payload: bytes, param: str) -> None:
    """A body oswitch could not encode upstream is a 400 naming its path; two of them
    leave every breaker closed, and a valid request after them is served."""
    fake = FakeProvider().on("key-a", reply()).on("key-b", reply())
    cfg = config(target("a"), target("b"), circuit_breaker=breaker_of_two())
    with trio.fail_after(10):
        async with gateway(fake, cfg) as (port, switcher), httpx.AsyncClient() as client:
            url = f"http://127.0.0.1:{port}{CHAT_PATH}"
            headers = {"content-type": "application/json"}
            refused = [await client.post(url, content=payload, headers=headers) for _ in range(2)]
            served = await client.post(url, json=chat())
            views = switcher.list_targets()
    for response in refused:
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["param"] == f"${'.' if not param.startswith('[') else ''}{param}"
        assert error["type"] == "invalid_request_error"
        assert response.headers["x-oswitch-request-id"].startswith("req_")
    assert served.status_code == 200
    assert [(v.condition, v.breaker_state) for v in views] == [("Healthy", "Closed")] * 2
    assert len(fake.calls) == 1


def breaker_of_two() -> Any:
    from support import breaker

    return breaker(failure_threshold=2)


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"temperature": math.nan}, "$.temperature"),
        ({"temperature": math.inf}, "$.temperature"),
        ({"metadata": {"blob": b"\x00"}}, "$.metadata.blob"),
        ({"metadata": {"ids": {1, 2}}}, "$.metadata.ids"),
        ({"metadata": {"when": object()}}, "$.metadata.when"),
        ({"metadata": {3: "x"}}, "$.metadata"),
        ({"messages": [{"role": "user", "content": "\ud800"}]}, "$.messages[0].content"),
    ],
    ids=["nan", "infinity", "bytes", "set", "object", "int-key", "surrogate"],
)
async def test_embedded_unencodable_requests_are_invalid_and_charge_no_target(
    autojump_clock: object, fields: dict[str, Any], path: str
) -> None:
    """Embedded callers' unencodable values raise RequestFailed(InvalidRequest, 400)
    before any attempt; after two, every target is still Healthy and serves."""
    fake = FakeProvider().on("key-a", reply()).on("key-b", reply())
    cfg = config(target("a"), target("b"), circuit_breaker=breaker_of_two())
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        for _ in range(2):
            with pytest.raises(RequestFailed) as caught:
                await switcher.complete(chat(**fields))
            assert caught.value.error_class is ErrorClass.INVALID_REQUEST
            assert caught.value.status == 400
            assert f" @ {path}" in caught.value.message
        served = await switcher.complete(chat())
        views = switcher.list_targets()
    assert served["oswitch"]["attempts"] == 1
    assert [(v.condition, v.breaker_state) for v in views] == [("Healthy", "Closed")] * 2
    assert len(fake.calls) == 1


async def test_embedded_streams_refuse_unencodable_requests_at_entry(
    autojump_clock: object,
) -> None:
    """switcher.stream refuses an unencodable request when entered, with no attempt."""
    fake = FakeProvider().on("key-a", stream())
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        with pytest.raises(RequestFailed, match=r"@ \$\.top_p"):
            async with switcher.stream(chat(top_p=math.nan)):
                pass
    assert fake.calls == []


# ---- items 5 and 7: bounded strings, typed failures ---------------------------------


async def test_a_4mb_model_name_gives_a_small_400_and_is_kept_nowhere() -> None:
    """A 4 MB model name is refused with a body of a few hundred bytes; the engine never
    sees it (no trace, no request counted)."""
    fake = FakeProvider().on("key-a", reply())
    with trio.fail_after(20):
        async with gateway(fake, config(target("a"))) as (port, switcher):
            async with httpx.AsyncClient() as client:
                response = await client.post(
                    f"http://127.0.0.1:{port}{CHAT_PATH}", json=chat(model="m" * 4_000_000)
                )
            stats = switcher.statistics()
    assert response.status_code == 400
    assert len(response.content) < 400
    assert "model name longer than 256 characters" in response.json()["error"]["message"]
    assert (stats.requests, stats.traces_kept) == (0, 0)
    assert fake.calls == []


async def test_embedded_huge_model_name_is_traced_without_it(autojump_clock: object) -> None:
    """Embedded, a 4 MB model name raises a short RequestFailed and its trace keeps no model."""
    fake = FakeProvider().on("key-a", reply())
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        with pytest.raises(RequestFailed) as caught:
            await switcher.complete(chat(model="m" * 4_000_000))
        assert caught.value.request_id is not None
        trace = switcher.inspect_request(caught.value.request_id)
    assert len(str(caught.value)) < 300
    assert trace.model == ""


@pytest.mark.parametrize("request_id", ["x" * 129, "two words", "line\nbreak", "é"])
async def test_embedded_request_ids_are_bounded(autojump_clock: object, request_id: str) -> None:
    """A caller's request_id must be 1-128 printable ASCII characters: otherwise
    RequestFailed(InvalidRequest, 400), with no trace and no attempt."""
    fake = FakeProvider().on("key-a", reply())
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        with pytest.raises(RequestFailed) as caught:
            await switcher.complete(chat(), request_id=request_id)
        stats = switcher.statistics()
    assert caught.value.error_class is ErrorClass.INVALID_REQUEST
    assert caught.value.status == 400
    assert caught.value.request_id is None
    assert (stats.requests, stats.traces_kept) == (0, 0)
    assert fake.calls == []


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 64 levels @ $"),
        (
            b'{"model": "gpt-4o", "messages": [{"role": "user"}], "x": '
            + b"[" * 70
            + b"]" * 70
            + b"}",
            "nested deeper than 64 levels @ $.x",
        ),
        (
            b'{"model": "gpt-4o", "stream": true, "stream_options": 1, '
            b'"messages": [{"role": "user"}]}',
            "must be an object or null @ $.stream_options",
        ),
        (
            b'{"model": "gpt-4o", "tools": {}, "messages": [{"role": "user"}]}',
            "must be an array of objects @ $.tools",
        ),
        (
            b'{"model": "gpt-4o", "max_tokens": 1e30, "messages": [{"role": "user"}]}',
            "must be an integer from 1 to 2147483647 @ $.max_tokens",
        ),
        (
            b'{"model": "gpt-4o", "stop": {"a": 1}, "messages": [{"role": "user"}]}',
            "must be a string, an array of strings or null @ $.stop",
        ),
        (b'{"model": "gpt-4o", "messages": [7]}', "must be an object @ $.messages[0]"),
        (b"\xff\xfe\x00garbage", "request body is not valid JSON"),
    ],
    ids=[
        "deep-array",
        "deep-field",
        "stream-options",
        "tools",
        "max-tokens",
        "stop",
        "message",
        "bad-utf8",
    ],
)
async def test_odd_bodies_are_shaped_400s_and_the_server_keeps_serving(
    payload: bytes, message: str
) -> None:
    """Deep nesting, a non-object stream_options and other odd shapes are 400s in
    OpenAI's shape with a request id — never a bare 500 — and the server serves on."""
    fake = FakeProvider().on("key-a", reply())
    with trio.fail_after(10):
        async with gateway(fake, config(target("a"))) as (port, _):
            async with httpx.AsyncClient() as client:
                response = await client.post(
                    f"http://127.0.0.1:{port}{CHAT_PATH}",
                    content=payload,
                    headers={"content-type": "application/json"},
                )
                served = await client.post(f"http://127.0.0.1:{port}{CHAT_PATH}", json=chat())
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert message in response.json()["error"]["message"]
    assert response.headers["x-oswitch-request-id"].startswith("req_")
    assert served.status_code == 200


async def test_an_unexpected_handler_error_is_a_shaped_500_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug in a handler is a 500 internal_error in OpenAI's shape with its request id,
    logged once as handler_failed with the exception type and no traceback; the
    server goes on serving."""

    def broken() -> list[str]:
        raise ZeroDivisionError("secret-ish detail")

    fake = FakeProvider().on("key-a", reply())
    caplog.set_level(logging.INFO)
    with trio.fail_after(10):
        async with gateway(fake, config(target("a"))) as (port, switcher):
            switcher.models = broken  # type: ignore[method-assign]
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{port}/v1/models")
                health = await client.get(f"http://127.0.0.1:{port}/healthz")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert response.json()["error"]["type"] == "server_error"
    request_id = response.headers["x-oswitch-request-id"]
    assert request_id in response.json()["error"]["message"]
    assert "secret-ish" not in response.text
    failures = [r for r in caplog.records if r.getMessage() == "handler_failed"]
    assert [(r.request_id, r.note, r.exc_info) for r in failures] == [  # type: ignore[attr-defined]
        (request_id, "ZeroDivisionError", None)
    ]
    assert not [r for r in caplog.records if r.exc_info]
    assert health.status_code == 200


async def test_a_stream_that_breaks_on_our_side_ends_in_band_without_done() -> None:
    """An unexpected error mid-stream ends the stream with an in-band internal_error
    event and no [DONE]."""

    @asynccontextmanager
    async def breaking_stream(request: Any, *, request_id: str) -> AsyncIterator[Any]:
        async def chunks() -> AsyncIterator[dict[str, Any]]:
            yield {"choices": [{"index": 0, "delta": {"content": "one"}}]}
            raise KeyError("bug")

        yield chunks()

    fake = FakeProvider()
    with trio.fail_after(10):
        async with gateway(fake, config(target("a"))) as (port, switcher):
            switcher.stream = breaking_stream  # type: ignore[assignment]
            async with httpx.AsyncClient() as client:
                response = await client.post(
                    f"http://127.0.0.1:{port}{CHAT_PATH}", json=chat(stream=True)
                )
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert response.status_code == 200
    assert "[DONE]" not in events
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "one"
    assert json.loads(events[-1])["error"]["code"] == "internal_error"


# ---- item 3: a client that stops reading, and the request deadline ------------------


async def test_a_client_that_stops_reading_frees_its_target_slot() -> None:
    """A client that sends a streaming request and never reads is disconnected once a
    write waits past write_timeout_ms: its upstream attempt is cancelled, the target's
    slot frees, and the request is counted as client_cancelled."""
    long_answer = " ".join(["x" * 2000] * 4000)  # ~8 MB of SSE: more than any socket buffer
    fake = FakeProvider().on("key-a", stream(long_answer, split_bytes=1 << 20))
    server = ServerConfig(write_timeout_ms=300)
    with trio.fail_after(20):
        async with gateway(fake, config(target("a")), server) as (port, switcher):
            sock = await connect(port, receive_buffer=4096)
            body = json.dumps(chat(stream=True)).encode()
            await sock.send(post_head(len(body)) + body)
            await wait_for(lambda: fake.calls)
            await wait_for(lambda: switcher.list_targets()[0].in_flight == 0)
            await wait_for(lambda: fake.open_streams == 0)
            async with httpx.AsyncClient() as client:
                metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            sock.close()
    assert fake.closed_early + fake.cancelled == 1
    samples = metric_samples(metrics)
    key = (
        "oswitch_requests_total",
        (("error_class", ""), ("outcome", "client_cancelled"), ("stream", "true")),
    )
    assert samples[key] == 1


async def test_a_slow_reader_past_the_request_deadline_gets_an_in_band_error() -> None:
    """A client that keeps reading, but too slowly for a long answer to reach it within
    request_timeout_ms, frees the target's slot at the deadline (the engine ends the
    attempt while the sidecar waits to write) and then reads an in-band
    deadline_exceeded event and no [DONE] — never a clean end on a partial answer."""
    long_answer = " ".join(["x" * 2000] * 4000)  # ~8 MB of SSE: more than any socket buffer
    fake = FakeProvider().on("key-a", stream(long_answer, split_bytes=1 << 20))
    cfg = config(target("a"), request_timeout_ms=500)
    with trio.fail_after(30):
        async with gateway(fake, cfg, ServerConfig(write_timeout_ms=20_000)) as (port, switcher):
            sock = await connect(port, receive_buffer=4096)
            body = json.dumps(chat(stream=True)).encode()
            await sock.send(post_head(len(body)) + body)
            await wait_for(lambda: fake.calls)
            received = b""
            freed = False
            while chunk := await sock.recv(65536):
                received += chunk
                freed = freed or switcher.list_targets()[0].in_flight == 0
                if received.endswith(b"\r\n0\r\n\r\n"):
                    break  # the chunked body ended (the connection stays alive)
                if not freed:
                    await trio.sleep(0.01)  # slow, but never silent for 20 s
            sock.close()
    events = [line[6:] for line in received.split(b"\n") if line.startswith(b"data: ")]
    assert freed
    assert b"[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "deadline_exceeded"
    assert len(received) < len(long_answer)


async def test_deadline_reached_while_delivering_ends_the_stream_in_band() -> None:
    """When the engine's stream raises the request deadline after content went out, the
    sidecar ends the stream with an in-band deadline_exceeded event and no [DONE]."""

    @asynccontextmanager
    async def late_stream(request: Any, *, request_id: str) -> AsyncIterator[Any]:
        async def chunks() -> AsyncIterator[dict[str, Any]]:
            yield {"choices": [{"index": 0, "delta": {"content": "partial"}}]}
            raise AllTargetsFailed(
                "deadline exceeded while delivering", request_id=request_id, deadline_exceeded=True
            )

        yield chunks()

    with trio.fail_after(10):
        async with gateway(FakeProvider(), config(target("a"))) as (port, switcher):
            switcher.stream = late_stream  # type: ignore[assignment]
            async with httpx.AsyncClient() as client:
                response = await client.post(
                    f"http://127.0.0.1:{port}{CHAT_PATH}", json=chat(stream=True)
                )
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "deadline_exceeded"


# ---- item 10b: client-cancelled requests are counted ------------------------------


async def test_clients_leaving_before_the_answer_are_counted_as_client_cancelled() -> None:
    """A client that hangs up while its (plain) request waits on the provider is counted
    once as client_cancelled, and its attempt is cancelled."""
    fake = FakeProvider().on("key-a", hang())
    with trio.fail_after(10):
        async with gateway(fake, config(target("a"))) as (port, switcher):
            sock = await connect(port)
            body = json.dumps(chat()).encode()
            await sock.send(post_head(len(body)) + body)
            await wait_for(lambda: switcher.list_targets()[0].in_flight == 1)
            sock.close()
            await wait_for(lambda: switcher.list_targets()[0].in_flight == 0)
            async with httpx.AsyncClient() as client:
                metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    samples = metric_samples(metrics)
    key = (
        "oswitch_requests_total",
        (("error_class", ""), ("outcome", "client_cancelled"), ("stream", "false")),
    )
    assert samples[key] == 1
    assert not [name for name, labels in samples if dict(labels).get("outcome") == "ok"]


# ---- item 4: stalled bodies, and a cap on connections -------------------------------


async def test_a_stalled_body_gets_408_and_its_connection_closed() -> None:
    """A client that sends headers and then stalls in its body gets 408 once
    body_timeout_ms passes, and the server closes the connection."""
    fake = FakeProvider().on("key-a", reply())
    server = ServerConfig(body_timeout_ms=300)
    with trio.fail_after(10):
        async with gateway(fake, config(target("a")), server) as (port, switcher):
            sock = await connect(port)
            await sock.send(post_head(1000) + b'{"model": ')
            status, headers, body = parse_response(await read_until_closed(sock))
            sock.close()
            stats = switcher.statistics()
    assert status == 408
    assert headers["connection"] == "close"
    assert headers["x-oswitch-request-id"].startswith("req_")
    assert json.loads(body)["error"]["code"] == "body_timeout"
    assert stats.requests == 0


async def test_connections_past_the_cap_are_refused_at_once() -> None:
    """With max_connections 4 and four clients stalled, a fifth and sixth connection
    get 503 and are closed at once; once the stallers are cut, a seventh is served."""
    fake = FakeProvider().on("key-a", reply())
    server = ServerConfig(max_connections=4, body_timeout_ms=30000)
    with trio.fail_after(15):
        async with gated_gateway(fake, server) as (port, gate):
            stallers = []
            for _ in range(4):
                sock = await connect(port)
                await sock.send(post_head(1000) + b"{")
                stallers.append(sock)
            await wait_for(lambda: gate.statistics().open == 4)
            refused = []
            for _ in range(2):
                sock = await connect(port)
                refused.append(parse_response(await read_until_closed(sock)))
                sock.close()
            assert gate.statistics().refused == 2
            for sock in stallers:
                sock.close()
            await wait_for(lambda: gate.statistics().open == 0)
            async with httpx.AsyncClient() as client:
                served = await client.post(f"http://127.0.0.1:{port}{CHAT_PATH}", json=chat())
    for status, headers, body in refused:
        assert status == 503
        assert headers["retry-after"] == "1"
        assert headers["x-oswitch-request-id"].startswith("req_")
        assert json.loads(body)["error"]["code"] == "too_many_connections"
    assert served.status_code == 200


async def test_a_client_closing_after_its_answer_frees_its_connection_at_once() -> None:
    """A keep-alive client that hangs up as soon as it has read a stream's [DONE] has its
    connection closed at once, not held until the keep-alive limit (hypercorn, which
    served here before, restarted its idle timer when the answer ended after the client
    left and kept the socket in CLOSE-WAIT until that timer fired)."""
    fake = FakeProvider().on("key-a", stream("done"))
    server = ServerConfig(header_timeout_ms=60_000)
    with trio.fail_after(10):
        async with gated_gateway(fake, server) as (port, gate):
            for _ in range(10):
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                    request = chat(stream=True)
                    async with client.stream("POST", CHAT_PATH, json=request) as response:
                        async for line in response.aiter_lines():
                            if line == "data: [DONE]":
                                break
            await wait_for(lambda: gate.statistics().open == 0)


# ---- item 10e: Content-Length with Transfer-Encoding --------------------------------


async def test_content_length_with_transfer_encoding_is_refused_and_closed() -> None:
    """A request with both Content-Length and Transfer-Encoding is refused 400 and its
    connection closed after the reply (RFC 9112 §6.3), never served or kept alive."""
    fake = FakeProvider().on("key-a", reply())
    body = json.dumps(chat()).encode()
    chunked = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    with trio.fail_after(10):
        async with gateway(fake, config(target("a"))) as (port, _):
            sock = await connect(port)
            await sock.send(post_head(5, "transfer-encoding: chunked") + chunked)
            status, headers, reply_body = parse_response(await read_until_closed(sock))
            sock.close()
    assert status == 400
    assert headers["connection"] == "close"
    assert json.loads(reply_body)["error"]["code"] == "ambiguous_framing"
    assert fake.calls == []


# ---- item 10h: HEAD ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/v1/models", "/metrics"])
async def test_head_answers_like_get_without_a_body(path: str) -> None:
    """HEAD on a GET route answers GET's status and headers with no body."""
    fake = FakeProvider().on("key-a", reply())
    with trio.fail_after(10):
        async with gateway(fake, config(target("a"))) as (port, _):
            async with httpx.AsyncClient() as client:
                head = await client.head(f"http://127.0.0.1:{port}{path}")
                get = await client.get(f"http://127.0.0.1:{port}{path}")
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["x-oswitch-request-id"].startswith("req_")
    if path != "/metrics":  # counters move between the two scrapes
        assert head.headers["content-length"] == get.headers["content-length"]


async def test_head_on_the_chat_route_is_405_naming_what_is_allowed() -> None:
    """HEAD on the POST-only chat route is 405 with Allow: POST."""
    with trio.fail_after(10):
        async with gateway(FakeProvider(), config(target("a"))) as (port, _):
            async with httpx.AsyncClient() as client:
                response = await client.head(f"http://127.0.0.1:{port}{CHAT_PATH}")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


# ---- the new server keys -------------------------------------------------------------


def test_server_limits_parse_and_default() -> None:
    """body_timeout_ms, write_timeout_ms and max_connections parse, with their defaults."""
    target_ = {"target_id": "a", "provider_id": "openai"}
    defaults = parse_config({"targets": [target_]}).server
    assert (defaults.body_timeout_ms, defaults.write_timeout_ms, defaults.max_connections) == (
        30000.0,
        30000.0,
        1000,
    )
    server = parse_config(
        {
            "targets": [target_],
            "server": {"body_timeout_ms": 5, "write_timeout_ms": 6, "max_connections": 7},
        }
    ).server
    assert (server.body_timeout_ms, server.write_timeout_ms, server.max_connections) == (
        5.0,
        6.0,
        7,
    )


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("body_timeout_ms", 0, "must be > 0 (got 0)"),
        ("write_timeout_ms", -1, "must be > 0 (got -1)"),
        ("max_connections", 0, "must be >= 1 (got 0)"),
    ],
)
def test_server_limits_out_of_range_are_named(key: str, value: int, reason: str) -> None:
    """Each new server limit enforces its range at its own path."""
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {"targets": [{"target_id": "a", "provider_id": "openai"}], "server": {key: value}}
        )
    assert caught.value.problems == ((f"$.server.{key}", reason),)


def _gateway_for(targets: int) -> Any:
    """Just enough of a switcher for the descriptor check: its targets' concurrency."""
    return types.SimpleNamespace(
        config=types.SimpleNamespace(
            targets=[types.SimpleNamespace(concurrency_limit=10)] * targets
        )
    )


def test_the_descriptor_limit_is_raised_to_fit_max_connections(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With a soft limit of 1024 and room under the hard one, the soft limit is raised to
    max_connections + every target's pool + 32 headroom."""
    raised: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 4096))
    monkeypatch.setattr(resource, "setrlimit", lambda which, limits: raised.append(limits))
    caplog.set_level(logging.INFO)
    _ensure_descriptors(ServerConfig(), _gateway_for(2))
    assert raised == [(1000 + 20 + 32, 4096)]
    assert [r.getMessage() for r in caplog.records] == ["descriptor_limit_raised"]


def test_a_descriptor_limit_too_low_for_max_connections_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """When the hard limit leaves no room, the soft one is left alone and
    descriptor_limit_low is logged once."""
    raised: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 1024))
    monkeypatch.setattr(resource, "setrlimit", lambda which, limits: raised.append(limits))
    caplog.set_level(logging.INFO)
    _ensure_descriptors(ServerConfig(), _gateway_for(1))
    assert raised == []
    assert [(r.getMessage(), r.levelname) for r in caplog.records] == [
        ("descriptor_limit_low", "WARNING")
    ]
