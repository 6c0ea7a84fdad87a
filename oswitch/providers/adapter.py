"""The adapter interface every wire protocol implements, and what it hands back: the
call to send, the faults it raises, and how a chunk it produced is read.

Which adapters there are is oswitch.providers.registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from oswitch.core.classify import Classification
from oswitch.core.immutable import immutable
from oswitch.core.secret import Secret


class MalformedReply(ValueError):
    """A provider answered 2xx with a body that is not a usable reply.

    The message names what is wrong and where (``choices[0].message: missing``).
    """


class Untranslatable(ValueError):
    """The request needs what this adapter's protocol cannot carry (the message says
    what, by path): the caller's request is refused, never sent with it missing."""


class StreamFault(Exception):
    """A stream went wrong in-band: an ``error`` event, or a chunk that is not valid.

    ``classification`` is what the fault means for the target (an Anthropic
    ``overloaded_error`` is ModelUnavailable, a malformed chunk a
    TransientServerFailure); whether it becomes InterruptedExecution is the
    engine's call, by whether content had begun.
    """

    def __init__(self, classification: Classification) -> None:
        super().__init__(classification.message or str(classification.error_class))
        self.classification = classification


@immutable(kw_only=True)
class UpstreamCall:
    """What to send upstream: the adapter's translation of one request."""

    url: str
    headers: Mapping[str, str]
    body: Mapping[str, Any]


class StreamDecoder(Protocol):
    """Turns one provider's SSE events into OpenAI ``chat.completion.chunk`` dicts."""

    finished: bool
    """True once the provider's terminator (``[DONE]``, ``message_stop``) arrived."""

    def feed(self, event: str, data: str) -> list[dict[str, Any]]:
        """Decode one SSE event (its ``event:`` name, possibly empty, and ``data``).

        Returns the chunks it yields (often none: pings, bookkeeping events).
        Raises StreamFault for an error event or a chunk that cannot be decoded,
        including one whose fields have the wrong types.
        """
        ...


class ProviderAdapter(Protocol):
    """Translates between OpenAI chat-completions dicts and one provider protocol."""

    api: str

    def build_call(
        self,
        request: Mapping[str, Any],
        *,
        base_url: str,
        model: str,
        api_key: str | None,
        stream: bool,
    ) -> UpstreamCall:
        """Return the upstream call for ``request`` sent to ``model``."""
        ...

    def parse_reply(self, payload: object, *, model: str, native: bool = False) -> dict[str, Any]:
        """Turn a 2xx JSON payload into an OpenAI chat.completion dict. ``native``: the
        request arrived in this adapter's own protocol, so the reply keeps what the
        OpenAI shape drops under ``oswitch_native`` (oswitch.core.inbound.NATIVE_KEY).

        Raises MalformedReply when the payload is not a reply, or a field oswitch or
        its callers read has the wrong type (the message names the field, never
        quoting the provider's text).
        """
        ...

    def stream_decoder(
        self, *, model: str, secrets: Iterable[Secret] = (), native: bool = False
    ) -> StreamDecoder:
        """A fresh decoder for one streamed reply from ``model``; ``secrets`` (the
        configured keys) are scrubbed from its faults' messages; ``native`` as for
        :meth:`parse_reply` (chunks keep what the OpenAI shape drops)."""
        ...


def chunk_facts(chunk: Mapping[str, Any]) -> tuple[str, bool, str | None]:
    """A chunk's text, whether it carries a tool call, and its finish reason, in one look
    at its first choice (what :func:`chunk_text`, :func:`chunk_has_tool_call` and
    :func:`chunk_finish_reason` say one by one)."""
    choices = chunk.get("choices")
    if not choices:
        return "", False, None
    choice = choices[0]
    delta = choice.get("delta") or {}
    content = delta.get("content")
    reason = choice.get("finish_reason")
    return (
        content if isinstance(content, str) else "",
        bool(delta.get("tool_calls") or delta.get("function_call")),
        reason if isinstance(reason, str) else None,
    )


def chunk_text(chunk: Mapping[str, Any]) -> str:
    """The assistant text a chunk carries (its first choice's ``delta.content``)."""
    return chunk_facts(chunk)[0]


def chunk_has_tool_call(chunk: Mapping[str, Any]) -> bool:
    """Whether a chunk's first choice carries a tool (or function) call."""
    return chunk_facts(chunk)[1]


def chunk_finish_reason(chunk: Mapping[str, Any]) -> str | None:
    """A chunk's first choice's finish reason, or None."""
    return chunk_facts(chunk)[2]
