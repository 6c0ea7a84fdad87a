"""Anthropic Messages (``/v1/messages``) behind the OpenAI chat-completions shape.

Requests are translated from OpenAI's shape (system messages, user/assistant
turns, tool calls and tool results, images, sampling options) and replies and
every SSE event type back into OpenAI chat.completion / chunk dicts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from oswitch.core.classify import classify_stream_error
from oswitch.providers.base import MalformedReply, StreamFault, UpstreamCall
from oswitch.providers.openai import OSWITCH_REQUEST_KEYS, malformed_chunk

ANTHROPIC_VERSION = "2023-06-01"
# Anthropic requires max_tokens; OpenAI callers often leave it out.
DEFAULT_MAX_TOKENS = 4096

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "input_text")
        )
    return ""


def _image_block(part: Mapping[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url", "") if isinstance(image, dict) else str(image or "")
    if url.startswith("data:") and ";base64," in url:
        media_type, _, data = url[5:].partition(";base64,")
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _content_blocks(content: object) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind in ("text", "input_text") and part.get("text"):
                blocks.append({"type": "text", "text": str(part["text"])})
            elif kind in ("image_url", "image"):
                blocks.append(_image_block(part))
    return blocks


def _tool_arguments(raw: object) -> dict[str, Any]:
    """A tool call's arguments as the object Anthropic's ``tool_use.input`` must be."""
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str) or not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {"_raw": raw}
    return parsed if isinstance(parsed, dict) else {"_raw": raw}


def translate_messages(
    messages: list[Any],
) -> tuple[str | None, list[dict[str, Any]]]:
    """OpenAI messages → Anthropic ``(system, messages)``, merging same-role turns."""
    system_parts: list[str] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": list(blocks)})

    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            text = _text_of(content)
            if text:
                system_parts.append(text)
        elif role == "user":
            add("user", _content_blocks(content))
        elif role == "assistant":
            blocks = _content_blocks(content)
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": str(call.get("id", "")),
                        "name": str(function.get("name", "")),
                        "input": _tool_arguments(function.get("arguments")),
                    }
                )
            add("assistant", blocks)
        elif role == "tool":
            add(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": str(message.get("tool_call_id", "")),
                        "content": _text_of(content) if not isinstance(content, str) else content,
                    }
                ],
            )
    return ("\n\n".join(system_parts) or None), turns


def _tool_choice(choice: object) -> dict[str, Any] | None:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if name:
            return {"type": "tool", "name": name}
    return None


def _prompt_tokens(usage: Mapping[str, Any]) -> int:
    """Anthropic counts cached prompt tokens apart; OpenAI's prompt_tokens includes them."""
    return sum(
        int(usage.get(name) or 0)
        for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }


