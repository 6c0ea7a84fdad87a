"""Defaults for well-known ``provider_id`` values, and OpenCode's npm package names.

A target that names a provider listed here may leave out ``api``, ``base_url`` and
its key variable. ``base_url`` always includes the API's version prefix, exactly
as the OpenAI and Anthropic SDKs (and OpenCode's ``options.baseURL``) spell it:
adapters append ``/chat/completions`` (OpenAI wire) or ``/messages`` (Anthropic).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

import attrs

ApiName = Literal["openai", "anthropic"]


@attrs.frozen(kw_only=True)
class KnownProvider:
    """What oswitch assumes for one ``provider_id`` unless the target says otherwise.

    ``base_url`` is None when no URL fits everyone (Azure: one per resource); such
    a target must give its own, and ``base_url_hint`` shows its shape. ``key_env``
    is None for local servers that take no key.
    """

    provider_id: str
    api: ApiName
    base_url: str | None
    key_env: str | None
    base_url_hint: str | None = None
    description: str = ""


_ENTRIES = (
    KnownProvider(
        provider_id="openai",
        api="openai",
        base_url="https://api.openai.com/v1",
        key_env="OPENAI_API_KEY",
        description="OpenAI",
    ),
    KnownProvider(
        provider_id="anthropic",
        api="anthropic",
        base_url="https://api.anthropic.com/v1",
        key_env="ANTHROPIC_API_KEY",
        description="Anthropic Messages API",
    ),
    KnownProvider(
        provider_id="azure",
        api="openai",
        base_url=None,
        key_env="AZURE_OPENAI_API_KEY",
        base_url_hint="https://<resource>.openai.azure.com/openai/v1",
        description="Azure OpenAI v1 API; model = deployment name",
    ),
    KnownProvider(
        provider_id="gemini",
        api="openai",
        base_url="https://generativelanguage.googleapis.com/v1beta/openai",
        key_env="GEMINI_API_KEY",
        description="Google Gemini, OpenAI-compatible endpoint",
    ),
    KnownProvider(
        provider_id="google",
        api="openai",
        base_url="https://generativelanguage.googleapis.com/v1beta/openai",
        key_env="GOOGLE_GENERATIVE_AI_API_KEY",
        description="Gemini under OpenCode's provider id (its key variable)",
    ),
    KnownProvider(
        provider_id="groq",
        api="openai",
        base_url="https://api.groq.com/openai/v1",
        key_env="GROQ_API_KEY",
        description="Groq",
    ),
    KnownProvider(
        provider_id="mistral",
        api="openai",
        base_url="https://api.mistral.ai/v1",
        key_env="MISTRAL_API_KEY",
        description="Mistral La Plateforme",
    ),
    KnownProvider(
        provider_id="openrouter",
        api="openai",
        base_url="https://openrouter.ai/api/v1",
        key_env="OPENROUTER_API_KEY",
        description="OpenRouter",
    ),
    KnownProvider(
        provider_id="deepseek",
        api="openai",
        base_url="https://api.deepseek.com/v1",
        key_env="DEEPSEEK_API_KEY",
        description="DeepSeek",
    ),
    KnownProvider(
        provider_id="together",
        api="openai",
        base_url="https://api.together.xyz/v1",
        key_env="TOGETHER_API_KEY",
        description="Together AI",
    ),
    KnownProvider(
        provider_id="fireworks",
        api="openai",
        base_url="https://api.fireworks.ai/inference/v1",
        key_env="FIREWORKS_API_KEY",
        description="Fireworks AI",
    ),
    KnownProvider(
        provider_id="xai",
        api="openai",
        base_url="https://api.x.ai/v1",
        key_env="XAI_API_KEY",
        description="xAI (Grok)",
    ),
    KnownProvider(
        provider_id="cerebras",
        api="openai",
        base_url="https://api.cerebras.ai/v1",
        key_env="CEREBRAS_API_KEY",
        description="Cerebras",
    ),
    KnownProvider(
        provider_id="ollama",
        api="openai",
        base_url="http://127.0.0.1:11434/v1",
        key_env=None,
        description="Ollama on this machine (no key)",
    ),
    KnownProvider(
        provider_id="lmstudio",
        api="openai",
        base_url="http://127.0.0.1:1234/v1",
        key_env=None,
        description="LM Studio on this machine (no key)",
    ),
    KnownProvider(
        provider_id="vllm",
        api="openai",
        base_url="http://127.0.0.1:8000/v1",
        key_env=None,
        description="vLLM on this machine (no key)",
    ),
    KnownProvider(
        provider_id="llamacpp",
        api="openai",
        base_url="http://127.0.0.1:8080/v1",
        key_env=None,
        description="llama.cpp server on this machine (no key)",
    ),
)

KNOWN_PROVIDERS: Mapping[str, KnownProvider] = MappingProxyType(
    {entry.provider_id: entry for entry in _ENTRIES}
)
"""Every well-known ``provider_id``, in the order the docs list them."""

# OpenCode picks a provider's client by npm package; these speak a wire protocol
# oswitch has an adapter for. The value is the KNOWN_PROVIDERS entry whose
# defaults apply, or None for the generic OpenAI-compatible client (which needs
# options.baseURL unless the provider's name is itself a known provider_id).
NPM_PACKAGES: Mapping[str, str | None] = MappingProxyType(
    {
        "@ai-sdk/openai": "openai",
        "@ai-sdk/anthropic": "anthropic",
        "@ai-sdk/azure": "azure",
        "@ai-sdk/google": "google",
        "@ai-sdk/groq": "groq",
        "@ai-sdk/mistral": "mistral",
        "@ai-sdk/deepseek": "deepseek",
        "@ai-sdk/togetherai": "together",
        "@ai-sdk/fireworks": "fireworks",
        "@ai-sdk/xai": "xai",
        "@ai-sdk/cerebras": "cerebras",
        "@openrouter/ai-sdk-provider": "openrouter",
        "@ai-sdk/openai-compatible": None,
    }
)


# OpenCode providers oswitch cannot speak to (their APIs are neither OpenAI's nor
# Anthropic's, or they sign requests in their own way), with why. An opencode.json
# entry of one of these names is skipped at discovery, with a warning, unless it
# names a package and URL oswitch can use (an OpenAI-compatible proxy, say).
UNSUPPORTED_PROVIDERS: Mapping[str, str] = MappingProxyType(
    {
        "amazon-bedrock": "Amazon Bedrock signs its requests with AWS SigV4",
        "google-vertex": "Vertex AI signs in with Google Cloud credentials",
        "google-vertex-anthropic": "Vertex AI signs in with Google Cloud credentials",
        "github-copilot": "GitHub Copilot signs in with OAuth",
        "sap-ai-core": "SAP AI Core signs in with OAuth service keys",
    }
)


def known_provider(provider_id: str) -> KnownProvider | None:
    """Return the defaults for ``provider_id``, or None when it is not well known.

    Raises nothing.
    """
    return KNOWN_PROVIDERS.get(provider_id)
