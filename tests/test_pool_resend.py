"""A request reaches a provider twice only if the engine's budgets send it twice.

Issue 11, item 10c: the pool used to resend a request on its own when a reused
connection was dropped before any answer byte, even when the provider had read the
whole request (and may have billed for it). It now resends only when the provider
cannot have read it; otherwise the engine sees the failure and its budgets decide.
Real loopback sockets, real clock, under ``trio.fail_after``.
"""

from __future__ import annotations

import json

import pytest
import trio
from test_pool import Server, ok, read_request, serve

from oswitch import AllTargetsFailed, ErrorClass
from oswitch.runtime.switcher import open_switcher
from support import chat, config, target

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-resend",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
).encode()


async def answer_the_first_then_drop(stream: trio.abc.Stream, server: Server) -> None:
    """Answer the first request of the test; read the second whole, then hang up."""
    buffer = bytearray()
    while await read_request(stream, server, buffer):
        if len(server.requests) > 1:
            return
        await stream.send_all(ok(COMPLETION))


async def test_a_request_read_then_dropped_on_a_reused_connection_fails_without_a_resend() -> None:
    """With retry_budget 0 and failover_budget 0, a request the provider read whole on a
    kept-alive connection and then dropped unanswered fails as a TransportFailure, and
    the provider saw it exactly once."""
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port, server = await nursery.start(serve, answer_the_first_then_drop)
            cfg = config(
                target("loop", model="m", base_url=f"http://127.0.0.1:{port}/v1"),
                retry_budget=0,
                failover_budget=0,
            )
            async with open_switcher(cfg) as switcher:
                reply = await switcher.complete(chat(model="m"))
                assert reply["choices"][0]["message"]["content"] == "ok"
                with pytest.raises(AllTargetsFailed) as caught:
                    await switcher.complete(chat(model="m"))
                assert caught.value.error_class is ErrorClass.TRANSPORT_FAILURE
            assert server.accepted == 1  # the second request went out on the kept connection
            assert len(server.requests) == 2  # and reached the provider once
            nursery.cancel_scope.cancel()