class AnthropicStreamDecoder:
    """Anthropic's SSE event types → OpenAI ``chat.completion.chunk`` dicts."""

    def __init__(self, *, model: str) -> None:
        self.model = model
        self.finished = False
        self._id = "msg"
        self._created = int(time.time())
        self._input_tokens = 0
        self._output_tokens = 0
        self._stop_reason: str | None = None
        self._tool_index_of_block: dict[int, int] = {}

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    def feed(self, event: str, data: str) -> list[dict[str, Any]]:
        try:
            return self._feed(event, data)
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
            # A field of the wrong type somewhere in the event: a malformed chunk.
            raise malformed_chunk(f"{event or 'event'}: {type(exc).__name__}: {exc}") from exc

    def _feed(self, event: str, data: str) -> list[dict[str, Any]]:
        try:
            payload = json.loads(data) if data else {}
        except ValueError:
            raise malformed_chunk(f"not JSON: {data[:80]!r}") from None
        if not isinstance(payload, dict):
            raise malformed_chunk(f"not an object: {data[:80]!r}")
        kind = event or str(payload.get("type", ""))
        if kind == "error":
            raise StreamFault(classify_stream_error(payload))
        if kind == "message_start":
            message = payload.get("message") or {}
            self._id = str(message.get("id") or self._id)
            self.model = str(message.get("model") or self.model)
            self._input_tokens = _prompt_tokens(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = payload.get("content_block") or {}
            if block.get("type") == "tool_use":
                tool_index = len(self._tool_index_of_block)
                self._tool_index_of_block[int(payload.get("index", 0))] = tool_index
                call = {
                    "index": tool_index,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return [self._chunk({"tool_calls": [call]})]
            text = block.get("text")
            return [self._chunk({"content": text})] if text else []
        if kind == "content_block_delta":
            delta = payload.get("delta") or {}
            delta_type = delta.get("type")
            if delta_type == "text_delta":
                return [self._chunk({"content": str(delta.get("text", ""))})]
            if delta_type == "input_json_delta":
                tool_index = self._tool_index_of_block.get(int(payload.get("index", 0)), 0)
                arguments = str(delta.get("partial_json", ""))
                call = {"index": tool_index, "function": {"arguments": arguments}}
                return [self._chunk({"tool_calls": [call]})]
            return []  # thinking and signature deltas are not part of the answer
        if kind == "message_delta":
            delta = payload.get("delta") or {}
            if delta.get("stop_reason"):
                self._stop_reason = str(delta["stop_reason"])
            usage = payload.get("usage") or {}
            self._output_tokens = int(usage.get("output_tokens") or self._output_tokens)
            return []
        if kind == "message_stop":
            self.finished = True
            final = self._chunk({}, FINISH_REASONS.get(self._stop_reason or "", "stop"))
            final["usage"] = _usage(self._input_tokens, self._output_tokens)
            return [final]
        return []  # ping, content_block_stop, and event types added later


class AnthropicAdapter:
    """POST ``{base_url}/messages`` with ``x-api-key`` and ``anthropic-version``."""

    api = "anthropic"

    def build_call(
        self,
        request: Mapping[str, Any],
        *,
        base_url: str,
        model: str,
        api_key: str | None,
        stream: bool,
    ) -> UpstreamCall:
        request = {k: v for k, v in request.items() if k not in OSWITCH_REQUEST_KEYS}
        system, messages = translate_messages(list(request.get("messages") or ()))
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": int(
                request.get("max_tokens")
                or request.get("max_completion_tokens")
                or DEFAULT_MAX_TOKENS
            ),
        }
        if system:
            body["system"] = system
        for name in ("temperature", "top_p", "top_k"):
            if request.get(name) is not None:
                body[name] = request[name]
        stop = request.get("stop")
        if stop:
            body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        tools = request.get("tools")
        if tools:
            body["tools"] = [
                {
                    "name": (tool.get("function") or {}).get("name"),
                    "description": (tool.get("function") or {}).get("description", ""),
                    "input_schema": (tool.get("function") or {}).get("parameters")
                    or {"type": "object", "properties": {}},
                }
                for tool in tools
                if isinstance(tool, dict)
            ]
            choice = _tool_choice(request.get("tool_choice"))
            if choice is not None:
                body["tool_choice"] = choice
        if isinstance(request.get("user"), str):
            body["metadata"] = {"user_id": request["user"]}
        headers = {
            "content-type": "application/json",
            "anthropic-version": ANTHROPIC_VERSION,
            "accept": "text/event-stream" if stream else "application/json",
        }
        if stream:
            body["stream"] = True
        if api_key:
            headers["x-api-key"] = api_key
        return UpstreamCall(url=base_url.rstrip("/") + "/messages", headers=headers, body=body)

    def parse_reply(self, payload: object, *, model: str) -> dict[str, Any]:
        try:
            return self._parse_reply(payload, model=model)
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
            if isinstance(exc, MalformedReply):
                raise
            raise MalformedReply(f"{type(exc).__name__}: {exc}") from exc

    def _parse_reply(self, payload: object, *, model: str) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise MalformedReply(f"reply is not a JSON object (got {type(payload).__name__})")
        content = payload.get("content")
        if not isinstance(content, list):
            raise MalformedReply("content: missing or not a list")
        texts: list[str] = []
        tool_calls: list[dict[str, Any]] = []
        for index, block in enumerate(content):
            if not isinstance(block, dict):
                raise MalformedReply(f"content[{index}]: not an object")
            if block.get("type") == "text":
                texts.append(str(block.get("text", "")))
            elif block.get("type") == "tool_use":
                tool_calls.append(
                    {
                        "id": block.get("id"),
                        "type": "function",
                        "function": {
                            "name": block.get("name"),
                            "arguments": json.dumps(block.get("input", {})),
                        },
                    }
                )
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        usage = payload.get("usage") or {}
        return {
            "id": str(payload.get("id", "msg")),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(payload.get("model") or model),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": FINISH_REASONS.get(str(payload.get("stop_reason")), "stop"),
                }
            ],
            "usage": _usage(_prompt_tokens(usage), int(usage.get("output_tokens") or 0)),
        }

    def stream_decoder(self, *, model: str) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder(model=model)
