"""The Messages endpoint with the official anthropic SDK over real loopback sockets, on
the real clock, each test under fail_after; Anthropic and OpenAI-compatible fakes."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import anthropic
import httpx
import pytest
import trio

from oswitch.config import ServerConfig, SwitcherConfig
from oswitch.core.resume import CONTINUE_INSTRUCTION
from oswitch.core.secret import Secret
from oswitch.runtime.switcher import Switcher, open_switcher
from oswitch.sidecar.serve import serve_sidecar
from oswitch.testing import (
    FakeProvider,
    anthropic_rate_limited,
    anthropic_stream,
    hang,
    message_reply,
    rate_limited,
    reply,
    server_error,
    stream,
    token_count,
)
from support import config, target

ANSWER = "one two three four five six seven eight nine ten eleven twelve"
T = TypeVar("T")


def claude(target_id: str, **fields: Any) -> Any:
    """An Anthropic target serving claude-test."""
    fields.setdefault("model", "claude-test")
    return target(target_id, api="anthropic", **fields)


def gpt(target_id: str, **fields: Any) -> Any:
    """An OpenAI-compatible target serving claude-test as gpt-4o."""
    fields.setdefault("serves", ("claude-test",))
    return target(target_id, model="gpt-4o", **fields)


@asynccontextmanager
async def gateway(
    fake: FakeProvider, cfg: SwitcherConfig, server: ServerConfig | None = None
) -> AsyncIterator[tuple[anthropic.Anthropic, Switcher, str]]:
    """An anthropic SDK client for a sidecar on 127.0.0.1:<free port> over ``fake``."""
    shutdown = trio.Event()
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(serve_sidecar, switcher, port=0, server=server, shutdown_trigger=shutdown)
            )
            base = f"http://127.0.0.1:{port}"
            client = anthropic.Anthropic(base_url=base, api_key="gateway-key", max_retries=0)
            try:
                yield client, switcher, base
            finally:
                client.close()
                shutdown.set()


async def run(call: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(call)


def streamed_text(client: anthropic.Anthropic, **request: Any) -> tuple[str, Any]:
    with client.messages.stream(**request) as events:
        text = "".join(events.text_stream)
        return text, events.get_final_message()


USER = [{"role": "user", "content": "count to twelve"}]


# ---- plain text ------------------------------------------------------------------


async def test_plain_text_from_an_anthropic_target_keeps_the_original_request() -> None:
    """An Anthropic target receives the caller's own body (unknown fields kept) and its
    anthropic-version / anthropic-beta headers; the SDK gets the reply, streamed and not."""
    fake = FakeProvider().on(
        "key-a", message_reply("whole answer"), stream(ANSWER, api="anthropic")
    )
    with trio.fail_after(20):
        async with gateway(fake, config(claude("a"))) as (client, _, _):
            request: dict[str, Any] = {
                "model": "claude-test",
                "max_tokens": 64,
                "system": [
                    {"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}
                ],
                "messages": USER,
                "extra_body": {"future_field": {"kept": [1, 2]}},
                "extra_headers": {"anthropic-beta": "some-beta-2025"},
            }
            whole = await run(lambda: client.messages.create(**request))
            text, final = await run(lambda: streamed_text(client, **request))
    assert whole.content[0].type == "text" and whole.content[0].text == "whole answer"
    assert whole.id == "msg_fake" and whole.stop_reason == "end_turn"
    assert text == ANSWER and final.stop_reason == "end_turn"
    assert final.usage.input_tokens == 10
    first, second = fake.calls
    assert first.path == "/v1/messages"
    assert first.body == {
        "model": "claude-test",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        "messages": USER,
        "future_field": {"kept": [1, 2]},
    }
    assert second.body == {**first.body, "stream": True}
    assert first.headers["anthropic-beta"] == "some-beta-2025"
    assert first.headers["anthropic-version"] == "2023-06-01"


async def test_plain_text_from_an_openai_target_is_translated_both_ways() -> None:
    """An OpenAI-compatible target gets the request in OpenAI's shape and its answer
    reaches the SDK in Anthropic's, streamed and not, usage included."""
    fake = FakeProvider().on("key-g", reply("whole answer"), stream(ANSWER))
    with trio.fail_after(20):
        async with gateway(fake, config(gpt("g"))) as (client, _, _):
            request: dict[str, Any] = {
                "model": "claude-test",
                "max_tokens": 64,
                "system": "be brief",
                "messages": USER,
                "stop_sequences": ["thirteen"],
                "temperature": 0.5,
                "metadata": {"user_id": "u-1"},
            }
            whole = await run(lambda: client.messages.create(**request))
            text, final = await run(lambda: streamed_text(client, **request))
    assert [b.type for b in whole.content] == ["text"] and whole.content[0].text == "whole answer"
    assert whole.model == "gpt-4o" and whole.stop_reason == "end_turn"
    assert whole.usage.input_tokens == 1
    assert text == ANSWER and final.stop_reason == "end_turn"
    sent = fake.calls[0].body
    assert sent == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "count to twelve"},
        ],
        "max_tokens": 64,
        "temperature": 0.5,
        "stop": ["thirteen"],
        "user": "u-1",
    }
    assert fake.calls[1].body["stream_options"] == {"include_usage": True}
    assert fake.calls[0].path == "/v1/chat/completions"


