"""How many socket writes the sidecar makes per reply (real loopback sockets, real
clock, each test under fail_after): what one upstream read decoded goes out in one
write, a reply's head with its first bytes, the last events with the body's end."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import trio

from oswitch.runtime.switcher import open_switcher
from oswitch.sidecar import listener
from oswitch.sidecar.serve import serve_sidecar
from oswitch.testing import FakeProvider, reply, stream
from oswitch.transport import socket_io
from support import chat, config, target

CHAT_PATH = "/v1/chat/completions"
TEXT = "one two three four five six seven eight nine"
END = b"data: [DONE]\n\n\r\n0\r\n\r\n"  # the last event's chunk, then the terminator


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bytes]]:
    """Every write the sidecar makes to a client socket: (connection, bytes)."""
    recorded: list[tuple[int, bytes]] = []
    original = listener.BoundedWriteStream.send_all

    async def send_all(
        self: listener.BoundedWriteStream, data: bytes | bytearray | memoryview
    ) -> None:
        recorded.append((id(self), bytes(data)))
        await original(self, data)

    monkeypatch.setattr(listener.BoundedWriteStream, "send_all", send_all)
    return recorded


@asynccontextmanager
async def sidecar(fake: FakeProvider) -> AsyncIterator[str]:
    """A sidecar on ``fake``; yields its chat completions URL."""
    shutdown = trio.Event()
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(serve_sidecar, switcher, port=0, shutdown_trigger=shutdown)
            )
            yield f"http://127.0.0.1:{port}{CHAT_PATH}"
            shutdown.set()


async def streamed_body(client: httpx.AsyncClient, url: str) -> bytes:
    async with client.stream("POST", url, json=chat(stream=True)) as response:
        assert response.status_code == 200
        return b"".join([piece async for piece in response.aiter_raw()])


async def test_a_json_reply_is_one_write_of_head_and_body(
    writes: list[tuple[int, bytes]],
) -> None:
    """A non-streamed reply's status line, headers and whole body go out in one write."""
    fake = FakeProvider().on("key-a", reply("hello"))
    with trio.fail_after(10):
        async with sidecar(fake) as url, httpx.AsyncClient() as client:
            response = await client.post(url, json=chat())
    assert response.status_code == 200
    assert len(writes) == 1
    data = writes[0][1]
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(response.content) and b'"hello"' in response.content


async def test_a_stream_read_in_one_piece_is_one_write_and_keeps_the_connection(
    writes: list[tuple[int, bytes]],
) -> None:
    """When the upstream's whole stream arrives in one read, the client gets head,
    every event, [DONE] and the chunked terminator in one write; the connection is
    kept alive and serves the next stream the same way."""
    fake = FakeProvider().on("key-a", stream(TEXT, split_bytes=1 << 20))
    with trio.fail_after(10):
        async with sidecar(fake) as url, httpx.AsyncClient() as client:
            first = await streamed_body(client, url)
            second = await streamed_body(client, url)
    assert first.count(b"data: {") == second.count(b"data: {") >= 9
    assert len(writes) == 2
    assert writes[0][0] == writes[1][0]  # one connection, kept alive
    for _, data in writes:
        assert data.startswith(b"HTTP/1.1 200 ")
        assert data.count(b"data: {") >= 9 and data.endswith(END)


