"""A provider's reply with wrong-typed fields is the provider's fault: the request fails
over (or resumes) and the caller never receives that reply."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest
import trio

from oswitch import ErrorClass
from oswitch.runtime.switcher import open_switcher
from oswitch.testing import Behaviour, FakeProvider, completion, reply, stream
from support import chat, config, target

ANSWER = "Alpha bravo charlie delta echo."


def replying(payload: Mapping[str, Any]) -> Behaviour:
    async def respond(request: httpx.Request, _: Any) -> httpx.Response:
        return httpx.Response(200, json=dict(payload))

    return Behaviour(name="odd reply", respond=respond)


def with_message(**fields: Any) -> dict[str, Any]:
    body = completion("hi", model="gpt-4o")
    body["choices"][0]["message"].update(fields)
    return body


@pytest.mark.parametrize(
    "payload",
    [
        with_message(content=42),
        with_message(content=None, tool_calls={"name": "f"}),
        dict(completion("hi", model="gpt-4o"), usage="lots"),
        dict(completion("hi", model="gpt-4o"), choices="hi"),
    ],
    ids=["content-number", "tool-calls-object", "usage-string", "choices-string"],
)
async def test_a_wrong_typed_reply_fails_over(autojump_clock: object, payload: Any) -> None:
    """A non-streamed reply with a wrong-typed field is a TransientServerFailure of its
    target; the caller gets the next target's reply."""
    fake = FakeProvider().on("key-a", replying(payload)).on("key-b", reply("from b"))
    cfg = config(target("a", operator_priority=1), target("b"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        result = await switcher.complete(chat())
        trace = switcher.inspect_request(result["oswitch"]["request_id"])
    assert result["choices"][0]["message"]["content"] == "from b"
    assert [(a.target_id, a.error_class, a.note) for a in trace.attempts] == [
        ("a", ErrorClass.TRANSIENT_SERVER_FAILURE, "malformed"),
        ("b", None, ""),
    ]


def streaming(chunks: list[dict[str, Any]]) -> Behaviour:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            await trio.sleep(0.1)
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    async def respond(request: httpx.Request, _: Any) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    return Behaviour(name="odd stream", respond=respond)


def chunk(delta: dict[str, Any], finish_reason: Any = None) -> dict[str, Any]:
    return {
        "id": "c",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


async def test_a_wrong_typed_first_chunk_fails_over_before_content(autojump_clock: object) -> None:
    """A stream whose first chunk has a number for content is failed over before any
    content: the caller sees only the next target's answer."""
    fake = FakeProvider().on("key-a", streaming([chunk({"content": 42})]))
    fake.on("key-b", stream(ANSWER))
    cfg = config(target("a", operator_priority=1), target("b"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        async with switcher.stream(chat()) as chunks:
            received = [c async for c in chunks]
        trace = switcher.inspect_request(chunks.request_id)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in received) == ANSWER
    assert all(isinstance(c["choices"][0]["delta"].get("content", ""), str) for c in received)
    assert [(a.target_id, a.error_class) for a in trace.attempts] == [
        ("a", ErrorClass.TRANSIENT_SERVER_FAILURE),
        ("b", None),
    ]


async def test_a_wrong_typed_finish_reason_after_content_is_resumed(
    autojump_clock: object,
) -> None:
    """A chunk with a dict for finish_reason after content began is an interruption,
    resumed on the next target; the odd chunk never reaches the caller."""
    odd = streaming([chunk({"content": "Alpha "}), chunk({}, finish_reason={"why": "stop"})])
    fake = FakeProvider().on("key-a", odd).on("key-b", stream(ANSWER))
    cfg = config(target("a", operator_priority=1), target("b"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        async with switcher.stream(chat()) as chunks:
            received = [c async for c in chunks]
        trace = switcher.inspect_request(chunks.request_id)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in received) == ANSWER
    reasons = [c["choices"][0]["finish_reason"] for c in received]
    assert reasons.count("stop") == 1 and all(r in (None, "stop") for r in reasons)
    assert trace.attempts[0].error_class is ErrorClass.INTERRUPTED_EXECUTION
    assert trace.attempts[0].note == (
        "TransientServerFailure: malformed stream chunk: "
        "choices[0].finish_reason: not a string (got an object)"
    )
