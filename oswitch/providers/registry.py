"""The provider adapters by the wire protocol they speak, each built once."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from oswitch.providers.adapter import ProviderAdapter
from oswitch.providers.anthropic import AnthropicAdapter
from oswitch.providers.openai import OpenAIAdapter

# Adapters hold no state (each stream gets a fresh decoder), so one of each serves
# every target.
ADAPTERS: Mapping[str, ProviderAdapter] = MappingProxyType(
    {"openai": OpenAIAdapter(), "anthropic": AnthropicAdapter()}
)
"""Every adapter, by the ``api`` a target names ("openai", "anthropic")."""


def adapter_for(api: str) -> ProviderAdapter:
    """Return the adapter for ``api`` ("openai" or "anthropic"); KeyError otherwise."""
    return ADAPTERS[api]
