"""Server-sent events as OpenAI and Anthropic stream them: content, pings, errors, ends.

Each builder returns the whole event list with the span of it that carries content,
so the player can count content chunks without knowing either wire layout.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

ScriptedEvents = tuple[list[bytes], range]  # every event, and which of them carry content


def sse(data: str, event: str | None = None) -> bytes:
    """One SSE event: an optional ``event:`` line, one ``data:`` line, a blank line."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


def _anthropic(kind: str, payload: Mapping[str, Any]) -> bytes:
    return sse(json.dumps({"type": kind, **payload}), kind)


def openai_events(
    pieces: list[str], *, model: str, tool_call: Mapping[str, str] | None
) -> ScriptedEvents:
    """Chat-completion chunks: a role chunk, the pieces (as content, or as the
    arguments of one tool call), and a finish chunk."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse(
            json.dumps(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
            )
        )

    events = [chunk({"role": "assistant", "content": ""})]
    if tool_call is not None:
        events.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_fake",
                            "type": "function",
                            "function": {"name": tool_call["name"], "arguments": ""},
                        }
                    ]
                }
            )
        )
        first = len(events)
        for piece in pieces:
            events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        events.append(chunk({}, "tool_calls"))
    else:
        first = len(events)
        events.extend(chunk({"content": piece}) for piece in pieces)
        events.append(chunk({}, "stop"))
    return events, range(first, first + len(pieces))


def anthropic_events(
    pieces: list[str], *, model: str, tool_call: Mapping[str, str] | None
) -> ScriptedEvents:
    """Messages-API events: message_start, one content block (text, or a tool_use
    whose input JSON is the pieces), content_block_stop and message_delta."""
    events = [
        _anthropic(
            "message_start",
            {
                "message": {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "usage": {"input_tokens": 10, "output_tokens": 1},
                }
            },
        )
    ]
    if tool_call is not None:
        block: dict[str, Any] = {
            "type": "tool_use",
            "id": "toolu_fake",
            "name": tool_call["name"],
            "input": {},
        }
        delta_type, delta_key, stop_reason = "input_json_delta", "partial_json", "tool_use"
    else:
        block = {"type": "text", "text": ""}
        delta_type, delta_key, stop_reason = "text_delta", "text", "end_turn"
    events.append(_anthropic("content_block_start", {"index": 0, "content_block": block}))
    first = len(events)
    for piece in pieces:
        events.append(
            _anthropic(
                "content_block_delta",
                {"index": 0, "delta": {"type": delta_type, delta_key: piece}},
            )
        )
    events.append(_anthropic("content_block_stop", {"index": 0}))
    events.append(
        _anthropic(
            "message_delta",
            {
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": len(pieces)},
            },
        )
    )
    return events, range(first, first + len(pieces))


def ping(api: str) -> bytes:
    """A keep-alive: Anthropic's ``ping`` event, or an SSE comment for OpenAI."""
    return sse('{"type": "ping"}', "ping") if api == "anthropic" else b": ping\n\n"


def error_event(api: str, error_type: str) -> bytes:
    """A provider error sent inside the stream, after a 200."""
    if api == "anthropic":
        return sse(
            json.dumps({"type": "error", "error": {"type": error_type, "message": "Overloaded"}}),
            "error",
        )
    return sse(
        json.dumps(
            {"error": {"message": "The server had an error", "type": "server_error", "code": None}}
        )
    )


def terminator(api: str) -> bytes:
    """The stream's clean end: ``[DONE]`` for OpenAI, ``message_stop`` for Anthropic."""
    if api == "openai":
        return sse("[DONE]")
    return sse('{"type": "message_stop"}', "message_stop")
