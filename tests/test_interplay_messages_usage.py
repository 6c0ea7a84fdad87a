"""How the Messages endpoint's translation (#17) meets stream usage (#15) and hedging
(#13), on virtual time: a stream that came in through ``/v1/messages`` and goes to an
OpenAI-wire target, driven through the engine and the endpoint's own encoder."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs
import trio
from test_interplay_tokens_hedging import refuse_stream_options, usage_stream

from oswitch.core.anthropic_inbound import to_chat_request
from oswitch.core.anthropic_outbound import MessagesStreamEncoder
from oswitch.runtime.switcher import Switcher, open_switcher
from oswitch.testing import FakeProvider, hang, stream
from support import config, target

USER = [{"role": "user", "content": "count"}]


def messages_body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "max_tokens": 64, "messages": USER, "stream": True, **extra}


def events_of(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of an Anthropic event stream."""
    out = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


async def through_messages(switcher: Switcher, body: Mapping[str, Any]) -> tuple[list[Any], str]:
    """Stream a Messages ``body`` as the endpoint does; its events and the request id."""
    request = to_chat_request(body)
    encoder = MessagesStreamEncoder(message_id="msg_1", model=str(body["model"]))
    raw = b""
    async with switcher.stream(request) as chunks:
        async for chunk in chunks:
            raw += encoder.feed(chunk)
    raw += encoder.finish()
    return events_of(raw), chunks.request_id


def text_of(events: list[Any]) -> str:
    return "".join(
        data["delta"]["text"]
        for kind, data in events
        if kind == "content_block_delta" and data["delta"]["type"] == "text_delta"
    )


def final_usage(events: list[Any]) -> dict[str, Any]:
    (delta,) = [data for kind, data in events if kind == "message_delta"]
    usage: dict[str, Any] = delta["usage"]
    return usage


async def test_usage_of_an_openai_target_reaches_message_delta(autojump_clock: object) -> None:
    """A Messages stream served by an OpenAI target asks for usage; its usage chunk
    becomes message_delta's usage and never a content block."""
    seen: list[Mapping[str, Any]] = []
    fake = FakeProvider().on("key-a", usage_stream(seen))
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        events, _ = await through_messages(switcher, messages_body())
    assert seen[0]["stream_options"] == {"include_usage": True}
    assert text_of(events) == "hi there"
    assert final_usage(events)["output_tokens"] == 3
    assert final_usage(events)["input_tokens"] == 7
    starts = [data for kind, data in events if kind == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["text"]


async def test_usage_reaches_message_delta_through_a_hedge(autojump_clock: object) -> None:
    """A Messages stream whose first target is silent is hedged to a sibling; the
    sibling's usage (only) reaches message_delta, and its text is whole."""
    fake = FakeProvider().on("key-a", hang()).on("key-b", usage_stream())
    cfg = config(target("a", operator_priority=1), target("b"), hedge_after_ms=1000)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        events, request_id = await through_messages(switcher, messages_body())
        assert trio.current_time() == 1.0
        trace = switcher.inspect_request(request_id)
    assert text_of(events) == "hi there"
    assert final_usage(events)["output_tokens"] == 3
    assert sorted((a.target_id, a.decision) for a in trace.attempts) == [
        ("a", "hedge_lost"),
        ("b", "return"),
    ]
    assert [kind for kind, _ in events].count("message_start") == 1


async def test_a_stalled_messages_stream_is_resumed_on_a_sibling_whole(
    autojump_clock: object,
) -> None:
    """A Messages stream whose OpenAI target stalls is resumed on the sibling: the
    caller's text is whole, in one text block, and message_delta closes it."""
    answer = "one two three four five six"
    fake = FakeProvider().on("key-a", stream(answer, stall_after=3)).on("key-b", stream(answer))
    cfg = config(target("a", operator_priority=1), target("b"), stream_idle_timeout_ms=1000)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        events, request_id = await through_messages(switcher, messages_body())
        trace = switcher.inspect_request(request_id)
    assert text_of(events) == answer
    assert [(a.target_id, a.decision) for a in trace.attempts] == [("a", "resume"), ("b", "return")]
    kinds = [kind for kind, _ in events]
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == 1


async def test_tool_use_streamed_through_a_hedge(autojump_clock: object) -> None:
    """A tool call streamed by the hedge that won reaches the Messages caller as one
    whole tool_use block with its input."""
    arguments = '{"city": "Paris", "unit": "celsius"}'
    fake = FakeProvider().on("key-a", hang())
    fake.on("key-b", stream(arguments, tool_call={"name": "weather"}, words_per_chunk=1))
    cfg = config(target("a", operator_priority=1), target("b"), hedge_after_ms=1000)
    tools = [{"name": "weather", "input_schema": {"type": "object"}}]
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        events, _ = await through_messages(switcher, messages_body(tools=tools))
    (start,) = [d for k, d in events if k == "content_block_start"]
    assert start["content_block"]["type"] == "tool_use"
    assert start["content_block"]["name"] == "weather"
    partial = "".join(
        d["delta"]["partial_json"]
        for k, d in events
        if k == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
    )
    assert json.loads(partial) == {"city": "Paris", "unit": "celsius"}
    (delta,) = [d for k, d in events if k == "message_delta"]
    assert delta["delta"]["stop_reason"] == "tool_use"


async def test_a_target_with_stream_usage_off_is_not_sent_stream_options_from_messages(
    autojump_clock: object,
) -> None:
    """``stream_usage = false`` keeps stream_options off a target's requests, also for a
    stream that came in through /v1/messages (whose caller sent no stream_options)."""
    seen: list[Mapping[str, Any]] = []
    fake = FakeProvider().on("key-a", usage_stream(seen))
    cfg = config(target("a", stream_usage=False))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        events, _ = await through_messages(switcher, messages_body())
    assert text_of(events) == "hi there"
    assert "stream_options" not in seen[0]


async def test_a_messages_stream_survives_a_target_refusing_stream_options(
    autojump_clock: object,
) -> None:
    """An OpenAI-compatible server that refuses stream_options still serves a Messages
    stream: the 400 is answered by sending the request again without them, as for a
    chat caller that did not send them."""
    seen: list[Mapping[str, Any]] = []
    fake = FakeProvider().on("key-a", refuse_stream_options(seen), usage_stream(seen))
    cfg = config(attrs.evolve(target("a", stream_usage=True), provider_id="acme"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        events, _ = await through_messages(switcher, messages_body())
        (view,) = switcher.list_targets()
    assert text_of(events) == "hi there"
    assert ["stream_options" in body for body in seen] == [True, False]
    assert view.failures_by_class == {}


async def test_a_chat_stream_survives_a_target_refusing_stream_options(
    autojump_clock: object,
) -> None:
    """The same server and a chat caller that sent no stream_options: the refusal is
    answered by a resend without them (the contrast to the Messages case above)."""
    seen: list[Mapping[str, Any]] = []
    fake = FakeProvider().on("key-a", refuse_stream_options(seen), usage_stream(seen))
    cfg = config(attrs.evolve(target("a", stream_usage=True), provider_id="acme"))
    request = {"model": "gpt-4o", "messages": USER, "stream": True, "max_tokens": 64}
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        async with switcher.stream(request) as chunks:
            got = [chunk async for chunk in chunks]
    assert got[0]["choices"][0]["delta"]["content"] == "hi"
    assert ["stream_options" in body for body in seen] == [True, False]