# ---- tools -------------------------------------------------------------------------

WEATHER = {
    "name": "get_weather",
    "description": "weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def _openai_tool_stream(arguments: list[str]) -> Any:
    """An OpenAI stream of one tool call whose arguments come in ``arguments`` pieces."""
    from oswitch.testing import Behaviour

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload = {
            "id": "chatcmpl-t",
            "object": "chat.completion.chunk",
            "model": "gpt-4o",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    body = chunk({"role": "assistant", "content": "Checking. "})
    body += chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
    )
    for piece in arguments:
        body += chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    body += chunk({}, "tool_calls") + b"data: [DONE]\n\n"

    async def respond(request: httpx.Request, _: Any) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return Behaviour(name="tool_stream", respond=respond)


async def test_multi_turn_tool_conversation_through_an_openai_target() -> None:
    """A tool_use streamed from an OpenAI target (arguments in pieces) reaches the SDK
    as a whole tool_use block; the next turn's tool_result goes up as a tool message."""
    fake = FakeProvider().on(
        "key-g", _openai_tool_stream(['{"ci', 'ty": "Par', 'is"}']), reply("It is sunny.")
    )
    with trio.fail_after(20):
        async with gateway(fake, config(gpt("g"))) as (client, _, _):
            first = {
                "model": "claude-test",
                "max_tokens": 64,
                "tools": [WEATHER],
                "tool_choice": {"type": "auto"},
                "messages": [{"role": "user", "content": "weather in Paris?"}],
            }
            _, turn = await run(lambda: streamed_text(client, **first))
            tool_use = turn.content[-1]
            second = {
                **first,
                "messages": [
                    *first["messages"],
                    {"role": "assistant", "content": [b.model_dump() for b in turn.content]},
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": tool_use.id, "content": "sunny"}
                        ],
                    },
                ],
            }
            answer = await run(lambda: client.messages.create(**second))
    assert [b.type for b in turn.content] == ["text", "tool_use"]
    assert (tool_use.id, tool_use.name, tool_use.input) == (
        "call_1",
        "get_weather",
        {"city": "Paris"},
    )
    assert turn.stop_reason == "tool_use"
    assert answer.content[0].text == "It is sunny."
    sent = fake.calls[1].body
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "weather for a city",
                "parameters": WEATHER["input_schema"],
            },
        }
    ]
    assert sent["tool_choice"] == "auto"
    assert sent["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Checking. ",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]


async def test_tool_use_from_an_anthropic_target_streamed_and_not() -> None:
    """An Anthropic target's tool_use reaches the SDK whole, streamed and not."""
    fake = FakeProvider().on(
        "key-a",
        message_reply("", tool_use={"name": "get_weather", "input": {"city": "Oslo"}}),
        stream('{"city": "Oslo"}', api="anthropic", tool_call={"name": "get_weather"}),
    )
    with trio.fail_after(20):
        async with gateway(fake, config(claude("a"))) as (client, _, _):
            request = {
                "model": "claude-test",
                "max_tokens": 64,
                "tools": [WEATHER],
                "messages": [{"role": "user", "content": "weather in Oslo?"}],
            }
            whole = await run(lambda: client.messages.create(**request))
            _, final = await run(lambda: streamed_text(client, **request))
    for answer in (whole, final):
        block = answer.content[-1]
        assert (block.type, block.name, block.input) == (
            "tool_use",
            "get_weather",
            {"city": "Oslo"},
        )
        assert answer.stop_reason == "tool_use"


