"""Anthropic Messages requests as they arrive at the sidecar: checked, then translated
to the internal (OpenAI chat-completions) form that routes them, the original kept
beside it (:mod:`oswitch.core.inbound`).

What the OpenAI form has no place for is listed in the original's ``untranslatable``
(a target of another protocol then refuses the request with a 400 naming it), or is
dropped where dropping changes nothing the model sees (docs/sidecar.md has the table):

- dropped: ``cache_control`` (a caching hint), ``citations`` on text blocks of earlier
  turns, ``thinking`` / ``redacted_thinking`` blocks of earlier assistant turns
  (Anthropic itself does not show a model its earlier turns' thinking),
  ``output_config.effort`` (a hint), ``context_management`` (edits that only shorten
  Anthropic's server-side context: the OpenAI model sees it unedited), ``thinking``
  ``adaptive`` (the model may choose not to think);
- untranslatable: ``thinking`` enabled, server tools (a tool with a ``type``), PDF and
  file documents, file images, any other block type, any other ``output_config`` key
  than ``effort`` and a JSON-schema ``format``, any other top-level field.

Pure: no trio, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from oswitch.core.chat_request import (
    MAX_MODEL_CHARS,
    MAX_PROBLEMS,
    MAX_TOKENS,
    Problem,
    chat_request_problems,
    shown,
)
from oswitch.core.inbound import ORIGINAL_KEY, OriginalRequest

ANTHROPIC = "anthropic"

# The caller's headers that travel to an Anthropic target, each at most this long.
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")
MAX_HEADER_CHARS = 1024

# "system" in messages: Anthropic's mid-conversation system turns (Claude Code sends them).
ROLES = ("user", "assistant", "system")

# Top-level fields the translation reads (any other is untranslatable).
_TRANSLATED_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "stream",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "metadata",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
        "context_management",
    }
)


# ---- checks ----------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _blocks_problem(value: object, at: str, *, text_only: bool = False) -> Problem | None:
    if isinstance(value, str):
        return None
    if not isinstance(value, list):
        return (at, "must be a string or an array of content blocks")
    for index, block in enumerate(value):
        if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
            return (f"{at}[{index}]", "must be a content block (an object with a string type)")
        if text_only and block["type"] != "text":
            return (f"{at}[{index}].type", f"must be text (got {shown(block['type'])})")
        if block["type"] == "text" and not isinstance(block.get("text"), str):
            return (f"{at}[{index}].text", "required: a string")
    return None


def messages_request_problems(body: object, *, count_only: bool = False) -> list[Problem]:
    """What makes ``body`` not a Messages request oswitch can route, as ``(path,
    reason)`` pairs; empty when it is one. ``count_only``: a count_tokens request
    (``max_tokens`` not required). Checks the fields oswitch reads and that every value
    is one JSON can carry (the chat check's encodability rules); ranges Anthropic judges
    are left to Anthropic."""
    if not isinstance(body, Mapping):
        return [("$", f"must be a JSON object (got {type(body).__name__})")]
    problems: list[Problem] = []
    model = body.get("model")
    if not isinstance(model, str) or not model:
        problems.append(("$.model", "required: a non-empty string"))
    elif len(model) > MAX_MODEL_CHARS:
        problems.append(("$.model", f"model name longer than {MAX_MODEL_CHARS} characters"))
    max_tokens = body.get("max_tokens")
    if max_tokens is None and not count_only:
        problems.append(("$.max_tokens", "required: an integer from 1 to " + str(MAX_TOKENS)))
    elif max_tokens is not None and not (_is_int(max_tokens) and 1 <= max_tokens <= MAX_TOKENS):
        problems.append(("$.max_tokens", f"must be an integer from 1 to {MAX_TOKENS}"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        problems.append(("$.messages", "required: a non-empty array of messages"))
    else:
        for index, message in enumerate(messages):
            at = f"$.messages[{index}]"
            if not isinstance(message, Mapping):
                problems.append((at, "must be an object"))
            elif message.get("role") not in ROLES:
                problems.append(
                    (
                        f"{at}.role",
                        f"must be user, assistant or system (got {shown(message.get('role'))})",
                    )
                )
            elif (found := _blocks_problem(message.get("content"), f"{at}.content")) is not None:
                problems.append(found)
            if len(problems) > MAX_PROBLEMS:
                break
    if "system" in body and (found := _blocks_problem(body["system"], "$.system", text_only=True)):
        problems.append(found)
    if "stream" in body and not isinstance(body["stream"], bool):
        problems.append(("$.stream", "must be true or false"))
    for name in ("temperature", "top_p"):
        if body.get(name) is not None and not _is_number(body[name]):
            problems.append((f"$.{name}", "must be a number"))
    if body.get("top_k") is not None and not _is_int(body["top_k"]):
        problems.append(("$.top_k", "must be an integer"))
    stop = body.get("stop_sequences")
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        problems.append(("$.stop_sequences", "must be an array of strings"))
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            problems.append(("$.tools", "must be an array of tools"))
        else:
            for index, tool in enumerate(tools):
                if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str):
                    problems.append((f"$.tools[{index}]", "must be a tool with a string name"))
                    break
    choice = body.get("tool_choice")
    if choice is not None and not (
        isinstance(choice, Mapping) and choice.get("type") in ("auto", "any", "tool", "none")
    ):
        problems.append(
            ("$.tool_choice", "must be an object whose type is auto, any, tool or none")
        )
    elif (
        isinstance(choice, Mapping)
        and choice["type"] == "tool"
        and not isinstance(choice.get("name"), str)
    ):
        problems.append(("$.tool_choice.name", "required: a string"))
    for name in ("metadata", "thinking"):
        if body.get(name) is not None and not isinstance(body[name], Mapping):
            problems.append((f"$.{name}", "must be an object"))
    # Encodability (NaN, lone surrogates, depth, huge integers): the chat check's
    # rules, which apply to any JSON body; its shape findings for OpenAI's fields
    # (none of which this shape shares with a different meaning) are kept too.
    seen = {path for path, _ in problems}
    problems.extend(p for p in chat_request_problems(body) if p[0] not in seen)
    return problems


# ---- translation -------------------------------------------------------------------


class _Translation:
    """One request's translation: the OpenAI messages, and what could not be carried."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.untranslatable: list[str] = []

    def cannot(self, path: str, reason: str) -> None:
        self.untranslatable.append(f"{path}: {reason}")


def _image_part(block: Mapping[str, Any], at: str, out: _Translation) -> dict[str, Any] | None:
    source = block.get("source")
    if isinstance(source, Mapping):
        if source.get("type") == "base64":
            media_type, data = source.get("media_type"), source.get("data")
            if isinstance(media_type, str) and isinstance(data, str):
                url = f"data:{media_type};base64,{data}"
                return {"type": "image_url", "image_url": {"url": url}}
        elif source.get("type") == "url" and isinstance(source.get("url"), str):
            return {"type": "image_url", "image_url": {"url": source["url"]}}
    out.cannot(f"{at}.source", "only base64 and url images have an OpenAI form")
    return None


def _document_text(block: Mapping[str, Any], at: str, out: _Translation) -> str | None:
    source = block.get("source")
    if isinstance(source, Mapping):
        if source.get("type") == "text" and isinstance(source.get("data"), str):
            return str(source["data"])
        if source.get("type") == "content" and isinstance(source.get("content"), list | str):
            content = source["content"]
            if isinstance(content, str):
                return content
            if all(isinstance(b, Mapping) and b.get("type") == "text" for b in content):
                return "\n".join(str(b.get("text", "")) for b in content)
    out.cannot(f"{at}.source", "only plain-text documents have an OpenAI form")
    return None


def _user_parts(
    blocks: list[Any], at: str, out: _Translation
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A user turn's blocks as (tool messages, content parts)."""
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for index, block in enumerate(blocks):
        where = f"{at}[{index}]"
        kind = block["type"]
        if kind == "text":
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            image = _image_part(block, where, out)
            if image is not None:
                parts.append(image)
        elif kind == "document":
            text = _document_text(block, where, out)
            if text is not None:
                parts.append({"type": "text", "text": text})
        elif kind == "tool_result":
            tools.append(_tool_message(block, where, out, parts))
        else:
            out.cannot(f"{where}.type", f"a {shown(kind)} block has no OpenAI form")
    return tools, parts


def _tool_message(
    block: Mapping[str, Any], at: str, out: _Translation, parts: list[dict[str, Any]]
) -> dict[str, Any]:
    """A tool_result as an OpenAI tool message. OpenAI tool messages carry text only:
    the result's images go into the user message that follows (``parts``)."""
    content = block.get("content")
    texts: list[str] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for index, item in enumerate(content):
            where = f"{at}.content[{index}]"
            kind = item.get("type") if isinstance(item, Mapping) else None
            if kind == "text" and isinstance(item.get("text"), str):
                texts.append(item["text"])
            elif kind == "image":
                image = _image_part(item, where, out)
                if image is not None:
                    parts.append(image)
            else:
                out.cannot(where, f"a {shown(kind)} block in a tool result has no OpenAI form")
    elif content is not None:
        out.cannot(f"{at}.content", "must be a string or an array of blocks")
    text = "\n".join(texts)
    if block.get("is_error") is True:
        text = f"[tool error] {text}"
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str):
        out.cannot(f"{at}.tool_use_id", "required: a string")
    return {"role": "tool", "tool_call_id": str(tool_use_id or ""), "content": text}


def _assistant_message(blocks: list[Any], at: str, out: _Translation) -> dict[str, Any] | None:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for index, block in enumerate(blocks):
        where = f"{at}[{index}]"
        kind = block["type"]
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use":
            name, call_id = block.get("name"), block.get("id")
            if not isinstance(name, str) or not isinstance(call_id, str):
                out.cannot(where, "a tool_use block needs a string id and name")
                continue
            arguments = block.get("input")
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": json.dumps(
                            arguments if arguments is not None else {}, ensure_ascii=False
                        ),
                    },
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # an earlier turn's thinking: Anthropic does not show it either
        else:
            out.cannot(f"{where}.type", f"a {shown(kind)} block has no OpenAI form")
    if not texts and not calls:
        return None
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _system_text(system: object) -> str:
    if isinstance(system, str):
        return system
    return "\n\n".join(str(block.get("text", "")) for block in system or ())  # type: ignore[attr-defined]


