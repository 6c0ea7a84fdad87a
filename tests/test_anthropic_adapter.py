# ruff: noqa: E501  (SSE transcripts and error bodies are kept verbatim, long lines and all)
"""AnthropicAdapter: OpenAI chat requests → ``/v1/messages``, and replies and SSE events back.

Pure unit tests of the translation; the engine is not involved. The streamed transcripts
are Anthropic's own examples, copied verbatim from the "Streaming Messages" page
(https://docs.anthropic.com/en/docs/build-with-claude/streaming, sections "Basic
streaming request", "Streaming request with tool use", "Streaming request with extended
thinking" and "Error events").
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from oswitch import ErrorClass
from oswitch.providers.anthropic import (
    ANTHROPIC_VERSION,
    DEFAULT_MAX_TOKENS,
    AnthropicAdapter,
    AnthropicStreamDecoder,
)
from oswitch.providers.base import MalformedReply, StreamFault
from oswitch.providers.registry import adapter_for

ADAPTER = AnthropicAdapter()
BASE_URL = "https://api.anthropic.com/v1"


def body_of(request: dict[str, Any], *, stream: bool = False) -> dict[str, Any]:
    call = ADAPTER.build_call(
        request, base_url=BASE_URL, model="claude-sonnet-4-5", api_key="sk-ant-test", stream=stream
    )
    return dict(call.body)


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": list(messages), **extra}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def text(value: str) -> dict[str, str]:
    return {"type": "text", "text": value}


def sse_events(transcript: str) -> list[tuple[str, str]]:
    """Split an SSE transcript into ``(event name, data)`` pairs, as the engine feeds them."""
    events = []
    for block in transcript.strip().split("\n\n"):
        name, data = "", []
        for line in block.splitlines():
            field, _, value = line.partition(":")
            if field == "event":
                name = value.strip()
            elif field == "data":
                data.append(value[1:] if value.startswith(" ") else value)
        events.append((name, "\n".join(data)))
    return events


def replay(
    transcript: str,
) -> tuple[AnthropicStreamDecoder, list[tuple[str, list[dict[str, Any]]]]]:
    """Feed a whole transcript; return the decoder and, per event, the chunks it gave."""
    decoder = AnthropicStreamDecoder(model="claude-requested")
    fed = []
    for name, data in sse_events(transcript):
        assert not decoder.finished, f"{name} arrived after the decoder said it was finished"
        fed.append((name, decoder.feed(name, data)))
    return decoder, fed


def deltas(fed: list[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    return [chunk["choices"][0]["delta"] for _, chunks in fed for chunk in chunks]


# ---- requests ------------------------------------------------------------------------


def test_adapter_for_anthropic_is_the_anthropic_adapter() -> None:
    """`api = "anthropic"` selects this adapter."""
    assert isinstance(adapter_for("anthropic"), AnthropicAdapter)


def test_url_and_headers() -> None:
    """POST {base_url}/messages with x-api-key and anthropic-version, JSON both ways."""
    call = ADAPTER.build_call(
        chat(user("hi")), base_url=BASE_URL + "/", model="m", api_key="sk-ant-1", stream=False
    )
    assert call.url == "https://api.anthropic.com/v1/messages"
    assert dict(call.headers) == {
        "content-type": "application/json",
        "anthropic-version": ANTHROPIC_VERSION,
        "accept": "application/json",
        "x-api-key": "sk-ant-1",
    }
    assert ANTHROPIC_VERSION == "2023-06-01"
    assert "authorization" not in call.headers


def test_no_key_sends_no_key_header() -> None:
    """A keyless target (a local proxy) sends no x-api-key at all, not an empty one."""
    call = ADAPTER.build_call(
        chat(user("hi")), base_url=BASE_URL, model="m", api_key=None, stream=False
    )
    assert "x-api-key" not in call.headers


def test_stream_flag_and_accept_header() -> None:
    """A streamed call asks for `"stream": true` and an event stream; a plain call does not."""
    streamed = ADAPTER.build_call(
        chat(user("hi")), base_url=BASE_URL, model="m", api_key="k", stream=True
    )
    assert streamed.body["stream"] is True
    assert streamed.headers["accept"] == "text/event-stream"
    plain = body_of(chat(user("hi"), stream=True, stream_options={"include_usage": True}))
    assert "stream" not in plain
    assert "stream_options" not in plain


def test_model_is_the_targets_and_oswitch_key_never_travels() -> None:
    """The body names the target's model; oswitch's own request key is not sent upstream."""
    body = body_of(chat(user("hi"), oswitch={"policy_tags": ["eu"]}, n=1))
    assert body["model"] == "claude-sonnet-4-5"
    assert "oswitch" not in body
    assert "oswitch" not in json.dumps(body)


def test_system_and_developer_messages_become_system() -> None:
    """System and developer messages (string or text parts) are joined into `system`."""
    body = body_of(
        chat(
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [text("Answer in French."), text(" Always.")]},
            user("hi"),
        )
    )
    assert body["system"] == "You are terse.\n\nAnswer in French. Always."
    assert body["messages"] == [{"role": "user", "content": [text("hi")]}]


def test_no_system_key_without_system_messages() -> None:
    """Without a system message the body has no `system` key (not an empty one)."""
    assert "system" not in body_of(chat(user("hi")))


def test_turns_keep_order_and_same_role_turns_merge() -> None:
    """User/assistant turns keep their order; consecutive same-role turns become one turn."""
    body = body_of(
        chat(
            user("one"),
            user([text("two")]),
            {"role": "assistant", "content": "three"},
            {"role": "assistant", "content": "four"},
            user("five"),
        )
    )
    assert body["messages"] == [
        {"role": "user", "content": [text("one"), text("two")]},
        {"role": "assistant", "content": [text("three"), text("four")]},
        {"role": "user", "content": [text("five")]},
    ]


def test_empty_content_adds_no_block() -> None:
    """An empty string content adds no empty text block (Anthropic rejects those)."""
    body = body_of(chat(user("hi"), {"role": "assistant", "content": ""}, user("again")))
    assert body["messages"] == [{"role": "user", "content": [text("hi"), text("again")]}]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, DEFAULT_MAX_TOKENS),
        ({"max_tokens": 300}, 300),
        ({"max_completion_tokens": 200}, 200),
        ({"max_tokens": 300, "max_completion_tokens": 200}, 300),
    ],
    ids=["default", "max_tokens", "max_completion_tokens", "both"],
)
def test_max_tokens(fields: dict[str, int], expected: int) -> None:
    """max_tokens is required upstream: the caller's, else max_completion_tokens, else 4096."""
    assert DEFAULT_MAX_TOKENS == 4096
    assert body_of(chat(user("hi"), **fields))["max_tokens"] == expected


