"""oswitch's HTTP/1.1 pool at its edges: early replies, held requests, idle expiry, odd
heads, and the slot on paths the main tests leave out. Each fault test here failed on the
pool's first version. Real loopback sockets, real clock, every test under
``trio.fail_after``.
"""

from __future__ import annotations

import functools
import ssl

import httpx
import pytest
import trio
import trustme
from test_pool import (
    HEADERS,
    Server,
    answering,
    ok,
    pool,
    read_all,
    read_request,
    serve,
    server_saw_closes,
    url,
    wait_for_close,
)

# ---- faults ---------------------------------------------------------------------------------


def tls_pair() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1, and a client context trusting it."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_an_early_reply_while_the_body_is_still_going_out_is_returned(scheme: str) -> None:
    """A server that refuses a large request from its head alone (413, then close) is
    answered with that status, not a WriteError the classifier takes for a transport fault."""
    server_context, client_context = tls_pair() if scheme == "https" else (None, None)

    async def refuse_from_the_head(stream: trio.abc.Stream, server: Server) -> None:
        buffer = bytearray()
        while b"\r\n\r\n" not in buffer:
            buffer += await stream.receive_some(65536)
        await stream.send_all(
            b"HTTP/1.1 413 Payload Too Large\r\nconnection: close\r\ncontent-length: 2\r\n\r\nno"
        )  # then close with the body unread: the kernel resets the connection

    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            port, _ = await nursery.start(
                functools.partial(serve, refuse_from_the_head, tls=server_context)
            )
            client = pool(
                max_connections=1, ssl_context=client_context or ssl.create_default_context()
            )
            response = await client.post(url(port, scheme), HEADERS, b"x" * 32_000_000)
            assert (response.status_code, await read_all(response)) == (413, b"no")
            assert client.statistics().connections == 0
            nursery.cancel_scope.cancel()


async def test_a_reused_connection_dropped_long_after_the_request_is_not_resent() -> None:
    """A reused connection the server closes unanswered only after holding the request
    for a while (a crash mid-generation, not the keep-alive race) raises; the POST is not
    silently sent a second time behind the engine's budgets."""

    async def hold_then_drop(stream: trio.abc.Stream, server: Server) -> None:
        buffer = bytearray()
        if await read_request(stream, server, buffer):
            await stream.send_all(ok(b"fine"))
            if await read_request(stream, server, buffer):
                await trio.sleep(0.3)  # generating, then the worker dies

    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            port, server = await nursery.start(serve, hold_then_drop)
            client = pool()
            assert await read_all(await client.post(url(port), HEADERS, b"{}")) == b"fine"
            with pytest.raises(httpx.RemoteProtocolError):
                await read_all(await client.post(url(port), HEADERS, b"{}"))
            assert len(server.requests) == 2
            nursery.cancel_scope.cancel()


async def test_a_connection_idle_for_minutes_is_not_reused(
    mock_clock: trio.testing.MockClock,
) -> None:
    """A connection left idle past the keep-alive expiry is closed, not reused: a NAT or
    load balancer may have dropped it silently, and a request sent on it would only meet
    the first-token deadline (a healthy target failed as silent)."""
    mock_clock.rate = 1.0  # real time passes; jumps stand for the idle minutes
    async with trio.open_nursery() as nursery:
        with trio.fail_after(1):
            port, server = await nursery.start(serve, answering(ok(b"a"), ok(b"b")))
            client = pool()
            assert await read_all(await client.post(url(port), HEADERS, b"{}")) == b"a"
        mock_clock.jump(120)
        with trio.fail_after(1):
            assert await read_all(await client.post(url(port), HEADERS, b"{}")) == b"a"
        assert server.accepted == 2
        nursery.cancel_scope.cancel()


