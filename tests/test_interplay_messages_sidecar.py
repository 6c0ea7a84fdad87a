"""The Messages endpoint (#17) over real loopback with the anthropic SDK, through a
hedge and a stall (#13) and with usage oswitch asks for (#15); the real clock, short
explicit deadlines (hedge_after_ms, stream_idle_timeout_ms), each test under
``trio.fail_after``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import trio
from test_interplay_tokens_hedging import usage_stream
from test_sidecar_messages import claude, gateway, gpt, run, streamed_text

from oswitch.testing import FakeProvider, hang, stream
from support import config

GUARD_S = 20.0
ANSWER = "one two three four five six seven eight"
USER = [{"role": "user", "content": "count"}]


def streamed_with_id(client: Any, **body: Any) -> tuple[str, Any, str]:
    """The SDK's streamed text, final message and the sidecar's request id."""
    with client.messages.stream(**body) as events:
        text = "".join(events.text_stream)
        return text, events.get_final_message(), events.response.headers["x-oswitch-request-id"]


def request(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-test", "max_tokens": 64, "messages": USER, **extra}


async def test_a_messages_stream_through_a_hedge_from_an_anthropic_primary() -> None:
    """A silent Anthropic primary is hedged to an OpenAI-wire sibling: the SDK gets the
    sibling's whole text and its usage, and the trace says hedge_lost / return."""
    seen: list[Mapping[str, Any]] = []
    fake = FakeProvider().on("key-a", hang()).on("key-b", usage_stream(seen, text=ANSWER))
    cfg = config(claude("a", operator_priority=1), gpt("b"), hedge_after_ms=200)
    with trio.fail_after(GUARD_S):
        async with gateway(fake, cfg) as (client, switcher, _):
            text, final, request_id = await run(lambda: streamed_with_id(client, **request()))
            trace = switcher.inspect_request(request_id)
    assert text == ANSWER and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 3
    assert seen[0]["stream_options"] == {"include_usage": True}
    assert sorted((a.target_id, a.decision) for a in trace.attempts) == [
        ("a", "hedge_lost"),
        ("b", "return"),
    ]


async def test_a_stalled_messages_stream_resumes_over_the_wire() -> None:
    """An OpenAI-wire target stalls after three chunks; the SDK's text is whole, from
    the sibling that continued it, in one text block."""
    fake = FakeProvider().on("key-a", stream(ANSWER, stall_after=3)).on("key-b", stream(ANSWER))
    cfg = config(gpt("a", operator_priority=1), gpt("b"), stream_idle_timeout_ms=300)
    with trio.fail_after(GUARD_S):
        async with gateway(fake, cfg) as (client, _, _):
            text, final = await run(lambda: streamed_text(client, **request()))
    assert text == ANSWER
    assert [block.type for block in final.content] == ["text"]
    assert fake.calls_to("key-a") == 1


async def test_tool_use_through_a_hedge_over_the_wire() -> None:
    """A tool call streamed by the hedge that won reaches the SDK as one tool_use block
    with its whole input."""
    fake = FakeProvider().on("key-a", hang())
    fake.on("key-b", stream('{"city": "Paris"}', tool_call={"name": "weather"}))
    cfg = config(gpt("a", operator_priority=1), gpt("b"), hedge_after_ms=200)
    tools = [{"name": "weather", "input_schema": {"type": "object"}}]
    with trio.fail_after(GUARD_S):
        async with gateway(fake, cfg) as (client, _, _):
            _, final = await run(lambda: streamed_text(client, **request(tools=tools)))
    (block,) = final.content
    assert block.type == "tool_use" and block.name == "weather"
    assert block.input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"
