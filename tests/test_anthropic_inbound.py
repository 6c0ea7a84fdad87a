"""The Messages API's pure edges: checking and translating a request, and composing the
reply, the stream's events and the errors in Anthropic's shapes."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest

from oswitch.core.anthropic_inbound import (
    forwarded_headers,
    messages_request_problems,
    to_chat_request,
)
from oswitch.core.anthropic_outbound import (
    CorruptToolCall,
    MessagesStreamEncoder,
    to_message,
)
from oswitch.core.chat_request import chat_request_problems
from oswitch.core.inbound import ORIGINAL_KEY, OriginalRequest
from oswitch.providers.adapter import Untranslatable
from oswitch.providers.anthropic import AnthropicAdapter
from oswitch.providers.openai import OpenAIAdapter

USER = [{"role": "user", "content": "hi"}]


def request(**fields: Any) -> dict[str, Any]:
    return {"model": "claude-x", "max_tokens": 16, "messages": USER, **fields}


def untranslatable(body: dict[str, Any]) -> tuple[str, ...]:
    return to_chat_request(body)[ORIGINAL_KEY].untranslatable  # type: ignore[no-any-return]


# ---- checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([], ("$", "must be a JSON object (got list)")),
        (request(max_tokens=None), ("$.max_tokens", "required: an integer from 1 to 2147483647")),
        (request(max_tokens=0), ("$.max_tokens", "must be an integer from 1 to 2147483647")),
        (request(messages=[]), ("$.messages", "required: a non-empty array of messages")),
        (
            request(messages=[{"role": "robot", "content": "x"}]),
            ("$.messages[0].role", "must be user, assistant or system (got 'robot')"),
        ),
        (
            request(messages=[{"role": "user", "content": [{"text": "x"}]}]),
            ("$.messages[0].content[0]", "must be a content block (an object with a string type)"),
        ),
        (
            request(system=[{"type": "image"}]),
            ("$.system[0].type", "must be text (got 'image')"),
        ),
        (
            request(tool_choice={"type": "maybe"}),
            ("$.tool_choice", "must be an object whose type is auto, any, tool or none"),
        ),
        (
            request(temperature=math.nan),
            ("$.temperature", "must be a finite number; NaN and Infinity are not JSON (got nan)"),
        ),
    ],
)
def test_a_bad_messages_request_is_named_by_path(body: object, problem: tuple[str, str]) -> None:
    """Each fault of a Messages request is reported at its path, with why."""
    assert problem in messages_request_problems(body)


def test_count_tokens_needs_no_max_tokens() -> None:
    """A count_tokens body is a Messages request without max_tokens."""
    body = {"model": "claude-x", "messages": USER}
    assert messages_request_problems(body, count_only=True) == []
    assert messages_request_problems(body) != []


def test_no_json_body_can_forge_the_original() -> None:
    """The original's key holding anything but oswitch's own object is refused."""
    forged = {"model": "m", "messages": USER, ORIGINAL_KEY: {"api": "anthropic"}}
    assert (f"$.{ORIGINAL_KEY}", "reserved for oswitch's own use") in chat_request_problems(forged)
    assert chat_request_problems(to_chat_request(request())) == []


# ---- translation ------------------------------------------------------------------------


def test_translation_of_blocks_tools_and_options() -> None:
    """System blocks, images, documents, tool use and results, tools, tool_choice and
    the sampling options have their OpenAI forms; the original rides beside them."""
    body = request(
        system=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": "doc"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "calling"},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "is_error": True,
                        "content": [
                            {"type": "text", "text": "boom"},
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/png",
                                    "data": "QQ==",
                                },
                            },
                        ],
                    },
                    {"type": "text", "text": "and?"},
                ],
            },
        ],
        tools=[{"name": "f", "input_schema": {"type": "object"}}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        top_k=5,
        stop_sequences=["END"],
        stream=True,
    )
    translated = to_chat_request(body, {"anthropic-version": "2023-06-01"})
    original = translated.pop(ORIGINAL_KEY)
    assert translated == {
        "model": "claude-x",
        "max_tokens": 16,
        "stream": True,
        "top_k": 5,
        "stop": ["END"],
        "messages": [
            {"role": "system", "content": "a\n\nb"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                    {"type": "text", "text": "doc"},
                ],
            },
            {
                "role": "assistant",
                "content": "calling",
                "tool_calls": [
                    {
                        "id": "t1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"a": 1}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "[tool error] boom"},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,QQ=="}},
                    {"type": "text", "text": "and?"},
                ],
            },
        ],
        "tools": [
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }
    assert original == OriginalRequest(
        api="anthropic",
        body=body,
        headers={"anthropic-version": "2023-06-01"},
        base_messages=5,
        untranslatable=(),
    )


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (
            {"thinking": {"type": "enabled", "budget_tokens": 1024}},
            "$.thinking: extended thinking has no OpenAI form",
        ),
        (
            {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            "$.tools[0].type: server tool 'web_search_20250305' runs on Anthropic's side only",
        ),
        ({"container": "c1"}, "$.container: no OpenAI form"),
        (
            {"metadata": {"user_id": "u", "other": 1}},
            "$.metadata.other: only user_id has an OpenAI form",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "document",
                                "source": {
                                    "type": "base64",
                                    "media_type": "application/pdf",
                                    "data": "x",
                                },
                            }
                        ],
                    }
                ]
            },
            "$.messages[0].content[0].source: only plain-text documents have an OpenAI form",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "search_result", "x": 1}]}]},
            "$.messages[0].content[0].type: a 'search_result' block has no OpenAI form",
        ),
    ],
)
def test_what_cannot_be_carried_is_listed_and_refused_by_openai(
    fields: dict[str, Any], reason: str
) -> None:
    """What the OpenAI form cannot carry is listed by path, and an OpenAI target refuses
    the request with it (a 400), while an Anthropic target sends the original."""
    body = request(**fields)
    assert untranslatable(body) == (reason,)
    translated = to_chat_request(body)
    with pytest.raises(Untranslatable, match=re.escape(reason)):
        OpenAIAdapter().build_call(
            translated, base_url="http://x/v1", model="gpt", api_key="k", stream=False
        )
    call = AnthropicAdapter().build_call(
        translated, base_url="http://x/v1", model="claude-x", api_key="k", stream=False
    )
    assert call.body == body


def test_anthropic_call_sends_the_original_and_a_resume_only_appends() -> None:
    """The original goes to an Anthropic target with the model that serves and the
    caller's version/beta headers; a resume appends its turns, merging a same-role one."""
    body = request(future={"x": 1}, messages=[{"role": "user", "content": "count"}])
    translated = to_chat_request(body, {"anthropic-beta": "b1", "anthropic-version": "2099-01-01"})
    prefilled = {
        **translated,
        "messages": [*translated["messages"], {"role": "assistant", "content": "one two"}],
    }
    call = AnthropicAdapter().build_call(
        prefilled, base_url="http://x/v1/", model="claude-real", api_key="k", stream=True
    )
    assert call.url == "http://x/v1/messages"
    assert call.body == {
        **body,
        "model": "claude-real",
        "stream": True,
        "messages": [
            {"role": "user", "content": "count"},
            {"role": "assistant", "content": [{"type": "text", "text": "one two"}]},
        ],
    }
    assert call.headers["anthropic-beta"] == "b1"
    assert call.headers["anthropic-version"] == "2099-01-01"
    assert call.headers["x-api-key"] == "k"
    # The caller's own prefill: the resume's assistant text joins that turn.
    own = to_chat_request(
        request(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "A:"}])
    )
    resumed = {**own, "messages": [*own["messages"], {"role": "assistant", "content": " more"}]}
    sent = (
        AnthropicAdapter()
        .build_call(resumed, base_url="http://x", model="m", api_key=None, stream=True)
        .body["messages"]
    )
    assert sent[-1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "A:"}, {"type": "text", "text": " more"}],
    }