async def test_a_bare_lf_head_is_split_at_its_own_end() -> None:
    """A head whose lines end in bare LF is cut at its blank line even when the body
    holds a CRLF CRLF."""
    reply = b"HTTP/1.1 200 OK\ncontent-length: 6\n\nab\r\n\r\n"
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            port, _ = await nursery.start(serve, answering(reply))
            response = await pool().post(url(port), HEADERS, b"{}")
            assert await read_all(response) == b"ab\r\n\r\n"
            nursery.cancel_scope.cancel()


# ---- slot accounting on paths the main tests leave out ----------------------------------


async def test_a_request_cancelled_while_waiting_for_a_slot_takes_none() -> None:
    """Cancelling a request queued for the only slot leaves the slot to the next one."""
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            port, _ = await nursery.start(serve, answering(ok(b"a"), ok(b"b")))
            client = pool(max_connections=1)
            held = await client.post(url(port), HEADERS, b"{}")
            with trio.move_on_after(0.05) as scope:
                await client.post(url(port), HEADERS, b"{}")
            assert scope.cancelled_caught
            assert await read_all(held) == b"a"
            with trio.fail_after(0.5):  # a leaked slot would mean a 5 s PoolTimeout
                assert await read_all(await client.post(url(port), HEADERS, b"{}")) == b"b"
            assert client.statistics().connections == 1
            nursery.cancel_scope.cancel()


async def test_a_cancelled_tls_handshake_closes_the_socket_and_frees_the_slot() -> None:
    """A TLS server that never finishes the handshake, cut off by the caller's scope,
    leaves no socket open and no slot taken."""
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            port, server = await nursery.start(serve, wait_for_close)  # reads the hello only
            client = pool(max_connections=1, pool_timeout_s=0.1)
            for _ in range(2):  # the second would time out on a leaked slot
                with trio.move_on_after(0.1) as scope:
                    await client.post(url(port, "https"), HEADERS, b"{}")
                assert scope.cancelled_caught
            assert client.statistics().connections == 0
            await server_saw_closes(server, 2)
            nursery.cancel_scope.cancel()


async def test_a_pool_closed_while_a_body_is_read_closes_that_connection_at_its_end() -> None:
    """Closing the pool mid-reply lets the reply finish, then closes its connection and
    frees its slot; later requests are refused."""
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            port, server = await nursery.start(serve, answering(ok(b"last")))
            client = pool(max_connections=1)
            response = await client.post(url(port), HEADERS, b"{}")
            await client.aclose()
            assert await read_all(response) == b"last"
            assert client.statistics().connections == 0
            await server_saw_closes(server, 1)
            with pytest.raises(httpx.LocalProtocolError, match="closed"):
                await client.post(url(port), HEADERS, b"{}")
            nursery.cancel_scope.cancel()


async def test_bodyless_replies_give_their_connection_back_at_once() -> None:
    """A 204 and a Content-Length: 0 reply free the only slot before anything is read,
    and their connection carries the next request."""
    empty = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            port, server = await nursery.start(
                serve, answering(b"HTTP/1.1 204 No Content\r\n\r\n", empty, ok(b"x"))
            )
            client = pool(max_connections=1, pool_timeout_s=0.1)
            first = await client.post(url(port), HEADERS, b"{}")
            second = await client.post(url(port), HEADERS, b"{}")  # no aclose of first
            assert (first.status_code, second.status_code) == (204, 200)
            assert await read_all(await client.post(url(port), HEADERS, b"{}")) == b"x"
            assert server.accepted == 1
            nursery.cancel_scope.cancel()


async def test_a_key_that_is_not_latin_1_is_refused_without_echo() -> None:
    """A header value that cannot be encoded is refused naming the header, never its value."""
    client = pool()
    with pytest.raises(httpx.LocalProtocolError) as caught:
        await client.post(
            httpx.URL("http://127.0.0.1:9/x"), {"authorization": "Bearer sk-\u2603secret"}, b"{}"
        )
    assert "secret" not in str(caught.value) and "authorization" in str(caught.value)
    assert client.statistics().connections == 0
