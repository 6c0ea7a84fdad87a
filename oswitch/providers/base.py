"""The names shared by every provider adapter, importable from here as before: the
interface is defined in oswitch.providers.adapter, the adapters' registry in
oswitch.providers.registry."""

from oswitch.providers.adapter import (
    MalformedReply,
    ProviderAdapter,
    StreamDecoder,
    StreamFault,
    UpstreamCall,
    chunk_facts,
    chunk_finish_reason,
    chunk_has_tool_call,
    chunk_text,
)
from oswitch.providers.registry import adapter_for

__all__ = [
    "MalformedReply",
    "ProviderAdapter",
    "StreamDecoder",
    "StreamFault",
    "UpstreamCall",
    "adapter_for",
    "chunk_facts",
    "chunk_finish_reason",
    "chunk_has_tool_call",
    "chunk_text",
]