def test_sampling_options_pass_through_including_zero() -> None:
    """temperature, top_p and top_k are sent as given; a temperature of 0 is kept."""
    body = body_of(chat(user("hi"), temperature=0, top_p=0.9, top_k=40))
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0, 0.9, 40)
    assert not {"temperature", "top_p", "top_k"} & set(body_of(chat(user("hi"))))


@pytest.mark.parametrize(
    ("stop", "expected"),
    [("END", ["END"]), (["END", "\n\n"], ["END", "\n\n"])],
    ids=["string", "list"],
)
def test_stop_becomes_stop_sequences(stop: str | list[str], expected: list[str]) -> None:
    """`stop` (a string or a list) becomes `stop_sequences` (always a list)."""
    body = body_of(chat(user("hi"), stop=stop))
    assert body["stop_sequences"] == expected
    assert "stop" not in body


def test_user_becomes_metadata_user_id() -> None:
    """OpenAI's `user` is sent as Anthropic's `metadata.user_id`."""
    assert body_of(chat(user("hi"), user="u-42"))["metadata"] == {"user_id": "u-42"}


WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


def test_tools_become_input_schema() -> None:
    """Function tools become name/description/input_schema; no parameters → an empty object."""
    bare = {"type": "function", "function": {"name": "now"}}
    body = body_of(chat(user("hi"), tools=[WEATHER_TOOL, bare]))
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        },
        {"name": "now", "description": "", "input_schema": {"type": "object", "properties": {}}},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather"},
        ),
    ],
    ids=["auto", "required", "none", "named"],
)
def test_tool_choice(choice: Any, expected: dict[str, str]) -> None:
    """tool_choice auto/required/none/named maps to auto/any/none/tool."""
    assert (
        body_of(chat(user("hi"), tools=[WEATHER_TOOL], tool_choice=choice))["tool_choice"]
        == expected
    )


def test_tool_choice_without_tools_is_not_sent() -> None:
    """A tool_choice with no tools is dropped (Anthropic rejects tool_choice without tools)."""
    body = body_of(chat(user("hi"), tool_choice="auto"))
    assert "tool_choice" not in body
    assert "tools" not in body


def tool_turn(arguments: str) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": arguments},
            }
        ],
    }


