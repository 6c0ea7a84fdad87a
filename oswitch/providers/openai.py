"""OpenAI-compatible chat completions (OpenAI, Groq, Mistral, vLLM, Ollama, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oswitch.providers.base import MalformedReply, UpstreamCall

# Keys oswitch reads from a request for itself; they never travel upstream.
OSWITCH_REQUEST_KEYS = frozenset({"oswitch"})


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
        if stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        headers = {"content-type": "application/json", "accept": "application/json"}
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