async def test_corrupt_tool_arguments_are_an_error_never_a_tool_use() -> None:
    """Tool-call arguments that are not a JSON object end the stream with an in-band
    error (the SDK raises), and a whole reply with them is a 502: never a tool_use."""
    fake = FakeProvider().on("key-g", _openai_tool_stream(['{"city": "Par']))
    with trio.fail_after(20):
        async with gateway(fake, config(gpt("g"))) as (client, _, _):
            request = {
                "model": "claude-test",
                "max_tokens": 64,
                "tools": [WEATHER],
                "messages": [{"role": "user", "content": "weather?"}],
            }
            with pytest.raises(anthropic.APIStatusError, match="not a JSON object"):
                await run(lambda: streamed_text(client, **request))


# ---- images --------------------------------------------------------------------------

PIXEL = base64.b64encode(b"\x89PNG fake").decode()


async def test_images_reach_both_kinds_of_target() -> None:
    """A base64 image goes to an OpenAI target as an image_url data URI (a tool result's
    image in the user message after it), and to an Anthropic target as sent."""
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PIXEL},
    }
    messages = [{"role": "user", "content": [image, {"type": "text", "text": "what is this?"}]}]
    fake = FakeProvider().on("key-g", reply("a pixel")).on("key-a", message_reply("a pixel"))
    cfg_openai, cfg_anthropic = config(gpt("g")), config(claude("a"))
    with trio.fail_after(20):
        for cfg in (cfg_openai, cfg_anthropic):
            async with gateway(fake, cfg) as (client, _, _):
                answer = await run(
                    lambda: client.messages.create(
                        model="claude-test", max_tokens=32, messages=messages
                    )
                )
                assert answer.content[0].text == "a pixel"
    to_openai, to_anthropic = fake.calls
    assert to_openai.body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
                {"type": "text", "text": "what is this?"},
            ],
        }
    ]
    assert to_anthropic.body["messages"] == messages


# ---- failover, resume ------------------------------------------------------------------


async def test_failover_from_a_rate_limited_key() -> None:
    """A key answering Anthropic's 429 is left for the next one, streamed and not."""
    fake = FakeProvider()
    fake.on("key-limited", anthropic_rate_limited(30))
    fake.on("key-good", message_reply("from good"), stream(ANSWER, api="anthropic"))
    cfg = config(claude("limited", operator_priority=1), claude("good"))
    with trio.fail_after(20):
        async with gateway(fake, cfg) as (client, switcher, _):
            whole = await run(
                lambda: client.messages.create(model="claude-test", max_tokens=64, messages=USER)
            )
            text, _ = await run(
                lambda: streamed_text(client, model="claude-test", max_tokens=64, messages=USER)
            )
            views = {view.target_id: view for view in switcher.list_targets()}
    assert whole.content[0].text == "from good" and text == ANSWER
    assert fake.calls_to("key-limited") == 1  # cooling down after its 429
    assert views["limited"].condition == "CoolingDown"


async def test_resume_after_a_cut_changes_only_what_it_must() -> None:
    """A stream cut after content is finished by the next target; the SDK sees one whole
    answer, and the continuation sent is the original plus the resume's two turns."""
    fake = FakeProvider()
    fake.on("key-cutter", stream(ANSWER, api="anthropic", cut_after=4))
    fake.on("key-good", stream(ANSWER, api="anthropic"))
    cfg = config(claude("cutter", operator_priority=1), claude("good"))
    request = {
        "model": "claude-test",
        "max_tokens": 64,
        "messages": USER,
        "extra_body": {"future_field": True},
    }
    with trio.fail_after(20):
        async with gateway(fake, cfg) as (client, _, _):
            text, final = await run(lambda: streamed_text(client, **request))
    assert text == ANSWER and final.content[0].text == ANSWER
    continued = fake.calls[1].body
    assert continued == {
        "model": "claude-test",
        "max_tokens": 64,
        "stream": True,
        "future_field": True,
        "messages": [
            *USER,
            {"role": "assistant", "content": [{"type": "text", "text": "one two three four "}]},
            {"role": "user", "content": [{"type": "text", "text": CONTINUE_INSTRUCTION}]},
        ],
    }


