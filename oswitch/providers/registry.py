"""The adapter of every wire protocol oswitch speaks, built once.

Adapters hold no state (a stream's state lives in its decoder), so every target
of one ``api`` shares the same adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from oswitch.providers.anthropic import AnthropicAdapter
from oswitch.providers.base import ProviderAdapter
from oswitch.providers.openai import OpenAIAdapter

ADAPTERS: Mapping[str, ProviderAdapter] = MappingProxyType(
    {adapter.api: adapter for adapter in (OpenAIAdapter(), AnthropicAdapter())}
)
"""Each ``api`` value a target may name, mapped to its adapter."""


def adapter_for(api: str) -> ProviderAdapter:
    """Return the adapter for ``api`` ("openai" or "anthropic"); KeyError otherwise."""
    return ADAPTERS[api]