def test_assistant_tool_calls_become_tool_use_blocks() -> None:
    """An assistant turn's tool_calls become tool_use blocks after its text, arguments parsed."""
    body = body_of(chat(user("weather?"), tool_turn('{"location": "Paris"}')))
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [
            text("Let me look."),
            {
                "type": "tool_use",
                "id": "call_1",
                "name": "get_weather",
                "input": {"location": "Paris"},
            },
        ],
    }


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ("", {}),
        ('{"location": "Par', {"_raw": '{"location": "Par'}),
        ('{"t": NaN}', {"_raw": '{"t": NaN}'}),
        ('{"t": -Infinity}', {"_raw": '{"t": -Infinity}'}),
        ('{"t": "\\ud800"}', {"_raw": '{"t": "\\ud800"}'}),
    ],
    ids=["empty", "invalid-json", "nan", "infinity", "lone-surrogate"],
)
def test_tool_call_arguments_that_are_not_json(arguments: str, expected: dict[str, str]) -> None:
    """Empty arguments are an empty input; invalid JSON — and JSON that only Python reads
    (NaN, Infinity, an escaped lone surrogate), which no request body can carry — is
    kept whole under `_raw`, so the request can still be sent."""
    body = body_of(chat(user("weather?"), tool_turn(arguments)))
    assert body["messages"][1]["content"][1]["input"] == expected


@pytest.mark.parametrize("arguments", ["[1, 2]", '"Paris"', "42", "null"])
def test_tool_use_input_is_always_an_object(arguments: str) -> None:
    """Arguments that are valid JSON but not an object still give an object `input`."""
    sent = body_of(chat(user("weather?"), tool_turn(arguments)))["messages"][1]["content"][1]
    # Anthropic's tool_use.input must be an object; a list or scalar gets a 400 that
    # oswitch would return to the caller as InvalidRequest for a request that is fine.
    assert isinstance(sent["input"], dict), (
        f"BUG: arguments {arguments!r} became tool_use.input {sent['input']!r}; "
        "Anthropic requires an object (expected e.g. {'_raw': ...})"
    )


def test_tool_results_become_tool_result_blocks_in_one_user_turn() -> None:
    """Consecutive tool results become tool_result blocks in one user turn, before any text."""
    body = body_of(
        chat(
            user("weather in Paris and Rome?"),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    },
                    {
                        "id": "b",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "a", "content": "18C"},
            {"role": "tool", "tool_call_id": "b", "content": [text("21"), text("C")]},
            user("and tomorrow?"),
        )
    )
    assert [turn["role"] for turn in body["messages"]] == ["user", "assistant", "user"]
    assert [block["type"] for block in body["messages"][1]["content"]] == ["tool_use", "tool_use"]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "a", "content": "18C"},
        {"type": "tool_result", "tool_use_id": "b", "content": "21C"},
        text("and tomorrow?"),
    ]


def test_images_data_url_and_http_url() -> None:
    """A data: URL image becomes a base64 source with its media type; an http URL a url source."""
    body = body_of(
        chat(
            user(
                [
                    text("What is in these?"),
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"},
                    },
                ]
            )
        )
    )
    assert body["messages"][0]["content"] == [
        text("What is in these?"),
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_request_is_not_mutated() -> None:
    """Translating a request leaves the caller's dict as it was."""
    request = chat(
        {"role": "system", "content": "s"}, user("hi"), tool_turn("{}"), oswitch={"x": 1}, stop="E"
    )
    before = json.dumps(request, sort_keys=True)
    body_of(request, stream=True)
    assert json.dumps(request, sort_keys=True) == before


# ---- replies -------------------------------------------------------------------------

# Shaped after the Messages API reference's example response
# (https://docs.anthropic.com/en/api/messages, "Response").
TEXT_REPLY: dict[str, Any] = {
    "content": [{"text": "Hi! My name is Claude.", "type": "text"}],
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "model": "claude-3-7-sonnet-20250219",
    "role": "assistant",
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "type": "message",
    "usage": {"input_tokens": 2095, "output_tokens": 503},
}

# Shaped after "How to implement tool use" (https://docs.anthropic.com/en/docs/agents-and-tools/tool-use/implement-tool-use).
TOOL_REPLY: dict[str, Any] = {
    "id": "msg_01Aq9w938a90dw8q",
    "model": "claude-3-7-sonnet-20250219",
    "stop_reason": "tool_use",
    "role": "assistant",
    "content": [
        {"type": "text", "text": "I'll check the current weather in San Francisco for you."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"location": "San Francisco, CA", "unit": "celsius"},
        },
    ],
    "usage": {"input_tokens": 400, "output_tokens": 60},
}


