"""The adapter interface every wire protocol implements."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import attrs


class MalformedReply(ValueError):
    """A provider answered 2xx with a body that is not a usable reply.

    The message names what is wrong and where (``choices[0].message: missing``).
    """


@attrs.frozen(kw_only=True)
class UpstreamCall:
    """What to send upstream: the adapter's translation of one request."""

    url: str
    headers: Mapping[str, str]
    body: Mapping[str, Any]


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

    def parse_reply(self, payload: object, *, model: str) -> dict[str, Any]:
        """Turn a 2xx JSON payload into an OpenAI chat.completion dict.

        Raises MalformedReply when the payload is not a reply.
        """
        ...


def adapter_for(api: str) -> ProviderAdapter:
    """Return the adapter for ``api`` (see ``ADAPTERS``); KeyError for an unknown api."""
    from oswitch.providers.openai import OpenAIAdapter

    adapters: dict[str, ProviderAdapter] = {"openai": OpenAIAdapter()}
    return adapters[api]
