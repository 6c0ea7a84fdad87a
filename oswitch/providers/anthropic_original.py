"""The call an Anthropic target is sent for a request that arrived as Anthropic: the
caller's own request (oswitch.core.inbound), changed only where it must be."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oswitch.core.inbound import OriginalRequest
from oswitch.providers.adapter import UpstreamCall

ANTHROPIC_VERSION = "2023-06-01"


def original_call(
    original: OriginalRequest,
    added_turns: list[dict[str, Any]],
    *,
    base_url: str,
    model: str,
    api_key: str | None,
    stream: bool,
) -> UpstreamCall:
    """The caller's own Messages request with the model that serves, ``stream``, and a
    resume's turns (``added_turns``, already in Anthropic's shape) appended to its
    messages; its ``anthropic-version`` / ``anthropic-beta`` headers win over ours."""
    body = dict(original.body)
    body["model"] = model
    if stream:
        body["stream"] = True
    else:
        body.pop("stream", None)
    if added_turns:
        body["messages"] = _joined(list(original.body["messages"]), added_turns)
    headers = {
        "content-type": "application/json",
        "anthropic-version": ANTHROPIC_VERSION,
        "accept": "text/event-stream" if stream else "application/json",
        **original.headers,
    }
    if api_key:
        headers["x-api-key"] = api_key
    return UpstreamCall(url=base_url.rstrip("/") + "/messages", headers=headers, body=body)


def _joined(messages: list[Any], turns: list[dict[str, Any]]) -> list[Any]:
    """``messages`` followed by ``turns``, a turn of the same role as the last message
    merged into it (Anthropic wants the roles to alternate)."""
    for turn in turns:
        last = messages[-1] if messages else None
        if isinstance(last, Mapping) and last.get("role") == turn["role"]:
            content = last.get("content")
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
            messages[-1] = {**last, "content": [*(blocks or []), *turn["content"]]}
        else:
            messages.append(turn)
    return messages