def test_text_reply() -> None:
    """A text reply becomes an OpenAI chat.completion with its id, model, finish and usage."""
    reply = ADAPTER.parse_reply(TEXT_REPLY, model="claude-requested")
    assert reply["id"] == "msg_013Zva2CMHLNnXjNJJKqJ2EF"
    assert reply["object"] == "chat.completion"
    assert reply["model"] == "claude-3-7-sonnet-20250219"
    assert reply["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi! My name is Claude."},
            "finish_reason": "stop",
        }
    ]
    assert reply["usage"] == {"prompt_tokens": 2095, "completion_tokens": 503, "total_tokens": 2598}


def test_text_blocks_are_joined() -> None:
    """Several text blocks are joined into one content string, in order."""
    payload = dict(
        TEXT_REPLY, content=[text("Hello"), {"type": "thinking", "thinking": "x"}, text(", world")]
    )
    assert (
        ADAPTER.parse_reply(payload, model="m")["choices"][0]["message"]["content"]
        == "Hello, world"
    )


def test_tool_use_reply() -> None:
    """tool_use blocks become tool_calls with JSON-string arguments; finish is tool_calls."""
    reply = ADAPTER.parse_reply(TOOL_REPLY, model="m")
    message = reply["choices"][0]["message"]
    assert message["content"] == "I'll check the current weather in San Francisco for you."
    (call,) = message["tool_calls"]
    assert (call["id"], call["type"], call["function"]["name"]) == (
        "toolu_01A09q90qw90lq917835lq9",
        "function",
        "get_weather",
    )
    assert json.loads(call["function"]["arguments"]) == {
        "location": "San Francisco, CA",
        "unit": "celsius",
    }
    assert reply["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_only_reply_has_null_content() -> None:
    """A reply with only a tool call has content None, as OpenAI's do."""
    payload = dict(TOOL_REPLY, content=TOOL_REPLY["content"][1:])
    assert ADAPTER.parse_reply(payload, model="m")["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reason_becomes_finish_reason(stop_reason: str, finish_reason: str) -> None:
    """Each Anthropic stop_reason maps to the OpenAI finish_reason of the same meaning."""
    payload = dict(TEXT_REPLY, stop_reason=stop_reason)
    assert ADAPTER.parse_reply(payload, model="m")["choices"][0]["finish_reason"] == finish_reason


def test_missing_model_and_usage() -> None:
    """Without a model the served one is reported; without usage the counts are zero."""
    payload = {"content": [text("ok")], "stop_reason": "end_turn"}
    reply = ADAPTER.parse_reply(payload, model="claude-served")
    assert reply["model"] == "claude-served"
    assert reply["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([TEXT_REPLY], "reply is not a JSON object (got list)"),
        ("Overloaded", "reply is not a JSON object (got str)"),
        ({"id": "msg_1", "type": "message"}, "content: missing or not a list"),
        (dict(TEXT_REPLY, content="Hi"), "content: missing or not a list"),
        (dict(TEXT_REPLY, content=[text("a"), "b"]), "content[1]: not an object"),
    ],
    ids=["list", "string", "no-content", "content-string", "block-not-object"],
)
def test_malformed_reply_names_the_field(payload: object, message: str) -> None:
    """A 2xx body that is not a Messages reply raises MalformedReply naming what is wrong."""
    with pytest.raises(MalformedReply) as caught:
        ADAPTER.parse_reply(payload, model="m")
    assert str(caught.value) == message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    usage=json_values,
    stop_reason=json_values,
    block=st.dictionaries(
        st.sampled_from(["type", "text", "id", "name", "input"]), json_values, max_size=5
    ),
)
@example(usage="x", stop_reason="end_turn", block={"type": "text", "text": "hi"})
@example(usage={"input_tokens": "many"}, stop_reason="end_turn", block={"type": "text"})
def test_parse_reply_raises_only_malformed_reply(
    usage: Any, stop_reason: Any, block: dict[str, Any]
) -> None:
    """Whatever a 2xx body holds, parse_reply returns a reply or raises MalformedReply."""
    payload = {"content": [block], "stop_reason": stop_reason, "usage": usage}
    try:
        ADAPTER.parse_reply(payload, model="m")
    except MalformedReply:
        pass
    except Exception as exc:
        # Anything else escapes the engine's handling: in a non-streamed attempt it
        # crashes the target's actor task and with it the whole switcher.
        pytest.fail(
            f"BUG: parse_reply({payload!r}) raised {type(exc).__name__}: {exc}; "
            "expected a reply or MalformedReply"
        )


