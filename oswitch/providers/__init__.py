"""Provider adapters: translate OpenAI-shaped requests to a wire protocol and back."""

from oswitch.providers.base import MalformedReply, ProviderAdapter, UpstreamCall, adapter_for

__all__ = ["MalformedReply", "ProviderAdapter", "UpstreamCall", "adapter_for"]
