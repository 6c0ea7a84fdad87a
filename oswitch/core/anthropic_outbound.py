"""Answers to a Messages request, in Anthropic's shapes: a whole reply, the stream's
events and the error object, made from the internal (OpenAI-shaped) replies and chunks
whichever target served them.

A reply or chunk decoded from an Anthropic target for a request that arrived as
Anthropic carries what the OpenAI shape drops under :data:`NATIVE_KEY` (the message's
id and usage, the exact stop reason, the whole reply), and that is used as given.
Thinking travels in chunk deltas as ``thinking``, ``signature`` and
``redacted_thinking``; a block or delta the OpenAI shape has no form for (a server tool's
use and result, a ``citations_delta``) as the Anthropic target sent it, under
:data:`RAW_BLOCK_KEY` / :data:`RAW_DELTA_KEY`.

A tool call is never presented whole unless it is: arguments that are not a JSON
object raise :class:`CorruptToolCall` (the sidecar answers an error, in-band for a
stream), never a ``tool_use`` block the caller would run.

Pure: no trio, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from oswitch.core.inbound import NATIVE_KEY, RAW_BLOCK_KEY, RAW_DELTA_KEY, RAW_STOP_KEY

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


class CorruptToolCall(ValueError):
    """A tool call whose arguments are not a JSON object (or that lost its name): it
    must not reach the caller as a tool_use block."""


def stop_reason_for(finish_reason: object) -> str:
    """OpenAI's finish reason as Anthropic's stop reason (end_turn when unknown)."""
    return STOP_REASONS.get(finish_reason if isinstance(finish_reason, str) else "", "end_turn")


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def usage_for(usage: object) -> dict[str, int]:
    """OpenAI usage as Anthropic's: cached prompt tokens apart from the others."""
    if not isinstance(usage, Mapping):
        return {"input_tokens": 0, "output_tokens": 0}
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
    prompt = _count(usage.get("prompt_tokens"))
    result = {
        "input_tokens": max(0, prompt - cached),
        "output_tokens": _count(usage.get("completion_tokens")),
    }
    if cached:
        result["cache_read_input_tokens"] = cached
    return result


def tool_input(arguments: object, *, name: object) -> dict[str, Any]:
    """A tool call's arguments as the object ``tool_use.input`` must be; raises
    CorruptToolCall for anything else (an empty string is ``{}``)."""
    if not isinstance(name, str) or not name:
        raise CorruptToolCall("a tool call without a name")
    if isinstance(arguments, Mapping):
        return dict(arguments)
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) else None
    except (ValueError, RecursionError):
        parsed = None
    if not isinstance(parsed, dict):
        raise CorruptToolCall(f"the arguments of tool call {name!r} are not a JSON object")
    return parsed


def message_id(request_id: str) -> str:
    """The id of a message oswitch composed (a reply from a non-Anthropic target)."""
    return "msg_" + request_id.removeprefix("req_")


def to_message(reply: Mapping[str, Any], *, request_id: str) -> dict[str, Any]:
    """A whole internal reply as an Anthropic ``message``; raises CorruptToolCall."""
    native = reply.get(NATIVE_KEY)
    if isinstance(native, Mapping):
        return dict(native)  # the Anthropic target's own reply, as it sent it
    choice = (reply.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        name = function.get("name")
        content.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or f"toolu_{len(content)}"),
                "name": name,
                "input": tool_input(function.get("arguments"), name=name),
            }
        )
    return {
        "id": message_id(request_id),
        "type": "message",
        "role": "assistant",
        "model": str(reply.get("model") or ""),
        "content": content,
        "stop_reason": stop_reason_for(choice.get("finish_reason")),
        "stop_sequence": None,
        "usage": usage_for(reply.get("usage")),
    }


def error_body(error_type: str, message: str) -> dict[str, Any]:
    """Anthropic's error object."""
    return {"type": "error", "error": {"type": error_type, "message": message}}


def event(kind: str, payload: Mapping[str, Any]) -> bytes:
    """One SSE event as Anthropic sends it: ``event:`` its type, ``data:`` the JSON."""
    data = json.dumps({"type": kind, **payload}, separators=(",", ":"))
    return b"event: " + kind.encode() + b"\ndata: " + data.encode() + b"\n\n"