# ---- the stream decoder ----------------------------------------------------------------

# "Basic streaming request", example response — verbatim.
BASIC_STREAM = """
event: message_start
data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-3-7-sonnet-20250219", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, "usage": {"output_tokens": 15}}

event: message_stop
data: {"type": "message_stop"}
"""

# "Streaming request with tool use", response — verbatim.
TOOL_USE_STREAM = r"""
event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-3-haiku-20240307","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":","}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" let"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"'s"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" check"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" the"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" weather"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" for"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" San"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" Francisco"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":","}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" CA"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":":"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" Francisc"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"o,"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" CA\""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":", "}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"unit\": \"fah"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"renheit\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}
"""

# "Streaming request with extended thinking", response — verbatim.
THINKING_STREAM = r"""
event: message_start
data: {"type": "message_start", "message": {"id": "msg_01...", "type": "message", "role": "assistant", "content": [], "model": "claude-3-7-sonnet-20250219", "stop_reason": null, "stop_sequence": null}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me solve this step by step:\n\n1. First break down 27 * 453"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "\n2. 453 = 400 + 50 + 3"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "\n3. 27 * 400 = 10,800"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "\n4. 27 * 50 = 1,350"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "\n5. 27 * 3 = 81"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "\n6. 10,800 + 1,350 + 81 = 12,231"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds..."}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: content_block_start
data: {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "27 * 453 = 12,231"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 1}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}}

event: message_stop
data: {"type": "message_stop"}
"""


def test_basic_stream_becomes_openai_chunks() -> None:
    """Anthropic's documented basic stream becomes a role chunk, two deltas and a final chunk."""
    decoder, fed = replay(BASIC_STREAM)
    assert [(name, len(chunks)) for name, chunks in fed] == [
        ("message_start", 1),
        ("content_block_start", 0),
        ("ping", 0),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 0),
        ("message_delta", 0),
        ("message_stop", 1),
    ]
    chunks = [chunk for _, produced in fed for chunk in produced]
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Hello"},
        {"content": "!"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert {c["id"] for c in chunks} == {"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["model"] for c in chunks} == {"claude-3-7-sonnet-20250219"}
    assert len({c["created"] for c in chunks}) == 1
    assert all(c["choices"][0]["index"] == 0 for c in chunks)
    assert chunks[-1]["usage"] == {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}
    assert all("usage" not in c for c in chunks[:-1])
    assert decoder.finished


def test_tool_use_stream_becomes_tool_call_deltas() -> None:
    """The documented tool-use stream: text deltas, then one tool call streamed as OpenAI does."""
    decoder, fed = replay(TOOL_USE_STREAM)
    streamed = deltas(fed)
    assert streamed[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content") or "" for d in streamed) == (
        "Okay, let's check the weather for San Francisco, CA:"
    )
    calls = [d["tool_calls"] for d in streamed if "tool_calls" in d]
    assert all(len(call) == 1 for call in calls)
    first, *rest = (call[0] for call in calls)
    assert first == {
        "index": 0,
        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert len(rest) == 9  # one per input_json_delta, the empty first one included
    assert all(set(call) == {"index", "function"} and call["index"] == 0 for call in rest)
    arguments = "".join(call["function"]["arguments"] for call in rest)
    assert json.loads(arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    final = fed[-1][1][0]
    assert final["choices"][0]["finish_reason"] == "tool_calls"
    assert final["usage"] == {"prompt_tokens": 472, "completion_tokens": 89, "total_tokens": 561}
    assert final["id"] == "msg_014p7gG3wDgGV9EUtLvnow3U"
    assert final["model"] == "claude-3-haiku-20240307"
    assert decoder.finished


def test_thinking_deltas_are_not_part_of_the_answer() -> None:
    """Thinking and signature deltas give no chunk; only the text block reaches the caller."""
    decoder, fed = replay(THINKING_STREAM)
    streamed = deltas(fed)
    assert streamed == [
        {"role": "assistant", "content": ""},
        {"content": "27 * 453 = 12,231"},
        {},
    ]
    assert fed[-1][1][0]["choices"][0]["finish_reason"] == "stop"
    assert decoder.finished


def test_two_tool_calls_get_their_own_indexes() -> None:
    """Each tool_use block is its own OpenAI tool call index; deltas go to their block's call."""
    decoder = AnthropicStreamDecoder(model="m")
    start = {
        "type": "message_start",
        "message": {"id": "msg_2", "model": "m", "usage": {"input_tokens": 1}},
    }
    decoder.feed("message_start", json.dumps(start))

    def block_start(index: int, tool_id: str) -> list[dict[str, Any]]:
        block = {"type": "tool_use", "id": tool_id, "name": "get_weather", "input": {}}
        data = {"type": "content_block_start", "index": index, "content_block": block}
        return decoder.feed("content_block_start", json.dumps(data))

    def arguments(index: int, partial: str) -> dict[str, Any]:
        delta = {"type": "input_json_delta", "partial_json": partial}
        data = {"type": "content_block_delta", "index": index, "delta": delta}
        (chunk,) = decoder.feed("content_block_delta", json.dumps(data))
        call: dict[str, Any] = chunk["choices"][0]["delta"]["tool_calls"][0]
        return call

    assert block_start(1, "toolu_a")[0]["choices"][0]["delta"]["tool_calls"][0]["index"] == 0
    assert arguments(1, '{"location": "Paris"}') == {
        "index": 0,
        "function": {"arguments": '{"location": "Paris"}'},
    }
    assert block_start(2, "toolu_b")[0]["choices"][0]["delta"]["tool_calls"][0]["index"] == 1
    assert arguments(2, "{}")["index"] == 1


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        (None, "stop"),
    ],
)
def test_stream_finish_reason(stop_reason: str | None, finish_reason: str) -> None:
    """message_delta's stop_reason becomes the final chunk's finish_reason."""
    decoder = AnthropicStreamDecoder(model="m")
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason},
        "usage": {"output_tokens": 3},
    }
    assert decoder.feed("message_delta", json.dumps(delta)) == []
    (final,) = decoder.feed("message_stop", '{"type": "message_stop"}')
    assert final["choices"][0]["finish_reason"] == finish_reason
    assert final["usage"]["completion_tokens"] == 3