async def test_resume_on_an_openai_target_continues_an_anthropic_stream() -> None:
    """A cut Anthropic stream may be finished by an OpenAI-compatible target."""
    fake = FakeProvider()
    fake.on("key-cutter", stream(ANSWER, api="anthropic", reset_after=3))
    fake.on("key-g", stream(ANSWER))
    cfg = config(claude("cutter", operator_priority=1), gpt("g"))
    with trio.fail_after(20):
        async with gateway(fake, cfg) as (client, _, _):
            text, _ = await run(
                lambda: streamed_text(client, model="claude-test", max_tokens=64, messages=USER)
            )
    assert text == ANSWER


async def test_a_cut_inside_a_tool_call_ends_in_an_error_event() -> None:
    """A stream cut in the middle of a tool call is not resumed nor closed as if whole:
    the SDK gets the in-band error event (no message_stop)."""
    fake = FakeProvider()
    fake.on(
        "key-cutter",
        stream(
            '{"city": "Oslo", "days": 3}', api="anthropic", tool_call={"name": "w"}, cut_after=2
        ),
    )
    fake.on("key-good", stream(ANSWER, api="anthropic"))
    cfg = config(claude("cutter", operator_priority=1), claude("good"))
    with trio.fail_after(20):
        async with gateway(fake, cfg) as (client, _, _):
            with pytest.raises(anthropic.APIStatusError, match="middle of a tool call"):
                await run(
                    lambda: streamed_text(
                        client, model="claude-test", max_tokens=64, tools=[WEATHER], messages=USER
                    )
                )
    assert fake.calls_to("key-good") == 0


# ---- errors --------------------------------------------------------------------------


def _error_of(call: Callable[[], Any]) -> anthropic.APIStatusError:
    try:
        call()
    except anthropic.APIStatusError as exc:
        return exc
    raise AssertionError("no error")


async def test_every_error_shape() -> None:
    """Each refusal is Anthropic's error object with the chat endpoint's status (and
    Retry-After where it has one), so the SDK raises its own class for it."""
    fake = FakeProvider()
    fake.on("key-limited", anthropic_rate_limited(7))
    fake.on("key-broken", server_error(500))
    cfg = config(
        claude("limited", model="claude-limited"),
        claude("broken", model="claude-broken"),
        gpt("plain"),
        retry_budget=0,
        max_wait_ms=0,
    )
    server = ServerConfig(api_keys=(Secret("gateway-key"),), max_body_bytes=4096)
    with trio.fail_after(30):
        async with gateway(fake, cfg, server) as (client, _, base):

            def create(**fields: Any) -> Callable[[], Any]:
                request = {"model": "claude-test", "max_tokens": 8, "messages": USER, **fields}
                return lambda: client.messages.create(**request)

            cases = {
                "missing max_tokens": create(extra_body={"max_tokens": None}),
                "unknown model": create(model="claude-nobody"),
                "too large": create(system="x" * 5000),
                "rate limited": create(model="claude-limited"),
                "upstream failed": create(model="claude-broken"),
                "thinking to openai": create(thinking={"type": "enabled", "budget_tokens": 1024}),
            }
            errors = {name: await run(partial(_error_of, call)) for name, call in cases.items()}
            unauthorized = anthropic.Anthropic(base_url=base, api_key="wrong", max_retries=0)
            errors["bad key"] = await run(
                partial(_error_of, lambda: unauthorized.messages.create(**cases_request()))
            )
            unauthorized.close()
    expected = {
        "missing max_tokens": (anthropic.BadRequestError, 400, "invalid_request_error"),
        "unknown model": (anthropic.NotFoundError, 404, "not_found_error"),
        "too large": (anthropic.APIStatusError, 413, "request_too_large"),
        "rate limited": (anthropic.RateLimitError, 429, "rate_limit_error"),
        "upstream failed": (anthropic.InternalServerError, 502, "api_error"),
        "thinking to openai": (anthropic.BadRequestError, 400, "invalid_request_error"),
        "bad key": (anthropic.AuthenticationError, 401, "authentication_error"),
    }
    for name, (kind, status, error_type) in expected.items():
        error = errors[name]
        assert isinstance(error, kind), name
        assert error.status_code == status, name
        assert error.body["type"] == "error", name  # type: ignore[index]
        assert error.body["error"]["type"] == error_type, name  # type: ignore[index]
    assert errors["rate limited"].response.headers["retry-after"] == "7"
    assert "max_tokens" in errors["missing max_tokens"].message
    assert "$.thinking" in errors["thinking to openai"].message


