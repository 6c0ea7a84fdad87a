"""Tool calls streamed on the chat endpoint's path (``Switcher.stream``) arrive whole
and in order through a failover and through a resume (virtual clock)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
import trio

from oswitch.runtime.switcher import open_switcher
from oswitch.testing import (
    Behaviour,
    FakeProvider,
    continuation_of,
    rate_limited,
    stream,
)
from support import chat, config, target

ARGUMENTS = '{"city": "Paris", "unit": "celsius", "days": 3}'
TEXT = "Let me look that up for you now."


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    payload = {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _calls(arguments: str, *, names: tuple[str, ...]) -> bytes:
    """Each of ``names`` as a tool call whose arguments come in 5-character pieces."""
    body = b""
    for index, name in enumerate(names):
        body += _chunk(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": f"call_{index}",
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }
                ]
            }
        )
        for start in range(0, len(arguments), 5):
            piece = arguments[start : start + 5]
            body += _chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    return body


def continues_with_tool_calls() -> Behaviour:
    """Asked to continue a cut answer: the rest of TEXT, then two tool calls."""

    async def respond(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        confirmed, _ = continuation_of(body) or ("", False)
        payload = _chunk({"role": "assistant", "content": ""})
        payload += _chunk({"content": TEXT[len(confirmed) :]})
        payload += _calls(ARGUMENTS, names=("weather", "clock"))
        payload += _chunk({}, "tool_calls") + b"data: [DONE]\n\n"
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=payload)

    return Behaviour(name="continues_with_tool_calls", respond=respond)


def _received(chunks: list[dict[str, Any]]) -> tuple[str, list[tuple[int, str, str]], str | None]:
    """The text, each tool call as (index, name, arguments) in order, the finish reason."""
    text = ""
    calls: dict[int, list[str]] = {}
    order: list[int] = []
    finish = None
    for chunk in chunks:
        choice = chunk["choices"][0]
        delta = choice.get("delta") or {}
        text += delta.get("content") or ""
        for call in delta.get("tool_calls") or ():
            index = call["index"]
            function = call.get("function") or {}
            if index not in calls:
                order.append(index)
                calls[index] = [function.get("name") or "", ""]
            calls[index][1] += function.get("arguments") or ""
        finish = choice.get("finish_reason") or finish
    return text, [(i, calls[i][0], calls[i][1]) for i in order], finish


async def test_tool_call_streams_whole_after_a_failover(autojump_clock: object) -> None:
    """A rate-limited first key costs nothing of the tool call the next key streams."""
    fake = FakeProvider()
    fake.on("key-a", rate_limited(30.0))
    fake.on("key-b", stream(ARGUMENTS, tool_call={"name": "weather"}, chunk_latency=0.1))
    cfg = config(target("a", operator_priority=1), target("b"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        started = trio.current_time()
        async with switcher.stream(chat(tools=[{"type": "function"}])) as chunks:
            received = [c async for c in chunks]
        elapsed = trio.current_time() - started
    text, calls, finish = _received(received)
    assert (text, calls, finish) == ("", [(0, "weather", ARGUMENTS)], "tool_calls")
    assert fake.calls_to("key-a") == 1
    assert elapsed == pytest.approx(0.6, abs=1e-9)  # six pieces, 0.1 s apart


async def test_tool_calls_stream_whole_and_in_order_after_a_resume(autojump_clock: object) -> None:
    """A text stream cut before any tool call is resumed; the continuation's text and
    its two tool calls reach the caller whole and in order, after the text."""
    fake = FakeProvider()
    fake.on("key-a", stream(TEXT, cut_after=3))
    fake.on("key-b", continues_with_tool_calls())
    cfg = config(target("a", operator_priority=1), target("b"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        async with switcher.stream(chat(tools=[{"type": "function"}])) as chunks:
            received = [c async for c in chunks]
        trace = switcher.inspect_request(chunks.request_id)
    text, calls, finish = _received(received)
    assert text == TEXT
    assert calls == [(0, "weather", ARGUMENTS), (1, "clock", ARGUMENTS)]
    assert finish == "tool_calls"
    first_call = next(
        i for i, c in enumerate(received) if c["choices"][0]["delta"].get("tool_calls")
    )
    assert all(not c["choices"][0]["delta"].get("content") for c in received[first_call:])
    assert [a.decision for a in trace.attempts] == ["resume", "return"]