def _tools(tools: list[Any], out: _Translation) -> list[dict[str, Any]]:
    translated = []
    for index, tool in enumerate(tools):
        if tool.get("type") not in (None, "custom"):
            out.cannot(
                f"$.tools[{index}].type",
                f"server tool {shown(tool['type'])} runs on Anthropic's side only",
            )
            continue
        function: dict[str, Any] = {"name": tool["name"]}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
        translated.append({"type": "function", "function": function})
    return translated


def _tool_choice(choice: Mapping[str, Any]) -> tuple[object, bool | None]:
    """(OpenAI tool_choice, parallel_tool_calls or None)."""
    kind = choice["type"]
    parallel = False if choice.get("disable_parallel_tool_use") is True else None
    if kind == "any":
        return "required", parallel
    if kind == "tool":
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    if kind == "none":
        return "none", None
    return "auto", parallel


def _output_config(config: object, request: dict[str, Any], out: _Translation) -> None:
    """``output_config``: ``effort`` is a hint (dropped); ``format`` a JSON schema the
    answer must follow (OpenAI's ``response_format``); anything else untranslatable."""
    if config is None:
        return
    if not isinstance(config, Mapping):
        out.cannot("$.output_config", "must be an object")
        return
    for name, value in config.items():
        if name == "effort":
            continue
        if name == "format" and isinstance(value, Mapping) and value.get("type") == "json_schema":
            schema = value.get("schema")
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema, "strict": True},
            }
            continue
        out.cannot(f"$.output_config.{name}", "no OpenAI form")


