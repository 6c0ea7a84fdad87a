"""What one exchange asks of a target and reads back, apart from the exchange itself:
whether a stream asks for its usage chunk (and the request that asks), and the checks
on a reply's shape and size (event stream or not, JSON, a bounded body), with the
TransientServerFailure classification a bad reply gets. No state; the read is the
only await.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import httpx

from oswitch.config import TargetConfig
from oswitch.core.classify import Classification
from oswitch.core.error_class import ErrorClass
from oswitch.core.json_codec import decode
from oswitch.providers.base import MalformedReply, UpstreamCall
from oswitch.transport.response import PoolResponse

# A reply body larger than this is refused as malformed rather than buffered.
MAX_REPLY_BYTES = 32 * 1024 * 1024

# OpenAI-wire providers documented to take ``stream_options.include_usage`` (and send
# the usage chunk it asks for): a stream to them asks for usage when the caller did
# not. Any other target asks only with ``stream_usage = true``.
STREAM_USAGE_PROVIDERS = frozenset(
    {"openai", "azure", "groq", "openrouter", "deepseek", "together", "fireworks", "xai", "vllm"}
)


def asks_stream_usage(target: TargetConfig) -> bool:
    """Whether streams to ``target`` ask for usage (its ``stream_usage``, else whether
    it is a known OpenAI-wire provider that accepts it)."""
    if target.api != "openai":
        return False  # Anthropic's stream always reports usage
    if target.stream_usage is not None:
        return target.stream_usage
    return target.provider_id in STREAM_USAGE_PROVIDERS


def caller_asked_usage(request: Mapping[str, Any]) -> bool:
    """Whether the caller's own request asks for a stream's usage chunk."""
    options = request.get("stream_options")
    return (
        options is not None
        and isinstance(options, Mapping)
        and options.get("include_usage") is True
    )


def with_stream_usage(call: UpstreamCall) -> UpstreamCall:
    """``call`` asking for a stream's usage chunk: ``stream_options.include_usage``
    set, any other stream_options the call carried kept."""
    options = call.body.get("stream_options")
    extra = dict(options) if options is not None and isinstance(options, Mapping) else {}
    body = {**call.body, "stream_options": {**extra, "include_usage": True}}
    return attrs.evolve(call, body=body)


def transient(message: str, *, status: int | None = None) -> Classification:
    """A TransientServerFailure with ``message`` (the provider's fault, or ours)."""
    return Classification(
        error_class=ErrorClass.TRANSIENT_SERVER_FAILURE,
        retry_after=None,
        message=message,
        status=status,
    )


def is_event_stream(status: int, headers: httpx.Headers) -> bool:
    """Whether a reply is a successful event stream (else it is read whole)."""
    return 200 <= status < 300 and "text/event-stream" in headers.get("content-type", "")


def decode_json(body: bytes) -> Any:
    """The JSON value of ``body``; MalformedReply for one that is not JSON, or nested
    too deeply to decode (a RecursionError is the reply's fault, not the transport's)."""
    try:
        return decode(body)
    except ValueError as exc:
        raise MalformedReply(str(exc)) from None
    except RecursionError:
        raise MalformedReply("JSON nested too deeply") from None


async def read_limited(response: httpx.Response, limit: int) -> bytes:
    """The whole body of ``response``; blocks while it is read. Raises MalformedReply
    (without reading further) once it is over ``limit`` bytes; transport errors
    propagate to the caller, which classifies them."""
    raw = response.claim_raw_body() if isinstance(response, PoolResponse) else None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes() if raw is None else raw:
        size += len(chunk)
        if size > limit:
            raise MalformedReply(f"reply body over {limit} bytes")
        chunks.append(chunk)
    if raw is not None:
        await response.aclose()
    return b"".join(chunks)
