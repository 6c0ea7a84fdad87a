"""A fake Anthropic upstream's whole answers: a Messages reply (text, tool use,
thinking), Anthropic's error objects, and a count_tokens answer. Streamed answers are
``stream(api="anthropic")`` (oswitch.testing.streams), or :func:`anthropic_stream` for
events written out by hand."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from oswitch.testing.behaviour import Behaviour
from oswitch.testing.replies import error
from oswitch.testing.sse import sse


def message(
    text: str = "ok",
    *,
    model: str,
    tool_use: Mapping[str, Any] | None = None,
    thinking: str | None = None,
    stop_reason: str | None = None,
) -> dict[str, Any]:
    """An Anthropic ``message`` body: optional thinking, ``text``, an optional
    ``tool_use`` ({"name", "input"}), usage."""
    content: list[dict[str, Any]] = []
    if thinking is not None:
        content.append({"type": "thinking", "thinking": thinking, "signature": "sig-fake"})
    if text:
        content.append({"type": "text", "text": text})
    if tool_use is not None:
        content.append(
            {
                "type": "tool_use",
                "id": "toolu_fake",
                "name": tool_use["name"],
                "input": dict(tool_use.get("input") or {}),
            }
        )
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason or ("tool_use" if tool_use is not None else "end_turn"),
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": max(1, len(text) // 4)},
    }


def message_reply(
    text: str = "ok",
    *,
    tool_use: Mapping[str, Any] | None = None,
    thinking: str | None = None,
    model: str | None = None,
    latency: float = 0.0,
) -> Behaviour:
    """Answer 200 with a :func:`message` (its model the one asked for, or ``model``)."""

    async def respond(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        served = model or str(body.get("model") or "claude-fake")
        payload = message(text, model=served, tool_use=tool_use, thinking=thinking)
        return httpx.Response(200, json=payload)  # noqa: ASYNC910 (a Responder: handle checkpoints)

    return Behaviour(name="message_reply", respond=respond, latency=latency)


def anthropic_error(
    status: int,
    error_type: str,
    message_text: str = "error",
    *,
    headers: Mapping[str, str] | None = None,
) -> Behaviour:
    """Answer ``status`` with Anthropic's error object of ``error_type``."""
    body = {"type": "error", "error": {"type": error_type, "message": message_text}}
    return error(status, body, headers=headers, name=f"anthropic {error_type}")


def anthropic_rate_limited(retry_after_s: int = 30) -> Behaviour:
    """429 rate_limit_error with ``retry-after`` seconds, as Anthropic sends it."""
    return anthropic_error(
        429,
        "rate_limit_error",
        "Number of request tokens has exceeded your per-minute rate limit",
        headers={"retry-after": str(retry_after_s)},
    )


def token_count(input_tokens: int) -> Behaviour:
    """Answer a count_tokens request with ``input_tokens``."""

    async def respond(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        return httpx.Response(200, json={"input_tokens": input_tokens})  # noqa: ASYNC910 (a Responder: handle checkpoints)

    return Behaviour(name="token_count", respond=respond)


def anthropic_stream(events: Sequence[tuple[str, Mapping[str, Any]]]) -> Behaviour:
    """Stream ``events`` (``(type, payload)`` pairs, ``type`` added to each payload) as
    Anthropic's SSE, whole and in one piece; for shapes ``stream()`` does not script
    (thinking, several blocks). The body ends after the last event given."""
    body = b"".join(sse(json.dumps({"type": kind, **payload}), kind) for kind, payload in events)

    async def respond(request: httpx.Request, _: Mapping[str, Any]) -> httpx.Response:
        return httpx.Response(  # noqa: ASYNC910 (a Responder: handle checkpoints)
            200, headers={"content-type": "text/event-stream"}, content=body
        )

    return Behaviour(name="anthropic_stream", respond=respond)