async def test_a_stream_read_in_small_pieces_sends_its_end_with_the_terminator(
    writes: list[tuple[int, bytes]],
) -> None:
    """Read a few bytes at a time, a stream is written once per completed event at
    most: the head goes with the first event, and [DONE] with the terminator."""
    fake = FakeProvider().on("key-a", stream(TEXT, split_bytes=7))
    with trio.fail_after(10):
        async with sidecar(fake) as url, httpx.AsyncClient() as client:
            body = await streamed_body(client, url)
    events = body.count(b"data: ")
    assert events >= 11  # role, nine words, finish, [DONE]
    assert 1 < len(writes) <= events
    assert writes[0][1].startswith(b"HTTP/1.1 200 ") and b"data: {" in writes[0][1]
    assert writes[-1][1].endswith(END)
    assert all(b"0\r\n\r\n" not in data for _, data in writes[:-1])


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_sidecar_request_is_checked_once(
    monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    """The chat-request check walks a sidecar request's body once (at the door), not
    again in the engine; a request handed to the engine directly is still checked."""
    from oswitch.core import chat_request

    walks: list[object] = []
    original = chat_request._first_unencodable

    def counting(root: Any) -> Any:
        walks.append(root)
        return original(root)

    monkeypatch.setattr(chat_request, "_first_unencodable", counting)
    fake = FakeProvider().on("key-a", stream(TEXT) if streamed else reply("hello"))
    with trio.fail_after(10):
        async with sidecar(fake) as url, httpx.AsyncClient() as client:
            if streamed:
                await streamed_body(client, url)
            else:
                assert (await client.post(url, json=chat())).status_code == 200
    assert len(walks) == 1
    direct = FakeProvider().on("key-a", reply("hello"))
    async with open_switcher(config(target("a")), transport=direct.transport()) as switcher:
        await switcher.complete(chat())
    assert len(walks) == 2


class _Connection:
    """A corkable connection that records what was asked of it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def cork(self) -> None:
        self.calls.append("cork")

    async def uncork(self) -> None:
        self.calls.append("uncork")
        await trio.lowlevel.checkpoint()


async def test_one_write_never_leaves_its_connection_corked() -> None:
    """Entering a OneWrite block that is cancelled at once does not cork the connection;
    a block that raises still uncorks it (what it held is written)."""
    from oswitch.sidecar.responses import CONNECTION, OneWrite

    connection = _Connection()
    token = CONNECTION.set(connection)
    try:
        with trio.CancelScope() as scope:
            scope.cancel()
            async with OneWrite():
                pass  # pragma: no cover (cancelled on entry)
        assert connection.calls == []
        with pytest.raises(KeyError):
            async with OneWrite():
                raise KeyError("bug")
        assert connection.calls == ["cork", "uncork"]
    finally:
        CONNECTION.reset(token)


async def test_a_messages_stream_read_in_one_piece_is_one_write(
    writes: list[tuple[int, bytes]],
) -> None:
    """The Messages endpoint relays as the chat endpoint does: an upstream stream that
    arrives in one read reaches the client as one write, head to message_stop and the
    chunked terminator."""
    fake = FakeProvider().on("key-a", stream(TEXT, split_bytes=1 << 20))
    body = {
        "model": "gpt-4o",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    with trio.fail_after(10):
        async with sidecar(fake) as url, httpx.AsyncClient() as client:
            messages_url = url.replace(CHAT_PATH, "/v1/messages")
            async with client.stream("POST", messages_url, json=body) as response:
                assert response.status_code == 200
                raw = b"".join([piece async for piece in response.aiter_raw()])
    assert raw.count(b"event: content_block_delta") >= 9
    assert len(writes) == 1
    data = writes[0][1]
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"event: message_stop" in data and data.endswith(b"\r\n0\r\n\r\n")


async def test_a_kept_connection_waits_for_its_next_request_without_a_failed_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a read that took all the client had sent, the connection waits for the
    socket to become readable before it reads again: its next request costs no read that
    fails with EAGAIN (at most the connection's very first read may find nothing yet)."""
    failed: list[int] = []

    def counted_read(fd: int, size: int) -> bytes:
        try:
            return os.read(fd, size)
        except BlockingIOError:
            failed.append(fd)
            raise

    monkeypatch.setattr(socket_io, "os", SimpleNamespace(read=counted_read, write=os.write))
    fake = FakeProvider().on("key-a", reply("hello"))
    with trio.fail_after(10):
        async with sidecar(fake) as url, httpx.AsyncClient() as client:
            for _ in range(4):
                response = await client.post(url, json=chat())
                assert response.status_code == 200
    assert len(failed) <= 1, failed
