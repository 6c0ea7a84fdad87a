"""OpenAI-compatible chat completions (OpenAI, Groq, Mistral, vLLM, Ollama, ...)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from oswitch.core.classify import Classification, classify_stream_error
from oswitch.core.error_class import ErrorClass
from oswitch.providers.base import MalformedReply, StreamFault, UpstreamCall

# Keys oswitch reads from a request for itself; they never travel upstream.
OSWITCH_REQUEST_KEYS = frozenset({"oswitch"})


def malformed_chunk(reason: str) -> StreamFault:
    return StreamFault(
        Classification(
            error_class=ErrorClass.TRANSIENT_SERVER_FAILURE,
            retry_after=None,
            message=f"malformed stream chunk: {reason}",
        )
    )


class OpenAIStreamDecoder:
    """``data: {chunk}`` lines until ``data: [DONE]``; an ``error`` object is a fault."""

    def __init__(self, *, model: str) -> None:
        self.model = model
        self.finished = False

    def feed(self, event: str, data: str) -> list[dict[str, Any]]:
        try:
            return self._feed(event, data)
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
            # A field of the wrong type somewhere in the chunk: a malformed chunk.
            raise malformed_chunk(f"{type(exc).__name__}: {exc}") from exc

    def _feed(self, event: str, data: str) -> list[dict[str, Any]]:
        if data.strip() == "[DONE]":
            self.finished = True
            return []
        if event == "error":
            raise StreamFault(classify_stream_error(data))
        try:
            payload = json.loads(data)
        except ValueError:
            raise malformed_chunk(f"not JSON: {data[:80]!r}") from None
        if not isinstance(payload, dict):
            raise malformed_chunk(f"not an object: {data[:80]!r}")
        if payload.get("error") and (
            "choices" not in payload
            or any(
                isinstance(c, dict) and c.get("finish_reason") == "error"
                for c in payload.get("choices") or ()
            )
        ):
            # OpenRouter reports a mid-stream failure as an error object on a chunk
            # whose finish_reason is "error": a fault, not the end of the answer.
            raise StreamFault(classify_stream_error(payload))
        choices = payload.get("choices")
        if not isinstance(choices, list):
            raise malformed_chunk("choices: missing or not a list")
        for index, choice in enumerate(choices):
            if not isinstance(choice, dict):
                raise malformed_chunk(f"choices[{index}]: not an object")
            delta = choice.get("delta")
            if delta is not None and not isinstance(delta, dict):
                raise malformed_chunk(f"choices[{index}].delta: not an object")
        payload.setdefault("object", "chat.completion.chunk")
        if not payload.get("model"):
            payload["model"] = self.model
        return [payload]


class OpenAIAdapter:
    """POST ``{base_url}/chat/completions`` with a bearer key; replies pass through."""

    api = "openai"

    def build_call(
        self,
        request: Mapping[str, Any],
        *,
        base_url: str,
        model: str,
        api_key: str | None,
        stream: bool,
    ) -> UpstreamCall:
        body = {k: v for k, v in request.items() if k not in OSWITCH_REQUEST_KEYS}
        body["model"] = model
        headers = {"content-type": "application/json"}
        if stream:
            body["stream"] = True
            headers["accept"] = "text/event-stream"
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
            headers["accept"] = "application/json"
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        return UpstreamCall(
            url=base_url.rstrip("/") + "/chat/completions", headers=headers, body=body
        )

    def parse_reply(self, payload: object, *, model: str) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise MalformedReply(f"reply is not a JSON object (got {type(payload).__name__})")
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices:
            raise MalformedReply("choices: missing or empty")
        for index, choice in enumerate(choices):
            if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
                raise MalformedReply(f"choices[{index}].message: missing or not an object")
        reply = dict(payload)
        if not isinstance(reply.get("model"), str) or not reply["model"]:
            reply["model"] = model
        reply.setdefault("object", "chat.completion")
        return reply

    def stream_decoder(self, *, model: str) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder(model=model)