def test_event_name_may_come_from_the_payload_type() -> None:
    """Without an `event:` line the payload's `type` decides (as some proxies send it)."""
    decoder = AnthropicStreamDecoder(model="m")
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "hi"},
    }
    (chunk,) = decoder.feed("", json.dumps(delta))
    assert chunk["choices"][0]["delta"] == {"content": "hi"}
    decoder.feed("", '{"type": "message_stop"}')
    assert decoder.finished


def test_unknown_event_types_are_ignored() -> None:
    """New event types give no chunk and no fault (Anthropic: "handle unknown event types gracefully")."""
    decoder = AnthropicStreamDecoder(model="m")
    assert (
        decoder.feed("content_block_whatever", '{"type": "content_block_whatever", "index": 0}')
        == []
    )
    assert decoder.feed("ping", "") == []
    assert not decoder.finished


def test_model_from_message_start_else_the_served_one() -> None:
    """Chunks name message_start's model, or the model oswitch sent when it has none."""
    decoder = AnthropicStreamDecoder(model="claude-served")
    (role,) = decoder.feed("message_start", '{"type": "message_start", "message": {"id": "msg_9"}}')
    assert (role["id"], role["model"]) == ("msg_9", "claude-served")


# Error bodies: the "Error events" example, and the same shape as sent by the API for
# other types (tests/classify_corpus.py: claude-code#35792, mycoder#62, claude-code#47468).
ERROR_EVENTS = [
    (
        '{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}',
        ErrorClass.MODEL_UNAVAILABLE,
        "Overloaded",
    ),
    (
        '{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed the rate limit for your organization (d3f27ff7-9afe-4ee2-9645-76ecfc73c2b7) of 40,000 input tokens per minute. For details, refer to: https://docs.anthropic.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later. You may also contact sales at https://www.anthropic.com/contact-sales to discuss your options for a rate limit increase."}}',
        ErrorClass.RATE_LIMITED,
        "This request would exceed the rate limit",
    ),
    (
        '{"type":"error","error":{"type":"api_error","message":"Internal server error"},"request_id":"req_011Ca226V2FyPmavY6LzfnAy"}',
        ErrorClass.TRANSIENT_SERVER_FAILURE,
        "Internal server error",
    ),
]


