"""OpenAI-compatible chat completions (OpenAI, Groq, Mistral, vLLM, Ollama, ...)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from oswitch.core.classify import Classification, classify_stream_error
from oswitch.core.error_class import ErrorClass
from oswitch.core.inbound import ORIGINAL_KEY, original_of
from oswitch.core.json_codec import decode
from oswitch.core.secret import Secret, scrub_and_cut
from oswitch.providers.adapter import MalformedReply, StreamFault, Untranslatable, UpstreamCall
from oswitch.providers.shape import (
    check_content,
    check_tool_calls,
    check_usage,
    get_str,
    wrong,
)

# Keys oswitch reads from a request for itself; they never travel upstream.
OSWITCH_REQUEST_KEYS = frozenset({"oswitch", ORIGINAL_KEY})


def malformed_chunk(reason: str) -> StreamFault:
    """A chunk that cannot be decoded: a TransientServerFailure of the target."""
    return StreamFault(
        Classification(
            error_class=ErrorClass.TRANSIENT_SERVER_FAILURE,
            retry_after=None,
            message=f"malformed stream chunk: {reason}",
        )
    )


def excerpt(data: str, secrets: Iterable[Secret]) -> str:
    """The start of an undecodable chunk, for its fault's message: scrubbed of keys
    before it is cut, so a key is never left half shown."""
    return repr(scrub_and_cut(data, secrets, limit=80))


def loads(data: str, secrets: Iterable[Secret]) -> object:
    """``data`` parsed as JSON; a malformed chunk if it is not (or nests too deep)."""
    try:
        return decode(data)
    except (ValueError, RecursionError):
        raise malformed_chunk(f"not JSON: {excerpt(data, secrets)}") from None


class OpenAIStreamDecoder:
    """``data: {chunk}`` lines until ``data: [DONE]``; an ``error`` object is a fault.

    A chunk is passed on only when the fields oswitch and clients read have their
    types (see :mod:`oswitch.providers.shape`); any other is a malformed chunk.
    ``secrets`` (the configured keys, a list that may grow) are scrubbed from every
    fault's message before it is cut.
    """

    def __init__(self, *, model: str, secrets: Iterable[Secret] = ()) -> None:
        self.model = model
        self.finished = False
        self._secrets = secrets

    def feed(self, event: str, data: str) -> list[dict[str, Any]]:
        # Once per chunk of every stream: the common chunk (one choice, a text delta) is
        # checked inline, with no call but the JSON decode.
        try:
            if data[:1] != "{" and data.strip() == "[DONE]":  # a chunk skips the copy
                self.finished = True
                return []
            if event == "error":
                raise StreamFault(classify_stream_error(data, secrets=self._secrets))
            try:
                payload = decode(data)
            except (ValueError, RecursionError):
                raise malformed_chunk(f"not JSON: {excerpt(data, self._secrets)}") from None
            if type(payload) is not dict and not isinstance(payload, dict):
                raise malformed_chunk(f"not an object: {excerpt(data, self._secrets)}")
            choices = payload.get("choices")
            if payload.get("error") and (
                "choices" not in payload
                or any(
                    isinstance(c, dict) and c.get("finish_reason") == "error" for c in choices or ()
                )
            ):
                # OpenRouter reports a mid-stream failure as an error object on a chunk
                # whose finish_reason is "error": a fault, not the end of the answer.
                raise StreamFault(classify_stream_error(payload, secrets=self._secrets))
            if type(choices) is not list:
                raise malformed_chunk("choices: missing or not a list")
            for index, choice in enumerate(choices):
                if type(choice) is not dict and not isinstance(choice, dict):
                    raise malformed_chunk(f"choices[{index}]: not an object")
                delta = choice.get("delta")
                if delta is not None:
                    if type(delta) is not dict and not isinstance(delta, dict):
                        raise malformed_chunk(f"choices[{index}].delta: not an object")
                    content = delta.get("content")
                    role = delta.get("role")
                    if not (
                        (content is None or type(content) is str)
                        and (role is None or type(role) is str)
                        and delta.get("tool_calls") is None
                        and delta.get("function_call") is None
                    ):
                        _check_delta(delta, index)
                reason = choice.get("finish_reason")
                if reason is not None and type(reason) is not str and not isinstance(reason, str):
                    raise wrong(f"choices[{index}].finish_reason", "a string", reason)
            if payload.get("usage") is not None:
                check_usage(payload, "")
            if "object" not in payload:
                payload["object"] = "chat.completion.chunk"
            model = payload.get("model")
            if not model or (type(model) is not str and not isinstance(model, str)):
                payload["model"] = self.model
            return [payload]
        except MalformedReply as exc:
            raise malformed_chunk(str(exc)) from exc
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
            # A shape no check foresaw: a malformed chunk (named by type, not quoted).
            raise malformed_chunk(type(exc).__name__) from exc


def _check_delta(delta: Mapping[str, Any], index: int) -> None:
    """The fields of a chunk's delta that clients read have their types. The common
    delta (text, maybe a role) is checked inline; the rest only when present."""
    content = delta.get("content")
    role = delta.get("role")
    if (
        (content is None or isinstance(content, str))
        and (role is None or isinstance(role, str))
        and delta.get("tool_calls") is None
        and delta.get("function_call") is None
    ):
        return
    at = f"choices[{index}].delta"
    check_content(delta, at)
    get_str(delta, "role", at)
    check_tool_calls(delta, at, streamed=True)


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
        original = original_of(request)
        if original is not None and original.untranslatable:
            raise Untranslatable("; ".join(original.untranslatable))
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

    def parse_reply(self, payload: object, *, model: str, native: bool = False) -> dict[str, Any]:
        # ``native`` changes nothing: an OpenAI reply is already the internal shape.
        if not isinstance(payload, dict):
            raise MalformedReply(f"reply is not a JSON object (got {type(payload).__name__})")
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices:
            raise MalformedReply("choices: missing or empty")
        for index, choice in enumerate(choices):
            if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
                raise MalformedReply(f"choices[{index}].message: missing or not an object")
            at = f"choices[{index}].message"
            check_content(choice["message"], at)
            get_str(choice["message"], "role", at)
            check_tool_calls(choice["message"], at, streamed=False)
            get_str(choice, "finish_reason", f"choices[{index}]")
        check_usage(payload, "")
        reply = dict(payload)
        if not isinstance(reply.get("model"), str) or not reply["model"]:
            reply["model"] = model
        reply.setdefault("object", "chat.completion")
        return reply

    def stream_decoder(
        self, *, model: str, secrets: Iterable[Secret] = (), native: bool = False
    ) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder(model=model, secrets=secrets)