async def test_deadline_is_504_timeout_error() -> None:
    """A request whose deadline passes is 504 timeout_error."""
    fake = FakeProvider().on("key-silent", hang())
    cfg = config(gpt("silent"), request_timeout_ms=300)
    with trio.fail_after(20):
        async with gateway(fake, cfg) as (client, _, _):
            error = await run(partial(_error_of, lambda: client.messages.create(**cases_request())))
    assert error.status_code == 504
    assert error.body["error"]["type"] == "timeout_error"  # type: ignore[index]


def cases_request() -> dict[str, Any]:
    return {"model": "claude-test", "max_tokens": 8, "messages": USER}


async def test_nothing_eligible_is_503_overloaded_error() -> None:
    """With every target of the model paused, the answer is 503 overloaded_error (the
    chat endpoint's 503 no_eligible_target) with Retry-After."""
    fake = FakeProvider().on("key-a", rate_limited(30.0)).on("key-b", rate_limited(30.0))
    cfg = config(claude("a"), claude("b"), max_wait_ms=0)
    with trio.fail_after(20):
        async with gateway(fake, cfg) as (client, switcher, _):
            limited = await run(
                partial(_error_of, lambda: client.messages.create(**cases_request()))
            )
            await switcher.pause_target("b")
            paused = await run(
                partial(_error_of, lambda: client.messages.create(**cases_request()))
            )
    assert limited.status_code == 429
    assert paused.status_code == 503
    assert paused.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert int(paused.response.headers["retry-after"]) > 0


async def test_error_after_content_is_an_in_band_error_event() -> None:
    """A stream that fails after content and cannot be resumed ends with Anthropic's
    error event and no message_stop."""
    fake = FakeProvider().on("key-a", stream(ANSWER, api="anthropic", error_after=3))
    cfg = config(claude("a"), stream_resume="off")
    with trio.fail_after(20):
        async with gateway(fake, cfg) as (_, _, base):
            async with httpx.AsyncClient() as http:
                response = await http.post(
                    f"{base}/v1/messages",
                    json={**cases_request(), "stream": True},
                    headers={"x-api-key": "any"},
                )
    body = response.text
    assert response.status_code == 200
    assert "event: message_start" in body and "event: message_stop" not in body
    last = body.strip().splitlines()
    assert last[-2] == "event: error"
    assert json.loads(last[-1][6:])["error"]["type"] == "api_error"


# ---- count_tokens, auth, observability ---------------------------------------------------


async def test_count_tokens_forwarded_or_estimated() -> None:
    """count_tokens goes to an Anthropic target serving the model; with none, the
    documented estimate is answered (the x-oswitch-token-count header says which)."""
    fake = FakeProvider().on("key-a", token_count(42))
    cfg = config(claude("a"), gpt("g", serves=("gpt-only",)))
    with trio.fail_after(20):
        async with gateway(fake, cfg) as (client, _, base):
            counted = await run(
                lambda: client.messages.count_tokens(model="claude-test", messages=USER)
            )
            async with httpx.AsyncClient() as http:
                estimated = await http.post(
                    f"{base}/v1/messages/count_tokens",
                    json={"model": "gpt-only", "messages": USER},
                )
    assert counted.input_tokens == 42
    assert fake.calls[0].path == "/v1/messages/count_tokens"
    assert fake.calls[0].body == {"model": "claude-test", "messages": USER}
    assert estimated.headers["x-oswitch-token-count"] == "estimate"
    # ceil(15 chars / 4) + 4 per message + 3 to prime the reply
    assert estimated.json() == {"input_tokens": 11}


