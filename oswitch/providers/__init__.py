"""Provider adapters: translate OpenAI-shaped requests to a wire protocol and back."""

from oswitch.providers.adapter import MalformedReply, ProviderAdapter, UpstreamCall
from oswitch.providers.registry import ADAPTERS, adapter_for

__all__ = ["ADAPTERS", "MalformedReply", "ProviderAdapter", "UpstreamCall", "adapter_for"]