def test_forwarded_headers_are_the_anthropic_ones_only() -> None:
    """Only anthropic-version and anthropic-beta travel (several beta lines joined)."""
    headers = [
        (b"Anthropic-Beta", b"a"),
        (b"anthropic-beta", b"b"),
        (b"anthropic-version", b"2023-06-01"),
        (b"x-api-key", b"gateway-secret"),
        (b"authorization", b"Bearer gateway-secret"),
    ]
    assert forwarded_headers(headers) == {
        "anthropic-beta": "a,b",
        "anthropic-version": "2023-06-01",
    }


# ---- replies and events -------------------------------------------------------------------


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if block:
            name, data = block.split("\n")
            out.append((name[7:], json.loads(data[6:])))
    return out


def test_stream_encoder_opens_and_closes_blocks_in_order() -> None:
    """Text then two tool calls become three blocks with their deltas, then
    message_delta with the stop reason and usage, then message_stop."""
    encoder = MessagesStreamEncoder(message_id="msg_1", model="claude-x", input_tokens=7)
    raw = encoder.feed(chunk({"role": "assistant", "content": ""}))
    raw += encoder.feed(chunk({"content": "Hi"}))
    call = {"index": 0, "id": "c0", "function": {"name": "f", "arguments": '{"a"'}}
    raw += encoder.feed(chunk({"tool_calls": [call]}))
    raw += encoder.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}))
    raw += encoder.feed(
        chunk({"tool_calls": [{"index": 1, "id": "c1", "function": {"name": "g"}}]})
    )
    raw += encoder.feed(chunk({}, "tool_calls"))
    raw += encoder.feed({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}})
    raw += encoder.finish()
    kinds = [(name, payload.get("index")) for name, payload in events(raw)]
    assert kinds == [
        ("message_start", None),
        ("ping", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    parsed = dict(events(raw)[-2:])
    assert parsed["message_delta"]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert parsed["message_delta"]["usage"] == {"input_tokens": 7, "output_tokens": 3}
    start = events(raw)[0][1]["message"]
    assert (start["id"], start["usage"]["input_tokens"]) == ("msg_1", 7)


@pytest.mark.parametrize(
    "deltas",
    [
        [{"index": 0, "id": "c", "function": {"name": "f", "arguments": '{"a": '}}],
        [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "[1]"}}],
        [{"index": 0, "id": "c", "function": {"arguments": "{}"}}],
    ],
)
def test_a_tool_call_that_is_not_whole_is_never_closed_as_one(deltas: list[dict[str, Any]]) -> None:
    """Arguments that are not a JSON object, or a call without a name, raise
    CorruptToolCall instead of closing a tool_use block."""
    encoder = MessagesStreamEncoder(message_id="m", model="x")
    with pytest.raises(CorruptToolCall):
        encoder.feed(chunk({"tool_calls": deltas}))
        encoder.feed(chunk({}, "tool_calls"))
        encoder.finish()