def to_chat_request(
    body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The internal (OpenAI-shaped) request for a checked Messages ``body``, with the
    original (``body`` and the forwarded ``headers``) under :data:`ORIGINAL_KEY`.

    ``body`` must have passed :func:`messages_request_problems`. Never raises for what
    cannot be carried: that is listed in the original's ``untranslatable``.
    """
    out = _Translation()
    if body.get("system"):
        out.messages.append({"role": "system", "content": _system_text(body["system"])})
    for index, message in enumerate(body["messages"]):
        at = f"$.messages[{index}].content"
        content = message["content"]
        if message["role"] == "system":
            out.messages.append({"role": "system", "content": _system_text(content)})
        elif message["role"] == "user":
            if isinstance(content, str):
                out.messages.append({"role": "user", "content": content})
                continue
            tools, parts = _user_parts(content, at, out)
            out.messages.extend(tools)
            if parts or not tools:
                # A turn of blocks without an OpenAI form (listed as untranslatable) still
                # holds its place, so the internal form routes it to an Anthropic target.
                out.messages.append({"role": "user", "content": parts or ""})
        else:
            if isinstance(content, str):
                out.messages.append({"role": "assistant", "content": content})
                continue
            assistant = _assistant_message(content, at, out)
            if assistant is not None:
                out.messages.append(assistant)
    request: dict[str, Any] = {"model": body["model"], "messages": out.messages}
    if body.get("max_tokens") is not None:
        request["max_tokens"] = body["max_tokens"]
    if body.get("stream") is True:
        request["stream"] = True
    for name in ("temperature", "top_p", "top_k"):
        # top_k has no OpenAI field; it is sent as is, which vLLM and others take and
        # OpenAI itself refuses (a 400 from the provider, never a silent drop).
        if body.get(name) is not None:
            request[name] = body[name]
    if body.get("stop_sequences"):
        request["stop"] = list(body["stop_sequences"])
    metadata = body.get("metadata") or {}
    if isinstance(metadata.get("user_id"), str):
        request["user"] = metadata["user_id"]
    for name in metadata:
        if name != "user_id":
            out.cannot(f"$.metadata.{name}", "only user_id has an OpenAI form")
    if body.get("tools"):
        request["tools"] = _tools(body["tools"], out)
        if not request["tools"]:
            del request["tools"]
    if isinstance(body.get("tool_choice"), Mapping):
        choice, parallel = _tool_choice(body["tool_choice"])
        if "tools" in request or choice == "none":
            request["tool_choice"] = choice
        if parallel is not None:
            request["parallel_tool_calls"] = parallel
    thinking = body.get("thinking")
    if isinstance(thinking, Mapping) and thinking.get("type") not in (None, "disabled", "adaptive"):
        # "adaptive" lets the model decide whether to think: one that does not is within it.
        out.cannot("$.thinking", "extended thinking has no OpenAI form")
    _output_config(body.get("output_config"), request, out)
    for name in body:
        if name not in _TRANSLATED_FIELDS:
            out.cannot(f"$.{name}", "no OpenAI form")
    request[ORIGINAL_KEY] = OriginalRequest(
        api=ANTHROPIC,
        body=body,
        headers=dict(headers or {}),
        base_messages=len(out.messages),
        untranslatable=tuple(out.untranslatable),
    )
    return request


def forwarded_headers(headers: list[tuple[bytes, bytes]] | tuple[Any, ...]) -> dict[str, str]:
    """The caller's ``anthropic-version`` and ``anthropic-beta`` headers (several
    ``anthropic-beta`` lines joined by commas), each cut at MAX_HEADER_CHARS."""
    kept: dict[str, list[str]] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        if name in FORWARDED_HEADERS:
            kept.setdefault(name, []).append(raw_value.decode("latin-1").strip())
    return {name: ",".join(values)[:MAX_HEADER_CHARS] for name, values in kept.items()}
