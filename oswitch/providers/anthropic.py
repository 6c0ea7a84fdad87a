"""Anthropic Messages (``/v1/messages``) behind the OpenAI chat-completions shape.

Requests are translated from OpenAI's shape (system messages, user/assistant
turns, tool calls and tool results, images, sampling options) and replies and
every SSE event type back into OpenAI chat.completion / chunk dicts. A request that
arrived as Anthropic (oswitch.core.inbound) is sent as its caller sent it instead, and
its reply decoded ``native``: keeping what the OpenAI shape drops.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from oswitch.core.classify import classify_stream_error
from oswitch.core.inbound import (
    NATIVE_KEY,
    RAW_BLOCK_KEY,
    RAW_DELTA_KEY,
    RAW_STOP_KEY,
    original_of,
)
from oswitch.core.secret import Secret
from oswitch.providers.adapter import MalformedReply, StreamFault, UpstreamCall
from oswitch.providers.anthropic_original import ANTHROPIC_VERSION, original_call
from oswitch.providers.openai import OSWITCH_REQUEST_KEYS, excerpt, loads, malformed_chunk
from oswitch.providers.shape import get_count, get_object, get_str, wrong

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
        # The caller's arguments string may spell NaN or an escaped lone surrogate,
        # which json.loads accepts but no request body can carry: keep the text.
        json.dumps(parsed, ensure_ascii=False, allow_nan=False).encode()
    except (ValueError, RecursionError):
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


_PROMPT_COUNTS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def _prompt_tokens(usage: Mapping[str, Any], at: str) -> int:
    """Anthropic counts cached prompt tokens apart; OpenAI's prompt_tokens includes them."""
    return sum(get_count(usage, name, at) or 0 for name in _PROMPT_COUNTS)


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }


