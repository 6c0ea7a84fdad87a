"""The chat endpoint's corked relay (#19) with usage (#15) through a hedge and a stall
resume (#13), over real loopback: the caller sees one usage chunk exactly when it
asked, the usage of the segment that finished, and ``[DONE]`` last. Real clock, short
explicit deadlines, each test under ``trio.fail_after``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio
from test_interplay_tokens_hedging import usage_stream
from test_otel import traced_sidecar

from oswitch.testing import FakeProvider, hang, stream
from support import config, target

GUARD_S = 20.0
ANSWER = "one two three four five six seven eight"


async def post_stream(base: str, **extra: Any) -> list[Any]:
    """POST a streamed chat request; every ``data:`` payload (``[DONE]`` as a string)."""
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "count"}],
        "stream": True,
        **extra,
    }
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{base}/v1/chat/completions", json=body)
    assert answer.status_code == 200
    out: list[Any] = []
    for line in answer.text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def text_of(events: list[Any]) -> str:
    return "".join(
        (e["choices"][0].get("delta") or {}).get("content") or ""
        for e in events
        if isinstance(e, dict) and e.get("choices")
    )


def usage_chunks(events: list[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, dict) and e.get("usage")]


async def test_a_hedged_stream_gives_an_asking_caller_the_winners_usage_once() -> None:
    """A caller that asked for usage, hedged from a silent key: one usage chunk, the
    winner's, right before [DONE]."""
    fake = FakeProvider().on("key-a", hang()).on("key-b", usage_stream(text=ANSWER))
    cfg = config(target("a", operator_priority=1), target("b"), hedge_after_ms=200)
    with trio.fail_after(GUARD_S):
        async with traced_sidecar(fake, cfg) as (base, _):
            events = await post_stream(base, stream_options={"include_usage": True})
    assert text_of(events) == ANSWER
    (usage,) = usage_chunks(events)
    assert usage["usage"]["total_tokens"] == 10 and usage["choices"] == []
    assert events[-1] == "[DONE]" and events[-2] is usage


async def test_a_hedged_stream_gives_a_caller_that_did_not_ask_no_usage() -> None:
    """The same hedge, a caller that did not ask: oswitch asked the winner for usage,
    and none of it reaches the caller."""
    seen: list[Any] = []
    fake = FakeProvider().on("key-a", hang()).on("key-b", usage_stream(seen, text=ANSWER))
    cfg = config(target("a", operator_priority=1), target("b"), hedge_after_ms=200)
    with trio.fail_after(GUARD_S):
        async with traced_sidecar(fake, cfg) as (base, _):
            events = await post_stream(base)
    assert seen[0]["stream_options"] == {"include_usage": True}
    assert text_of(events) == ANSWER
    assert usage_chunks(events) == [] and events[-1] == "[DONE]"
    assert not any("usage" in e for e in events if isinstance(e, dict))


async def test_a_resumed_stream_gives_an_asking_caller_one_usage_chunk() -> None:
    """A stream that stalls and is resumed on a sibling: the caller that asked for usage
    gets the whole text, then one usage chunk and [DONE]."""
    fake = FakeProvider().on("key-a", stream(ANSWER, stall_after=3))
    fake.on("key-b", usage_stream(text="four five six seven eight"))
    cfg = config(target("a", operator_priority=1), target("b"), stream_idle_timeout_ms=300)
    with trio.fail_after(GUARD_S):
        async with traced_sidecar(fake, cfg) as (base, _):
            events = await post_stream(base, stream_options={"include_usage": True})
    assert text_of(events) == ANSWER
    (usage,) = usage_chunks(events)
    assert usage["usage"]["total_tokens"] == 10
    assert events[-1] == "[DONE]"
