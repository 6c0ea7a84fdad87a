"""Fake upstream answers for the token tests: fixed headers and usage, and a stream
that sends its usage chunk only when asked, as OpenAI does."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from oswitch.testing import Behaviour, completion


def answering(
    *,
    headers: Mapping[str, str] | None = None,
    usage: Mapping[str, int] | None = None,
) -> Behaviour:
    """A 200 completion with ``headers`` and, when given, ``usage`` instead of the fake's."""

    async def respond(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        answer = completion("ok", model=str(body.get("model")))
        if usage is not None:
            answer["usage"] = dict(usage)
        return httpx.Response(200, json=answer, headers=dict(headers or {}))  # noqa: ASYNC910

    return Behaviour(name="answering", respond=respond)


def streaming(seen: list[Mapping[str, Any]]) -> Behaviour:
    """A streamed answer that ends with a usage chunk when the request asks for it
    (as OpenAI does); records each request body in ``seen``."""

    async def respond(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        seen.append(body)

        def chunk(choices: list[Any], **extra: Any) -> bytes:
            payload = {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o"}
            return f"data: {json.dumps({**payload, 'choices': choices, **extra})}\n\n".encode()

        asked = (body.get("stream_options") or {}).get("include_usage") is True
        extra = {"usage": None} if asked else {}
        events = [
            chunk([{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}], **extra),
            chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}], **extra),
        ]
        if asked:
            usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
            events.append(chunk([], usage=usage))
        content = b"".join(events) + b"data: [DONE]\n\n"
        return httpx.Response(  # noqa: ASYNC910
            200, headers={"content-type": "text/event-stream"}, content=content
        )

    return Behaviour(name="streaming", respond=respond)