def test_interleaved_tool_call_arguments_are_refused() -> None:
    """A delta for a tool call whose block already closed cannot be carried in order."""
    encoder = MessagesStreamEncoder(message_id="m", model="x")
    encoder.feed(
        chunk(
            {"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{}"}}]}
        )
    )
    encoder.feed(
        chunk(
            {"tool_calls": [{"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}}]}
        )
    )
    with pytest.raises(CorruptToolCall, match="resumed after it ended"):
        encoder.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}))


def test_whole_reply_as_a_message() -> None:
    """An OpenAI reply becomes a message: text and tool_use blocks, the stop reason,
    usage with cached tokens apart; bad arguments raise CorruptToolCall."""
    reply = {
        "model": "gpt",
        "choices": [
            {
                "message": {
                    "content": "ok",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": '{"a":1}'}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 2,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    }
    assert to_message(reply, request_id="req_abc") == {
        "id": "msg_abc",
        "type": "message",
        "role": "assistant",
        "model": "gpt",
        "content": [
            {"type": "text", "text": "ok"},
            {"type": "tool_use", "id": "c", "name": "f", "input": {"a": 1}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 6, "output_tokens": 2, "cache_read_input_tokens": 4},
    }
    reply["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = "{oops"  # type: ignore[index]
    with pytest.raises(CorruptToolCall):
        to_message(reply, request_id="req_abc")


def test_native_decoding_keeps_thinking_and_the_exact_stop() -> None:
    """For a request that arrived as Anthropic, the decoder keeps thinking deltas, the
    message's own start and the exact stop reason; otherwise it drops them as before."""
    native = AnthropicAdapter().stream_decoder(model="m", native=True)
    plain = AnthropicAdapter().stream_decoder(model="m")
    delta = json.dumps({"index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}})
    stop = json.dumps(
        {
            "delta": {"stop_reason": "pause_turn", "stop_sequence": None},
            "usage": {"output_tokens": 2},
        }
    )
    assert native.feed("content_block_delta", delta)[0]["choices"][0]["delta"] == {"thinking": "hm"}
    assert plain.feed("content_block_delta", delta) == []
    native.feed("message_delta", stop)
    final = native.feed("message_stop", "{}")[0]
    assert final["oswitch_native"]["stop_reason"] == "pause_turn"
    assert final["choices"][0]["finish_reason"] == "stop"


def test_claude_codes_own_request_shape_translates() -> None:
    """What Claude Code 2.1 sends (mid-conversation system turns, adaptive thinking,
    output_config.effort, context_management) is checked as valid and has an OpenAI form,
    the hints dropped; a JSON-schema output format becomes response_format."""
    body = request(
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "system", "content": "agent types: ..."},
        ],
        thinking={"type": "adaptive"},
        output_config={
            "effort": "high",
            "format": {"type": "json_schema", "schema": {"type": "object"}},
        },
        context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        metadata={"user_id": '{"session_id": "s"}'},
    )
    assert messages_request_problems(body) == []
    translated = to_chat_request(body)
    assert translated.pop(ORIGINAL_KEY).untranslatable == ()
    assert translated["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "system", "content": "agent types: ..."},
    ]
    assert translated["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": {"type": "object"}, "strict": True},
    }
    assert "thinking" not in translated and "context_management" not in translated


def test_a_turn_with_nothing_openai_can_carry_still_routes_to_anthropic() -> None:
    """A request whose only turn is a PDF is a valid internal request (so the engine
    routes it); an Anthropic target sends the original, an OpenAI one refuses it."""
    pdf = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "x"},
    }
    body = request(messages=[{"role": "user", "content": [pdf]}])
    translated = to_chat_request(body)
    assert chat_request_problems(translated) == []
    assert translated["messages"] == [{"role": "user", "content": ""}]
    call = AnthropicAdapter().build_call(
        translated, base_url="http://x", model="claude-x", api_key=None, stream=False
    )
    assert call.body == body