async def test_gateway_key_as_x_api_key_or_bearer_on_both_endpoints() -> None:
    """The sidecar's api_keys are accepted as x-api-key and as bearer, on the chat and
    the Messages endpoints alike; anything else is a 401."""
    fake = FakeProvider().on("key-g", reply("ok"))
    server = ServerConfig(api_keys=(Secret("gateway-key"),))
    chat_body = {"model": "claude-test", "messages": USER}
    with trio.fail_after(20):
        async with gateway(fake, config(gpt("g")), server) as (_, _, base):
            async with httpx.AsyncClient(base_url=base) as http:
                statuses = []
                for path, body in (
                    ("/v1/chat/completions", chat_body),
                    ("/v1/messages", cases_request()),
                ):
                    for headers in (
                        {"x-api-key": "gateway-key"},
                        {"authorization": "Bearer gateway-key"},
                        {"x-api-key": "wrong"},
                        {},
                    ):
                        response = await http.post(path, json=body, headers=headers)
                        statuses.append(response.status_code)
    assert statuses == [200, 200, 401, 401] * 2


async def test_messages_requests_are_traced_and_counted_like_chat() -> None:
    """A Messages request has a trace under its request id (inspect-request) and counts in
    the sidecar's request metrics."""
    fake = FakeProvider().on("key-g", reply("ok"))
    with trio.fail_after(20):
        async with gateway(fake, config(gpt("g"))) as (_, switcher, base):
            async with httpx.AsyncClient(base_url=base) as http:
                response = await http.post("/v1/messages", json=cases_request())
                metrics = (await http.get("/metrics")).text
            request_id = response.headers["x-oswitch-request-id"]
            trace = switcher.inspect_request(request_id)
    assert response.json()["type"] == "message"
    assert trace.outcome == "ok" and trace.served_by == "g"
    assert 'oswitch_requests_total{error_class="",outcome="ok",stream="false"} 1.0' in metrics


# ---- thinking ----------------------------------------------------------------------------

_START = (
    "message_start",
    {
        "message": {
            "id": "msg_think",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": 3},
        }
    },
)
_THINKING = [
    ("content_block_start", {"index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
    ("content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm, "}}),
    ("content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": "two."}}),
]
_SIGNED_ANSWER = [
    ("content_block_delta", {"index": 0, "delta": {"type": "signature_delta", "signature": "s1"}}),
    ("content_block_stop", {"index": 0}),
    ("content_block_start", {"index": 1, "content_block": {"type": "text", "text": ""}}),
    ("content_block_delta", {"index": 1, "delta": {"type": "text_delta", "text": "Two."}}),
    ("content_block_stop", {"index": 1}),
    (
        "message_delta",
        {
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 9},
        },
    ),
    ("message_stop", {}),
]


async def test_thinking_blocks_from_an_anthropic_target_reach_the_sdk() -> None:
    """Thinking, its signature, the message's own id and its usage (cache reads included)
    come through a stream from an Anthropic target as the SDK expects them."""
    fake = FakeProvider().on("key-a", anthropic_stream([_START, *_THINKING, *_SIGNED_ANSWER]))
    request = {
        "model": "claude-test",
        "max_tokens": 2048,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": USER,
    }
    with trio.fail_after(20):
        async with gateway(fake, config(claude("a"))) as (client, _, _):
            _, final = await run(lambda: streamed_text(client, **request))
    thinking, text = final.content
    assert (thinking.type, thinking.thinking, thinking.signature) == ("thinking", "Hmm, two.", "s1")
    assert (text.type, text.text) == ("text", "Two.")
    assert final.id == "msg_think"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 9)
    assert final.usage.cache_read_input_tokens == 3
    assert fake.calls[0].body["thinking"] == {"type": "enabled", "budget_tokens": 1024}


async def test_a_cut_inside_a_thinking_block_ends_in_an_error_event() -> None:
    """A stream cut while a thinking block has no signature yet is not resumed (the
    block could not be sent back): the SDK gets the in-band error."""
    fake = FakeProvider()
    fake.on("key-cutter", anthropic_stream([_START, *_THINKING]))
    fake.on("key-good", stream(ANSWER, api="anthropic"))
    cfg = config(claude("cutter", operator_priority=1), claude("good"))
    with trio.fail_after(20):
        async with gateway(fake, cfg) as (client, _, _):
            with pytest.raises(anthropic.APIStatusError, match="thinking block"):
                await run(
                    lambda: streamed_text(client, model="claude-test", max_tokens=64, messages=USER)
                )
    assert fake.calls_to("key-good") == 0