@pytest.mark.parametrize(
    ("data", "error_class", "message"), ERROR_EVENTS, ids=["overloaded", "rate-limit", "api-error"]
)
def test_error_event_is_a_classified_stream_fault(
    data: str, error_class: ErrorClass, message: str
) -> None:
    """An `error` event, even after content, raises StreamFault classified by its error type."""
    decoder = AnthropicStreamDecoder(model="m")
    decoder.feed("message_start", '{"type": "message_start", "message": {"id": "msg_1"}}')
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "Half"},
    }
    decoder.feed("content_block_delta", json.dumps(delta))
    with pytest.raises(StreamFault) as caught:
        decoder.feed("error", data)
    assert caught.value.classification.error_class is error_class
    assert caught.value.classification.message.startswith(message)
    assert str(caught.value).startswith(message)
    assert not decoder.finished


@pytest.mark.parametrize(
    "data",
    ['{"type": "content_block_delta", "index": 0, "delta": {"type": "text_de', "[1, 2]", '"ping"'],
    ids=["cut-json", "array", "string"],
)
def test_malformed_event_is_a_transient_fault(data: str) -> None:
    """Data that is not a JSON object raises StreamFault(TransientServerFailure)."""
    decoder = AnthropicStreamDecoder(model="m")
    with pytest.raises(StreamFault) as caught:
        decoder.feed("content_block_delta", data)
    assert caught.value.classification.error_class is ErrorClass.TRANSIENT_SERVER_FAILURE
    assert caught.value.classification.message.startswith("malformed stream chunk: not ")


KINDS = [
    "message_start",
    "content_block_start",
    "content_block_delta",
    "message_delta",
    "message_stop",
]


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    fields=st.dictionaries(
        st.sampled_from(["message", "content_block", "delta", "index", "usage"]),
        json_values,
        max_size=4,
    ),
)
@example(kind="content_block_delta", fields={"index": 0, "delta": "oops"})
@example(kind="message_start", fields={"message": "msg_1"})
@example(kind="message_delta", fields={"usage": {"output_tokens": "many"}})
@example(kind="content_block_delta", fields={"index": "a", "delta": {"type": "input_json_delta"}})
def test_any_json_event_gives_chunks_or_a_stream_fault(kind: str, fields: dict[str, Any]) -> None:
    """Whatever a JSON event holds, feed returns chunks or raises StreamFault, nothing else."""
    data = json.dumps({"type": kind, **fields})
    try:
        AnthropicStreamDecoder(model="m").feed(kind, data)
    except StreamFault:
        pass
    except Exception as exc:
        # The engine turns only StreamFault into failover/resume; anything else reaches
        # the caller raw (after content) or aborts the request (before content).
        pytest.fail(
            f"BUG: feed({kind!r}, {data!r}) raised {type(exc).__name__}: {exc}; "
            "the StreamDecoder contract allows only StreamFault (a malformed chunk)"
        )


# ---- field types: a reply or event with a wrong-typed field is never passed on ---------


