"""Non-streamed answers: a chat completion, and the errors providers send instead."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from oswitch.testing.behaviour import Behaviour


def completion(text: str, *, model: str, finish_reason: str = "stop") -> dict[str, Any]:
    """An OpenAI chat.completion body answering ``text``."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": 1,
            "completion_tokens": max(1, len(text) // 4),
            "total_tokens": 1 + max(1, len(text) // 4),
        },
    }


def reply(text: str = "ok", *, latency: float = 0.0, model: str | None = None) -> Behaviour:
    """Answer 200 with ``text`` (the reply's model is ``model`` or the one asked for)."""

    async def respond(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        served = model or str(body.get("model") or "fake-model")
        return httpx.Response(200, json=completion(text, model=served))  # noqa: ASYNC910 (a Responder: handle checkpoints)

    return Behaviour(name="reply", respond=respond, latency=latency)


def error(
    status: int,
    body: Mapping[str, Any] | str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    latency: float = 0.0,
    name: str | None = None,
) -> Behaviour:
    """Answer ``status`` with ``body`` (JSON when a mapping) and ``headers``."""

    async def respond(request: httpx.Request, _: Mapping[str, Any]) -> httpx.Response:
        if isinstance(body, Mapping):
            content: dict[str, Any] = {"json": dict(body)}
        else:
            content = {"text": body or ""}
        return httpx.Response(status, **content, headers=dict(headers or {}))  # noqa: ASYNC910 (a Responder: handle checkpoints)

    return Behaviour(name=name or f"error {status}", respond=respond, latency=latency)


def _openai_error(
    status: int,
    message: str,
    type_: str,
    code: str | None,
    *,
    name: str,
    headers: Mapping[str, str] | None = None,
    latency: float = 0.0,
) -> Behaviour:
    """Answer ``status`` with an error object in OpenAI's shape."""
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return error(status, body, headers=headers, latency=latency, name=name)


def rate_limited(retry_after: float | None = 1.0, *, latency: float = 0.0) -> Behaviour:
    """429 rate limit, with ``retry-after-ms`` when ``retry_after`` is given."""
    headers = {} if retry_after is None else {"retry-after-ms": str(int(retry_after * 1000))}
    return _openai_error(
        429,
        "Rate limit reached for requests per min (RPM).",
        "requests",
        "rate_limit_exceeded",
        headers=headers,
        latency=latency,
        name="rate_limited",
    )


def quota_exhausted() -> Behaviour:
    """429 insufficient_quota: the key's billing quota is gone."""
    return _openai_error(
        429,
        "You exceeded your current quota, please check your plan and billing details.",
        "insufficient_quota",
        "insufficient_quota",
        name="quota_exhausted",
    )


def invalid_key() -> Behaviour:
    """401 invalid API key."""
    return _openai_error(
        401,
        "Incorrect API key provided.",
        "invalid_request_error",
        "invalid_api_key",
        name="invalid_key",
    )


def server_error(status: int = 500, *, latency: float = 0.0) -> Behaviour:
    """A 5xx from the provider."""
    return _openai_error(
        status,
        "The server had an error while processing your request.",
        "server_error",
        None,
        latency=latency,
        name=f"server_error {status}",
    )


def model_overloaded() -> Behaviour:
    """529 overloaded_error, as Anthropic sends when a model is overloaded."""
    return error(
        529,
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        name="model_overloaded",
    )


def bad_request(message: str = "Invalid 'messages': empty array.") -> Behaviour:
    """400 invalid_request_error caused by the request itself."""
    return _openai_error(400, message, "invalid_request_error", None, name="bad_request")


def context_too_long() -> Behaviour:
    """400 context_length_exceeded."""
    return _openai_error(
        400,
        "This model's maximum context length is 8192 tokens. However, your messages "
        "resulted in 9000 tokens.",
        "invalid_request_error",
        "context_length_exceeded",
        name="context_too_long",
    )
