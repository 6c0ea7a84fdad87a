"""Tokens through the sidecar: a stream's usage chunk only for a caller that asked,
and a request too large for every key refused with a 400, unsent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import trio
from token_fakes import streaming

from oswitch.config import RateLimitConfig, SwitcherConfig
from oswitch.runtime.switcher import open_switcher
from oswitch.sidecar.serve import serve_sidecar
from oswitch.testing import FakeProvider, reply
from support import chat, config, target

GUARD_S = 10


@asynccontextmanager
async def sidecar(fake: FakeProvider, cfg: SwitcherConfig) -> AsyncIterator[str]:
    """The base URL of a sidecar on 127.0.0.1:<free port> over a switcher on ``fake``."""
    shutdown = trio.Event()
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(serve_sidecar, switcher, port=0, shutdown_trigger=shutdown)
            )
            yield f"http://127.0.0.1:{port}"
            shutdown.set()


def events(body: str) -> list[str]:
    return [line[6:] for line in body.splitlines() if line.startswith("data: ")]


async def test_usage_chunk_reaches_only_a_caller_that_asked() -> None:
    """Over the sidecar, a caller that did not ask for usage gets no usage chunk (oswitch
    asked for it upstream), and one that asked gets exactly one."""
    seen: list[Mapping[str, Any]] = []
    fake = FakeProvider().on("key-a", streaming(seen))
    with trio.fail_after(GUARD_S):
        async with sidecar(fake, config(target("a"))) as base, httpx.AsyncClient() as client:
            plain = await client.post(f"{base}/v1/chat/completions", json=chat(stream=True))
            asked = await client.post(
                f"{base}/v1/chat/completions",
                json=chat(stream=True, stream_options={"include_usage": True}),
            )
    plain_chunks = [json.loads(e) for e in events(plain.text)[:-1]]
    asked_chunks = [json.loads(e) for e in events(asked.text)[:-1]]
    assert all("usage" not in chunk for chunk in plain_chunks)
    assert [chunk["usage"]["total_tokens"] for chunk in asked_chunks if chunk.get("usage")] == [10]
    assert [body["stream_options"] for body in seen] == [{"include_usage": True}] * 2


async def test_too_large_for_every_key_is_a_400() -> None:
    """A request over every key's whole token budget gets a 400 RequestTooLarge, and
    nothing reaches the upstream."""
    fake = FakeProvider().on("key-a", reply())
    cfg = config(target("a", rate_limit=RateLimitConfig(tokens_per_minute=500)))
    with trio.fail_after(GUARD_S):
        async with sidecar(fake, cfg) as base, httpx.AsyncClient() as client:
            response = await client.post(f"{base}/v1/chat/completions", json=chat(max_tokens=1000))
    assert response.status_code == 400
    assert "not sent" in response.json()["error"]["message"]
    assert fake.calls == []
