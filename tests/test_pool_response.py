"""The pool's responses: httpx's header object and body reading, on a shorter path.

Loopback tests run on the real clock, each guarded by ``trio.fail_after``.
"""

from __future__ import annotations

import gzip

import httpx
import pytest
import trio

from oswitch.providers.base import MalformedReply
from oswitch.runtime.replies import read_limited
from oswitch.transport.pool import body_ended
from oswitch.transport.response import PoolResponse
from oswitch.transport.response import headers_of as _headers
from tests.test_pool import (
    HEADERS,
    Server,
    answering,
    chunked,
    ok,
    pool,
    read_request,
    serve,
    url,
    wait_for_close,
)


def test_the_header_object_is_the_one_httpx_builds() -> None:
    """Headers built from the wire's fields read exactly as httpx.Headers(fields) does."""
    fields = [
        (b"Content-Type", b"application/json"),
        (b"x-ratelimit-remaining-requests", b"59"),
        (b"Set-Cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"X-Latin", "caf\xe9".encode("latin-1")),
    ]
    ours, theirs = _headers(fields), httpx.Headers(fields)
    assert ours == theirs
    assert ours.raw == theirs.raw
    assert list(ours.multi_items()) == list(theirs.multi_items())
    assert ours.get_list("set-cookie") == theirs.get_list("set-cookie") == ["a=1", "b=2"]
    assert ours["content-type"] == "application/json"
    assert ours.encoding == theirs.encoding
    assert httpx.Headers(ours).raw == theirs.raw


async def test_a_body_read_with_aiter_bytes_comes_whole_once_and_frees_its_connection() -> None:
    """aiter_bytes hands over the body, closes the response and gives the connection back;
    a second read raises StreamConsumed, as httpx's does."""
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port, server = await nursery.start(
                serve, answering(chunked(b"one ", b"two"), ok(b"three"))
            )
            client = pool()
            response = await client.post(url(port), HEADERS, b"{}")
            assert b"".join([piece async for piece in response.aiter_bytes()]) == b"one two"
            assert response.is_closed and response.num_bytes_downloaded == 7
            assert client.statistics().idle == 1
            with pytest.raises(httpx.StreamConsumed):
                async for _ in response.aiter_bytes():
                    pass
            await response.aclose()  # closing again is harmless
            second = await client.post(url(port), HEADERS, b"{}")
            assert await second.aread() == b"three"
            assert server.accepted == 1
            await client.aclose()
            nursery.cancel_scope.cancel()


def test_a_pool_response_is_built_as_httpx_builds_it() -> None:
    """``PoolResponse.of_pool`` sets exactly the attributes httpx's own constructor sets,
    to the same values: an httpx that sets one more fails here, not in a caller."""

    class Body(httpx.AsyncByteStream):
        pass

    fields = [(b"Content-Type", b"application/json"), (b"x-Request-Id", b"r1")]
    body = Body()
    fast = PoolResponse.of_pool(200, fields, body, http_version=b"HTTP/1.1", reason=b"OK")
    slow = PoolResponse(
        200,
        headers=_headers(fields),
        stream=body,
        extensions={"http_version": b"HTTP/1.1", "reason_phrase": b"OK"},
    )
    fast_vars, slow_vars = vars(fast), vars(slow)
    assert set(fast_vars) == set(slow_vars)
    for name, value in slow_vars.items():
        if name == "headers":
            assert fast.headers.raw == slow.headers.raw
            assert fast.headers.multi_items() == slow.headers.multi_items()
            assert fast.headers.encoding == slow.headers.encoding
        else:
            assert fast_vars[name] == value, name
    assert fast.stream is body


async def test_a_coded_body_still_goes_through_httpx_decoding() -> None:
    """A server that compresses anyway (oswitch asks for identity) is decoded by httpx."""
    packed = gzip.compress(b'{"ok":true}')
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            reply = ok(packed, b"content-encoding: gzip\r\n")
            port, _ = await nursery.start(serve, answering(reply))
            client = pool()
            response = await client.post(url(port), HEADERS, b"{}")
            assert b"".join([piece async for piece in response.aiter_bytes()]) == b'{"ok":true}'
            assert response.is_closed
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_only_a_content_coding_other_than_identity_leaves_the_raw_body() -> None:
    """A body sent as ``Content-Encoding: identity`` is handed over raw; one coded under a
    name in any case, or with its codings listed over two fields, goes to httpx's
    decoders."""
    cases = [
        (b"Content-Encoding: identity\r\n", True),
        (b"CONTENT-ENCODING: gzip\r\n", False),
        (b"content-encoding: identity\r\ncontent-encoding: identity\r\n", False),
    ]
    for field, raw in cases:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                port, _ = await nursery.start(serve, answering(ok(b"{}", field)))
                client = pool()
                response = await client.post(url(port), HEADERS, b"{}")
                assert isinstance(response, PoolResponse)
                assert (response.claim_raw_body() is not None) is raw, field
                await response.aclose()
                await client.aclose()
                nursery.cancel_scope.cancel()


async def test_a_body_left_unread_closes_its_connection() -> None:
    """A response closed before its body was read does not give its connection back."""
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port, _ = await nursery.start(serve, answering(ok(b"x" * 100)))
            client = pool()
            response = await client.post(url(port), HEADERS, b"{}")
            await response.aclose()
            assert response.is_closed
            assert client.statistics() == type(client.statistics())(
                connections=0, idle=0, requests=1
            )
            with pytest.raises(httpx.StreamClosed):
                async for _ in response.aiter_bytes():
                    pass
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_body_ended_says_when_nothing_is_left_to_drain() -> None:
    """A body whose last bytes came with its last data is ended at that read (nothing to
    drain, its connection already back); one still open is not; other responses never."""

    first_read = trio.Event()

    async def in_two_writes(stream: trio.abc.Stream, server: Server) -> None:
        buffer = bytearray()
        if await read_request(stream, server, buffer):
            raw = chunked(b"first", b"last")
            await stream.send_all(raw[: raw.index(b"4\r\nlast")])
            await first_read.wait()  # the client has read the first piece alone
            await stream.send_all(raw[raw.index(b"4\r\nlast") :])
        await wait_for_close(stream, server)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port, _ = await nursery.start(serve, in_two_writes)
            client = pool()
            response = await client.post(url(port), HEADERS, b"{}")
            pieces = aiter(response.stream)
            assert await anext(pieces) == b"first"
            assert not body_ended(response)
            first_read.set()
            assert await anext(pieces) == b"last"  # the terminator came in the same read
            assert body_ended(response)
            assert client.statistics().idle == 1
            await client.aclose()
            nursery.cancel_scope.cancel()
    assert not body_ended(httpx.Response(200, content=b"x"))


async def test_read_limited_reads_a_pool_body_whole_and_closes_it() -> None:
    """The engine's whole-body read takes the pool's raw body straight (no generator): the
    body comes whole, the response is consumed and closed, the connection goes back; a
    body over the limit is refused (MalformedReply)."""
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            replies = answering(chunked(b"one ", b"two"), ok(b"x" * 100))
            port, server = await nursery.start(serve, replies)
            client = pool()
            response = await client.post(url(port), HEADERS, b"{}")
            assert await read_limited(response, 7) == b"one two"
            assert response.is_stream_consumed and response.is_closed
            assert client.statistics().idle == 1
            with pytest.raises(httpx.StreamConsumed):
                await read_limited(response, 7)
            second = await client.post(url(port), HEADERS, b"{}")
            with pytest.raises(MalformedReply, match="reply body over 99 bytes"):
                await read_limited(second, 99)
            await second.aclose()
            assert second.is_closed and server.accepted == 1
            await client.aclose()
            nursery.cancel_scope.cancel()
