"""Streams over a real loopback connection (real clock, guarded)."""

from __future__ import annotations

import trio
import trio.testing

from oswitch.runtime.switcher import open_switcher
from oswitch.testing import FakeProvider, serve_fake_provider, stream
from support import chat, config, target


async def test_finished_streams_give_their_connection_back() -> None:
    """After a whole answer the rest of the body is read, so the next stream reuses the
    connection (no new TCP or TLS handshake per stream)."""
    fake = FakeProvider().on("key-a", stream("one two three four five"))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_fake_provider, fake)
            cfg = config(target("a", base_url=f"http://127.0.0.1:{port}/v1"))
            async with open_switcher(cfg) as switcher:
                for _ in range(5):
                    async with switcher.stream(chat()) as chunks:
                        text = "".join(
                            [c["choices"][0]["delta"].get("content") or "" async for c in chunks]
                        )
                    assert text == "one two three four five"
                # The rest of the last body is read after the caller has its end.
                await trio.testing.wait_all_tasks_blocked()
                pool = switcher._router.actors["a"]._exchange.client.statistics()
            nursery.cancel_scope.cancel()
    assert (pool.requests, pool.connections, pool.idle) == (5, 1, 1)