def with_field(payload: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``payload`` with the field at dotted ``path`` (numbers index
    lists) set to ``value``."""
    copy = json.loads(json.dumps(payload))
    *parents, last = path.split(".")
    node: Any = copy
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(last) if last.isdigit() else last] = value
    return copy


@pytest.mark.parametrize(
    ("base", "path", "value", "message"),
    [
        (TEXT_REPLY, "content.0.text", 42, "content[0].text: not a string (got a number)"),
        (TEXT_REPLY, "content.0.type", ["text"], "content[0].type: not a string (got an array)"),
        (TOOL_REPLY, "content.1.name", None, "content[1].name: not a string (got null)"),
        (TOOL_REPLY, "content.1.name", 1, "content[1].name: not a string (got a number)"),
        (TOOL_REPLY, "content.1.id", 1, "content[1].id: not a string (got a number)"),
        (
            TOOL_REPLY,
            "content.1.input",
            '{"location": "SF"}',
            "content[1].input: not an object (got a string)",
        ),
        (TEXT_REPLY, "usage", "2095", "usage: not an object (got a string)"),
        (
            TEXT_REPLY,
            "usage.input_tokens",
            "2095",
            "usage.input_tokens: not a count (got a string)",
        ),
        (TEXT_REPLY, "usage.output_tokens", 1.5, "usage.output_tokens: not a count (got a number)"),
        (
            TEXT_REPLY,
            "stop_reason",
            {"type": "end_turn"},
            "stop_reason: not a string (got an object)",
        ),
        (TEXT_REPLY, "id", 7, "id: not a string (got a number)"),
        (TEXT_REPLY, "model", ["claude"], "model: not a string (got an array)"),
    ],
    ids=[
        "text-number",
        "type-array",
        "tool-name-missing",
        "tool-name-number",
        "tool-id-number",
        "tool-input-string",
        "usage-string",
        "input-tokens-string",
        "output-tokens-float",
        "stop-reason-object",
        "id-number",
        "model-array",
    ],
)
def test_a_reply_field_of_the_wrong_type_is_a_malformed_reply(
    base: dict[str, Any], path: str, value: Any, message: str
) -> None:
    """A Messages reply whose field has the wrong type raises MalformedReply naming the
    field, instead of being coerced (str(42), int("2095")) into an answer."""
    with pytest.raises(MalformedReply) as caught:
        ADAPTER.parse_reply(with_field(base, path, value), model="m")
    assert str(caught.value) == message


def test_tool_input_with_nan_is_a_malformed_reply() -> None:
    """Tool input holding NaN (which Python's JSON parser accepts) cannot be sent on as
    JSON arguments: a malformed reply."""
    with pytest.raises(MalformedReply):
        ADAPTER.parse_reply(with_field(TOOL_REPLY, "content.1.input", {"x": math.nan}), model="m")


@pytest.mark.parametrize(
    ("kind", "payload", "reason"),
    [
        ("message_start", {"message": {"id": 1}}, "message.id: not a string (got a number)"),
        ("message_start", {"message": {"model": 1}}, "message.model: not a string (got a number)"),
        (
            "message_start",
            {"message": {"usage": "x"}},
            "message.usage: not an object (got a string)",
        ),
        (
            "message_start",
            {"message": {"usage": {"input_tokens": "9"}}},
            "message.usage.input_tokens: not a count (got a string)",
        ),
        (
            "content_block_start",
            {"index": 0, "content_block": "text"},
            "content_block: not an object (got a string)",
        ),
        (
            "content_block_start",
            {"index": 0, "content_block": {"type": "text", "text": 5}},
            "content_block.text: not a string (got a number)",
        ),
        (
            "content_block_start",
            {"index": "1", "content_block": {"type": "tool_use", "id": "t", "name": "f"}},
            "index: not a count (got a string)",
        ),
        (
            "content_block_start",
            {"index": 1, "content_block": {"type": "tool_use", "id": "t"}},
            "content_block.name: not a string (got null)",
        ),
        (
            "content_block_start",
            {"index": 1, "content_block": {"type": "tool_use", "id": 2, "name": "f"}},
            "content_block.id: not a string (got a number)",
        ),
        (
            "content_block_delta",
            {"index": 0, "delta": ["text_delta"]},
            "delta: not an object (got an array)",
        ),
        (
            "content_block_delta",
            {"index": 0, "delta": {"type": "text_delta", "text": 42}},
            "delta.text: not a string (got a number)",
        ),
        (
            "content_block_delta",
            {"index": 0, "delta": {"type": "input_json_delta", "partial_json": {}}},
            "delta.partial_json: not a string (got an object)",
        ),
        (
            "content_block_delta",
            {"index": -1, "delta": {"type": "input_json_delta", "partial_json": ""}},
            "index: not a count (got a number)",
        ),
        (
            "message_delta",
            {"delta": {"stop_reason": 1}},
            "delta.stop_reason: not a string (got a number)",
        ),
        ("message_delta", {"delta": {}, "usage": "x"}, "usage: not an object (got a string)"),
        (
            "message_delta",
            {"delta": {}, "usage": {"output_tokens": "9"}},
            "usage.output_tokens: not a count (got a string)",
        ),
    ],
    ids=[
        "start-id-number",
        "start-model-number",
        "start-usage-string",
        "start-input-tokens-string",
        "block-string",
        "block-text-number",
        "block-index-string",
        "tool-name-missing",
        "tool-id-number",
        "delta-array",
        "text-number",
        "partial-json-object",
        "index-negative",
        "stop-reason-number",
        "usage-string",
        "output-tokens-string",
    ],
)
def test_an_event_field_of_the_wrong_type_is_a_malformed_chunk(
    kind: str, payload: dict[str, Any], reason: str
) -> None:
    """A stream event whose field has the wrong type raises StreamFault
    (TransientServerFailure) naming the event and the field, never a coerced chunk."""
    decoder = AnthropicStreamDecoder(model="m")
    with pytest.raises(StreamFault) as caught:
        decoder.feed(kind, json.dumps({"type": kind, **payload}))
    classification = caught.value.classification
    assert classification.error_class is ErrorClass.TRANSIENT_SERVER_FAILURE
    assert classification.message == f"malformed stream chunk: {kind}: {reason}"