class MessagesStreamEncoder:
    """Internal ``chat.completion.chunk`` dicts → Anthropic's stream events.

    ``feed`` each chunk, then ``finish`` once the stream ended cleanly; each returns
    the bytes to send (possibly none). The first ``feed`` opens the message
    (``message_start`` and a ``ping``). Blocks are opened and closed as the content
    changes kind: text, a tool call (by its OpenAI index), thinking. ``feed`` and
    ``finish`` raise CorruptToolCall when a tool call's arguments turn out not to be a
    JSON object, or its deltas interleave with another's: then send :meth:`error`.
    """

    def __init__(self, *, message_id: str, model: str, input_tokens: int = 0) -> None:
        self._message_id = message_id
        self._model = model
        self._input_tokens = input_tokens
        self._started = False
        self._index = -1  # of the open block, or of the last one
        self._open: str | None = None  # "text", "tool_use", "thinking" or None
        self._tool_index: int | None = None  # the open tool block's OpenAI index
        self._tool_name = ""
        self._arguments: list[str] = []
        self._closed_tools: set[int] = set()
        self._stop_reason: str | None = None
        self._stop_sequence: str | None = None
        self._usage: dict[str, Any] | None = None

    # ---- blocks ----------------------------------------------------------------

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        if self._open == "tool_use":
            assert self._tool_index is not None
            tool_input("".join(self._arguments), name=self._tool_name)
            self._closed_tools.add(self._tool_index)
            self._tool_index = None
            self._arguments = []
        self._open = None
        return event("content_block_stop", {"index": self._index})

    def _begin(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._index += 1
        self._open = kind
        return out + event("content_block_start", {"index": self._index, "content_block": block})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return event("content_block_delta", {"index": self._index, "delta": delta})

    # ---- the stream ------------------------------------------------------------

    def _start(self, chunk: Mapping[str, Any]) -> bytes:
        self._started = True
        native = chunk.get(NATIVE_KEY)
        message: dict[str, Any] = {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "model": str(chunk.get("model") or self._model),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self._input_tokens, "output_tokens": 0},
        }
        if isinstance(native, Mapping) and isinstance(native.get("message"), Mapping):
            given = native["message"]
            for name in ("id", "model", "usage"):
                if name in given:
                    message[name] = given[name]
        return event("message_start", {"message": message}) + event("ping", {})

    def feed(self, chunk: Mapping[str, Any]) -> bytes:
        """The events for one chunk."""
        out = b"" if self._started else self._start(chunk)
        native = chunk.get(NATIVE_KEY)
        if isinstance(native, Mapping):
            if isinstance(native.get("stop_reason"), str):
                self._stop_reason = native["stop_reason"]
                self._stop_sequence = native.get("stop_sequence")
            if isinstance(native.get("usage"), Mapping):
                self._usage = dict(native["usage"])
        if chunk.get("usage") and self._usage is None:
            self._usage = usage_for(chunk["usage"])
        choices = chunk.get("choices")
        if not choices:
            return out
        choice = choices[0]
        delta = choice.get("delta") or {}
        thinking = delta.get("thinking")
        if isinstance(thinking, str) and thinking:
            if self._open != "thinking":
                out += self._begin("thinking", {"type": "thinking", "thinking": ""})
            out += self._delta({"type": "thinking_delta", "thinking": thinking})
        signature = delta.get("signature")
        if isinstance(signature, str) and signature and self._open == "thinking":
            out += self._delta({"type": "signature_delta", "signature": signature})
        redacted = delta.get("redacted_thinking")
        if isinstance(redacted, str) and redacted:
            out += self._begin("redacted_thinking", {"type": "redacted_thinking", "data": redacted})
            out += self._close()
        raw_block = delta.get(RAW_BLOCK_KEY)
        if isinstance(raw_block, Mapping):
            out += self._begin("raw", dict(raw_block))
        raw_delta = delta.get(RAW_DELTA_KEY)
        if isinstance(raw_delta, Mapping):
            if self._open is None and raw_delta.get("type") == "citations_delta":
                out += self._begin("text", {"type": "text", "text": ""})
            if self._open is not None:
                out += self._delta(dict(raw_delta))
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self._open != "text":
                out += self._begin("text", {"type": "text", "text": ""})
            out += self._delta({"type": "text_delta", "text": text})
        for call in delta.get("tool_calls") or ():
            out += self._tool_delta(call)
        if delta.get(RAW_STOP_KEY):
            out += self._close()
        finish_reason = choice.get("finish_reason")
        if finish_reason:
            out += self._close()
            if self._stop_reason is None:
                self._stop_reason = stop_reason_for(finish_reason)
        return out

    def _tool_delta(self, call: Mapping[str, Any]) -> bytes:
        index = call.get("index", 0)
        function = call.get("function") or {}
        out = b""
        if self._open != "tool_use" or index != self._tool_index:
            if index in self._closed_tools:
                raise CorruptToolCall(f"tool call {index}'s arguments resumed after it ended")
            name = function.get("name")
            if not isinstance(name, str) or not name:
                raise CorruptToolCall("a tool call began without a name")
            call_id = call.get("id") or f"toolu_{self._message_id}_{index}"
            out += self._begin(
                "tool_use", {"type": "tool_use", "id": str(call_id), "name": name, "input": {}}
            )
            self._tool_index = index
            self._tool_name = name
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            self._arguments.append(arguments)
            out += self._delta({"type": "input_json_delta", "partial_json": arguments})
        return out

    def finish(self) -> bytes:
        """The events that end a stream that ended cleanly: the open block's stop,
        ``message_delta`` (stop reason, usage) and ``message_stop``."""
        out = b"" if self._started else self._start({})
        out += self._close()
        usage = self._usage or {"output_tokens": 0}
        return (
            out
            + event(
                "message_delta",
                {
                    "delta": {
                        "stop_reason": self._stop_reason or "end_turn",
                        "stop_sequence": self._stop_sequence,
                    },
                    "usage": usage,
                },
            )
            + event("message_stop", {})
        )

    @staticmethod
    def error(error_type: str, message: str) -> bytes:
        """The in-band ``error`` event that ends a stream which failed after content."""
        return event("error", {"error": {"type": error_type, "message": message}})
