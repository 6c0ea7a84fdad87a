"""The sidecar's own HTTP/1.1 server over real loopback sockets (real clock, each test
under fail_after): keep-alive and pipelining, chunked request bodies, 100 Continue,
HTTP/1.0, refusals of broken heads, the header timeout and closing idle connections at
shutdown."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from oswitch.config import ServerConfig
from oswitch.runtime.switcher import open_switcher
from oswitch.sidecar import connection as connection_module
from oswitch.sidecar.serve import serve_sidecar
from oswitch.testing import FakeProvider, reply
from support import chat, config, target

CHAT = json.dumps(chat()).encode()


@asynccontextmanager
async def sidecar(
    server: ServerConfig | None = None, fake: FakeProvider | None = None
) -> AsyncIterator[tuple[int, trio.Event, FakeProvider]]:
    """A sidecar on a fake provider; yields its port, its shutdown trigger and the fake."""
    fake = fake or FakeProvider().on("key-a", reply("hello"))
    shutdown = trio.Event()
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(serve_sidecar, switcher, port=0, server=server, shutdown_trigger=shutdown)
            )
            yield port, shutdown, fake
            shutdown.set()


async def connect(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port)


def post(body: bytes = CHAT, *extra: bytes, path: bytes = b"/v1/chat/completions") -> bytes:
    lines = [
        b"POST " + path + b" HTTP/1.1",
        b"Host: 127.0.0.1",
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
        *extra,
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class Responses:
    """Reads whole responses (Content-Length framed) off a client's stream in order."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        self.buffer += data
        return bool(data)

    async def next(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            assert await self._fill(), f"closed before a response head: {self.buffer!r}"
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            assert await self._fill(), "closed inside a response body"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    async def closed(self) -> bool:
        """Whether the server closes the connection with nothing more sent."""
        return not await self._fill() and not self.buffer


async def test_a_kept_connection_serves_requests_one_after_another_and_pipelined() -> None:
    """Three requests on one connection (one alone, two pipelined in one write) are all
    answered in order, and the connection stays open."""
    with trio.fail_after(10):
        async with sidecar() as (port, _, fake):
            stream = await connect(port)
            responses = Responses(stream)
            await stream.send_all(post())
            first = await responses.next()
            await stream.send_all(post() + b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            second, third = await responses.next(), await responses.next()
            await stream.aclose()
    assert [r[0] for r in (first, second, third)] == [200, 200, 200]
    assert json.loads(first[2])["choices"][0]["message"]["content"] == "hello"
    assert json.loads(third[2]) == {"status": "ok"}
    assert "connection" not in first[1]
    assert first[1]["date"].endswith("GMT")
    assert len(fake.calls) == 2


async def test_a_chunked_request_body_is_served() -> None:
    """A body sent with Transfer-Encoding: chunked, in uneven chunks, is read whole."""
    chunks = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in (CHAT[:7], CHAT[7:40], CHAT[40:]))
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    with trio.fail_after(10):
        async with sidecar() as (port, _, fake):
            stream = await connect(port)
            await stream.send_all(head + chunks[:30])
            await trio.sleep(0.05)
            await stream.send_all(chunks[30:] + b"0\r\n\r\n")
            status, _, body = await Responses(stream).next()
            await stream.aclose()
    assert status == 200
    assert json.loads(body)["choices"][0]["message"]["content"] == "hello"
    assert fake.calls[0].body["messages"] == chat()["messages"]


async def test_a_broken_chunked_body_is_a_400_naming_the_fault() -> None:
    """A chunk size that is not hex ends the request with 400 and a closed connection."""
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    with trio.fail_after(10):
        async with sidecar() as (port, _, fake):
            stream = await connect(port)
            await stream.send_all(head + b"zz\r\n{}\r\n0\r\n\r\n")
            responses = Responses(stream)
            status, headers, body = await responses.next()
            assert await responses.closed()
    assert status == 400
    assert headers["connection"] == "close"
    assert json.loads(body)["error"] == {
        "message": "chunked body: malformed chunk size line",
        "type": "invalid_request_error",
        "param": None,
        "code": "bad_http_request",
    }
    assert fake.calls == []


async def test_expect_100_continue_is_answered_before_the_body() -> None:
    """A client that waits for 100 Continue gets it, then sends its body, then the answer."""
    with trio.fail_after(10):
        async with sidecar() as (port, _, _fake):
            stream = await connect(port)
            whole = post(CHAT, b"Expect: 100-continue")
            head, _, body = whole.partition(b"\r\n\r\n")
            await stream.send_all(head + b"\r\n\r\n")
            interim = await stream.receive_some(1024)
            await stream.send_all(body)
            status, _, _ = await Responses(stream).next()
            await stream.aclose()
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert status == 200


async def test_http10_is_answered_and_closed() -> None:
    """An HTTP/1.0 request without keep-alive is answered, then the connection closes."""
    with trio.fail_after(10):
        async with sidecar() as (port, _, _fake):
            stream = await connect(port)
            await stream.send_all(b"GET /healthz HTTP/1.0\r\n\r\n")
            responses = Responses(stream)
            status, headers, body = await responses.next()
            assert await responses.closed()
    assert status == 200
    assert headers["connection"] == "close"
    assert json.loads(body) == {"status": "ok"}


async def test_broken_heads_are_refused_and_the_server_serves_on() -> None:
    """Broken heads get their status with an OpenAI-shaped error and a closed
    connection; another client is served normally meanwhile."""
    cases = [
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400, "folded"),
        (b"GET / HTTP/1.1\r\n\r\n", 400, "missing Host header"),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "only HTTP/1.0 and HTTP/1.1"),
        (post(b"{}", b"Transfer-Encoding: gzip"), 501, "Transfer-Encoding: chunked"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 70000 + b"\r\n\r\n", 431, "over 65536"),
        (b"GET / HTTP/1.1\nHost: a\n\n", 400, "bare LF"),
        # A name no token holds, on a line with a control byte: shown escaped.
        (b"GET / HTTP/1.1\r\nHost: a\r\nX\xff: \x01\r\n\r\n", 400, "control character"),
    ]
    with trio.fail_after(15):
        async with sidecar() as (port, _, _fake):
            for raw, status, words in cases:
                stream = await connect(port)
                await stream.send_all(raw)
                responses = Responses(stream)
                got, headers, body = await responses.next()
                error = json.loads(body)["error"]
                assert (got, headers["connection"]) == (status, "close"), raw[:40]
                assert words in error["message"]
                assert error["code"] in ("bad_http_request", "server_error")
                assert headers["x-oswitch-request-id"].startswith("req_")
                await stream.aclose()
            async with httpx.AsyncClient() as client:
                served = await client.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions", json=chat()
                )
    assert served.status_code == 200


