"""The Messages endpoint's count_tokens forwarding (#17) meets the target's own pool,
sized to its concurrency limit: a count in flight must not hold the connection an
admitted attempt needs. Real loopback (the fake upstream served by hypercorn, oswitch's
own pool), the real clock, under ``trio.fail_after``; nothing timed is asserted."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from oswitch.runtime.switcher import open_switcher
from oswitch.sidecar.serve import serve_sidecar
from oswitch.testing import Behaviour, FakeProvider, message, serve_fake_provider
from support import config, target

BODY = {"model": "claude-test", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


def count_held_until_the_message_arrives(release: trio.Event) -> Behaviour:
    """count_tokens answers only once a /messages request has reached the provider;
    /messages answers at once (and lets the count go)."""

    async def respond(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        if request.url.path.endswith("/count_tokens"):
            await release.wait()
            return httpx.Response(200, json={"input_tokens": 42})
        release.set()
        return httpx.Response(200, json=message("ok", model="claude-test"))  # noqa: ASYNC910

    return Behaviour(name="count_held", respond=respond)


async def test_a_count_in_flight_does_not_block_an_admitted_attempt() -> None:
    """With concurrency_limit = 1, a count_tokens call waiting on the provider and a
    Messages request at the same time: the request reaches the provider (and so lets
    the count answer), rather than queueing in the pool behind the count."""
    release = trio.Event()
    fake = FakeProvider().on("key-a", count_held_until_the_message_arrives(release))
    answers: dict[str, httpx.Response] = {}
    try:
        with trio.fail_after(3):
            await exchange_both(fake, answers)
    except trio.TooSlowError:
        pytest.fail("the Messages request queued in the pool behind the count")
    assert answers["message"].status_code == 200
    assert answers["count"].headers["x-oswitch-token-count"] == "anthropic"
    assert answers["count"].json() == {"input_tokens": 42}


async def exchange_both(fake: FakeProvider, answers: dict[str, httpx.Response]) -> None:
    """Serve ``fake`` and a sidecar over it; send a count, then a Messages request."""
    async with trio.open_nursery() as nursery:
        upstream = await nursery.start(partial(serve_fake_provider, fake))
        cfg = config(
            target(
                "a",
                api="anthropic",
                model="claude-test",
                base_url=f"http://127.0.0.1:{upstream}/v1",
                concurrency_limit=1,
            )
        )
        async with open_switcher(cfg) as switcher:
            shutdown = trio.Event()
            port = await nursery.start(
                partial(serve_sidecar, switcher, port=0, shutdown_trigger=shutdown)
            )
            base = f"http://127.0.0.1:{port}"
            try:
                async with httpx.AsyncClient(base_url=base, timeout=10) as http:

                    async def post(name: str, path: str) -> None:
                        answers[name] = await http.post(path, json=BODY)

                    async with trio.open_nursery() as clients:
                        clients.start_soon(post, "count", "/v1/messages/count_tokens")
                        await trio.sleep(0.2)  # the count is in flight upstream
                        clients.start_soon(post, "message", "/v1/messages")
            finally:
                shutdown.set()
        nursery.cancel_scope.cancel()