class AnthropicStreamDecoder:
    """Anthropic's SSE event types → OpenAI ``chat.completion.chunk`` dicts.

    Every field read from an event must have its type (a string ``text``, a count
    ``index``, an object ``delta``); an event with a wrong one is a malformed chunk.
    ``secrets`` are scrubbed from every fault's message before it is cut.
    """

    def __init__(self, *, model: str, secrets: Iterable[Secret] = (), native: bool = False) -> None:
        self.model = model
        self._secrets = secrets
        # For a request that arrived as Anthropic: thinking deltas, the message's own
        # id and usage and the exact stop reason are kept (oswitch.core.inbound).
        self._native = native
        self._native_usage: dict[str, Any] = {}
        self._stop_sequence: str | None = None
        self._raw_blocks: set[int] = set()  # indices of blocks carried as sent
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
        except MalformedReply as exc:
            raise malformed_chunk(f"{event or 'event'}: {exc}") from exc
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
            # A shape no check foresaw: a malformed chunk (named by type, not quoted).
            raise malformed_chunk(f"{event or 'event'}: {type(exc).__name__}") from exc

    def _feed(self, event: str, data: str) -> list[dict[str, Any]]:
        payload = loads(data, self._secrets) if data else {}
        if not isinstance(payload, dict):
            raise malformed_chunk(f"not an object: {excerpt(data, self._secrets)}")
        kind = event or get_str(payload, "type", "") or ""
        if kind == "error":
            raise StreamFault(classify_stream_error(payload, secrets=self._secrets))
        if kind == "message_start":
            message = get_object(payload, "message", "") or {}
            self._id = get_str(message, "id", "message") or self._id
            self.model = get_str(message, "model", "message") or self.model
            usage = get_object(message, "usage", "message") or {}
            self._input_tokens = _prompt_tokens(usage, "message.usage")
            first = self._chunk({"role": "assistant", "content": ""})
            if self._native:
                self._native_usage = dict(usage)
                first[NATIVE_KEY] = {"message": message}
            return [first]
        if kind == "content_block_start":
            block = get_object(payload, "content_block", "") or {}
            if get_str(block, "type", "content_block") == "tool_use":
                name = get_str(block, "name", "content_block")
                if name is None:
                    raise wrong("content_block.name", "a string", None)
                tool_index = len(self._tool_index_of_block)
                self._tool_index_of_block[get_count(payload, "index", "") or 0] = tool_index
                call = {
                    "index": tool_index,
                    "id": get_str(block, "id", "content_block"),
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
                return [self._chunk({"tool_calls": [call]})]
            block_type = get_str(block, "type", "content_block")
            if self._native and block_type == "redacted_thinking":
                data = get_str(block, "data", "content_block") or ""
                return [self._chunk({"redacted_thinking": data})]
            if self._native and block_type not in ("text", "thinking"):
                # server_tool_use, web_search_tool_result, …: carried as sent.
                self._raw_blocks.add(get_count(payload, "index", "") or 0)
                return [self._chunk({RAW_BLOCK_KEY: block})]
            text = get_str(block, "text", "content_block")
            return [self._chunk({"content": text})] if text else []
        if kind == "content_block_delta":
            delta = get_object(payload, "delta", "") or {}
            delta_type = get_str(delta, "type", "delta")
            if self._native and (get_count(payload, "index", "") or 0) in self._raw_blocks:
                return [self._chunk({RAW_DELTA_KEY: delta})]
            if delta_type == "text_delta":
                return [self._chunk({"content": get_str(delta, "text", "delta") or ""})]
            if delta_type == "input_json_delta":
                block_index = get_count(payload, "index", "") or 0
                tool_index = self._tool_index_of_block.get(block_index, 0)
                arguments = get_str(delta, "partial_json", "delta") or ""
                call = {"index": tool_index, "function": {"arguments": arguments}}
                return [self._chunk({"tool_calls": [call]})]
            if self._native and delta_type == "thinking_delta":
                return [self._chunk({"thinking": get_str(delta, "thinking", "delta") or ""})]
            if self._native and delta_type == "signature_delta":
                return [self._chunk({"signature": get_str(delta, "signature", "delta") or ""})]
            if self._native:
                return [self._chunk({RAW_DELTA_KEY: delta})]  # citations_delta, …
            return []  # thinking and signature deltas are not part of an OpenAI answer
        if kind == "message_delta":
            delta = get_object(payload, "delta", "") or {}
            stop_reason = get_str(delta, "stop_reason", "delta")
            if stop_reason:
                self._stop_reason = stop_reason
            usage = get_object(payload, "usage", "") or {}
            self._output_tokens = get_count(usage, "output_tokens", "usage") or self._output_tokens
            if self._native:
                self._stop_sequence = get_str(delta, "stop_sequence", "delta")
                self._native_usage.update(usage)
            return []
        if kind == "message_stop":
            self.finished = True
            final = self._chunk({}, FINISH_REASONS.get(self._stop_reason or "", "stop"))
            final["usage"] = _usage(self._input_tokens, self._output_tokens)
            if self._native:
                final[NATIVE_KEY] = {
                    "stop_reason": self._stop_reason or "end_turn",
                    "stop_sequence": self._stop_sequence,
                    "usage": self._native_usage,
                }
            return [final]
        if kind == "content_block_stop" and self._native:
            return [self._chunk({RAW_STOP_KEY: True})]
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
        original = original_of(request, "anthropic")
        if original is not None:
            # A resume's turns: the internal form's messages past the original's own.
            added = list(request.get("messages") or ())[original.base_messages :]
            turns = translate_messages(added)[1] if added else []
            return original_call(
                original, turns, base_url=base_url, model=model, api_key=api_key, stream=stream
            )
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

    def parse_reply(self, payload: object, *, model: str, native: bool = False) -> dict[str, Any]:
        try:
            reply = self._parse_reply(payload, model=model)
            if native:
                reply[NATIVE_KEY] = payload
            return reply
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
            at = f"content[{index}]"
            block_type = get_str(block, "type", at)
            if block_type == "text":
                texts.append(get_str(block, "text", at) or "")
            elif block_type == "tool_use":
                name = get_str(block, "name", at)
                if name is None:
                    raise wrong(f"{at}.name", "a string", None)
                arguments = get_object(block, "input", at) or {}
                tool_calls.append(
                    {
                        "id": get_str(block, "id", at),
                        "type": "function",
                        # allow_nan=False: NaN parsed from the reply is not JSON for clients.
                        "function": {
                            "name": name,
                            "arguments": json.dumps(arguments, allow_nan=False),
                        },
                    }
                )
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        usage = get_object(payload, "usage", "") or {}
        stop_reason = get_str(payload, "stop_reason", "")
        return {
            "id": get_str(payload, "id", "") or "msg",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": get_str(payload, "model", "") or model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": FINISH_REASONS.get(stop_reason or "", "stop"),
                }
            ],
            "usage": _usage(
                _prompt_tokens(usage, "usage"), get_count(usage, "output_tokens", "usage") or 0
            ),
        }

    def stream_decoder(
        self, *, model: str, secrets: Iterable[Secret] = (), native: bool = False
    ) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder(model=model, secrets=secrets, native=native)