async def test_server_tool_blocks_and_citations_come_through_as_sent() -> None:
    """Blocks the OpenAI shape has no form for (a server tool's use and result) and
    citation deltas reach the SDK from an Anthropic target as it sent them."""
    search = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
    result = {
        "type": "web_search_tool_result",
        "tool_use_id": "srvtoolu_1",
        "content": [
            {
                "type": "web_search_result",
                "url": "https://example.com",
                "title": "Example",
                "encrypted_content": "enc",
                "page_age": None,
            }
        ],
    }
    citation = {
        "type": "web_search_result_location",
        "url": "https://example.com",
        "title": "Example",
        "encrypted_index": "ix",
        "cited_text": "an example",
    }
    events = [
        _START,
        ("content_block_start", {"index": 0, "content_block": search}),
        (
            "content_block_delta",
            {"index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"query": '}},
        ),
        (
            "content_block_delta",
            {"index": 0, "delta": {"type": "input_json_delta", "partial_json": '"oswitch"}'}},
        ),
        ("content_block_stop", {"index": 0}),
        ("content_block_start", {"index": 1, "content_block": result}),
        ("content_block_stop", {"index": 1}),
        ("content_block_start", {"index": 2, "content_block": {"type": "text", "text": ""}}),
        (
            "content_block_delta",
            {"index": 2, "delta": {"type": "citations_delta", "citation": citation}},
        ),
        ("content_block_delta", {"index": 2, "delta": {"type": "text_delta", "text": "Found."}}),
        ("content_block_stop", {"index": 2}),
        (
            "message_delta",
            {
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 3},
            },
        ),
        ("message_stop", {}),
    ]
    fake = FakeProvider().on("key-a", anthropic_stream(events))
    request = {
        "model": "claude-test",
        "max_tokens": 256,
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}],
        "messages": USER,
    }
    with trio.fail_after(20):
        async with gateway(fake, config(claude("a"))) as (client, _, _):
            _, final = await run(lambda: streamed_text(client, **request))
    used, found, text = final.content
    assert (used.type, used.name, used.input) == (
        "server_tool_use",
        "web_search",
        {"query": "oswitch"},
    )
    assert found.type == "web_search_tool_result" and found.content[0].url == "https://example.com"
    assert text.type == "text" and text.text == "Found."
    assert text.citations[0].cited_text == "an example"
    assert fake.calls[0].body["tools"] == request["tools"]


async def test_count_tokens_falls_back_to_the_estimate_when_the_target_fails() -> None:
    """An Anthropic target answering count_tokens with a 5xx leaves the estimate."""
    fake = FakeProvider().on("key-a", server_error(500))
    with trio.fail_after(20):
        async with gateway(fake, config(claude("a"))) as (_, _, base):
            async with httpx.AsyncClient() as http:
                response = await http.post(
                    f"{base}/v1/messages/count_tokens",
                    json={"model": "claude-test", "messages": USER},
                )
    assert fake.calls[0].path == "/v1/messages/count_tokens"
    assert response.headers["x-oswitch-token-count"] == "estimate"
    assert response.json() == {"input_tokens": 11}


async def test_refusals_on_messages_paths_are_anthropic_shaped() -> None:
    """A wrong method or an unknown path under /v1/messages is refused in Anthropic's
    error shape (405 with Allow, 404), as the SDKs expect there."""
    fake = FakeProvider()
    with trio.fail_after(20):
        async with gateway(fake, config(claude("a"))) as (_, _, base):
            async with httpx.AsyncClient(base_url=base) as http:
                wrong_method = await http.get("/v1/messages")
                unknown = await http.post("/v1/messages/batches", json={})
                chat_unknown = await http.post("/v1/nothing", json={})
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert wrong_method.json()["error"]["type"] == "invalid_request_error"
    assert wrong_method.json()["type"] == "error"
    assert unknown.status_code == 404
    assert unknown.json() == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "no such endpoint: /v1/messages/batches"},
    }
    assert "type" not in chat_unknown.json()  # elsewhere: OpenAI's shape, as before