async def test_a_fault_in_one_connection_ends_it_and_the_server_serves_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected error while serving one connection (a bug of ours) closes that
    connection and is logged by type as connection_failed; the server and its other
    connections go on."""
    real_parse = connection_module.parse_request_head

    def parse(head: bytes) -> Any:
        if b"x-explode" in head:
            raise RuntimeError("a bug, quoting " + head.decode("latin-1"))
        return real_parse(head)

    monkeypatch.setattr(connection_module, "parse_request_head", parse)
    with trio.fail_after(15):
        async with sidecar() as (port, _, _fake):
            kept = await connect(port)
            await kept.send_all(post())
            assert (await Responses(kept).next())[0] == 200
            doomed = await connect(port)
            await doomed.send_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nx-explode: 1\r\n\r\n")
            assert await read_to_end(doomed) == b""
            await kept.send_all(post())
            assert (await Responses(kept).next())[0] == 200
            await kept.aclose()
    failed = [r for r in caplog.records if r.getMessage() == "connection_failed"]
    assert [getattr(r, "note", None) for r in failed] == ["ExceptionGroup(RuntimeError)"]
    assert all("quoting" not in r.getMessage() + str(r.__dict__) for r in failed)


async def read_to_end(stream: trio.SocketStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def test_an_unread_body_in_hand_keeps_the_connection() -> None:
    """A 401 sent without reading a body that had fully arrived keeps the connection:
    the next request on it is served."""
    from oswitch.core.secret import Secret

    server = ServerConfig(api_keys=(Secret("gateway-key-123"),))
    with trio.fail_after(10):
        async with sidecar(server) as (port, _, _fake):
            stream = await connect(port)
            responses = Responses(stream)
            await stream.send_all(post())
            refused = await responses.next()
            await stream.send_all(post(CHAT, b"Authorization: Bearer gateway-key-123"))
            served = await responses.next()
            await stream.aclose()
    assert (refused[0], served[0]) == (401, 200)
    assert "connection" not in refused[1]


async def test_a_client_sending_no_head_is_closed_at_the_header_timeout() -> None:
    """A connection that sends nothing (or half a head) is closed after header_timeout_ms."""
    server = ServerConfig(header_timeout_ms=200)
    with trio.fail_after(10):
        async with sidecar(server) as (port, _, _fake):
            silent = await connect(port)
            partial_head = await connect(port)
            await partial_head.send_all(b"GET /healthz HTTP/1.1\r\nHo")
            started = trio.current_time()
            assert await Responses(silent).closed()
            assert await Responses(partial_head).closed()
            waited = trio.current_time() - started
    assert waited >= 0.15


async def test_shutdown_closes_idle_kept_connections_at_once() -> None:
    """At shutdown a kept connection waiting for its next request is closed at once,
    long before the header timeout."""
    server = ServerConfig(header_timeout_ms=60_000)
    with trio.fail_after(10):
        async with sidecar(server) as (port, shutdown, _fake):
            stream = await connect(port)
            responses = Responses(stream)
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            assert (await responses.next())[0] == 200
            shutdown.set()
            assert await responses.closed()


async def test_a_post_without_a_body_is_refused_at_once_and_the_connection_kept() -> None:
    """A chat request with ``Content-Length: 0`` (or none at all) is answered 400 (not
    JSON) at once, long before any body timeout, on the chat and Messages endpoints;
    the connection then serves the next request."""
    server = ServerConfig(body_timeout_ms=60_000)
    empty = b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
    lengthless = b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n\r\n"
    with trio.fail_after(10):
        async with sidecar(server) as (port, _, fake):
            stream = await connect(port)
            responses = Responses(stream)
            await stream.send_all(empty % b"/v1/chat/completions")
            chat_answer = await responses.next()
            await stream.send_all(empty % b"/v1/messages")
            messages_answer = await responses.next()
            await stream.send_all(lengthless + post())
            lengthless_answer, served = await responses.next(), await responses.next()
            await stream.aclose()
    assert [chat_answer[0], messages_answer[0], lengthless_answer[0], served[0]] == [
        400,
        400,
        400,
        200,
    ]
    assert json.loads(chat_answer[2])["error"]["code"] == "invalid_json"
    assert json.loads(messages_answer[2])["type"] == "error"
    assert len(fake.calls) == 1
