"""OpenCode's ``provider`` section: reading its entries, and resolving targets from them.

A target takes what it leaves out (api, base_url, key, served models, context
window) from the opencode.json provider entry of the same name, then from the
known-provider table (oswitch.known_providers).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, get_args

import attrs

from oswitch.config.model import Api
from oswitch.config.structure import _ENV_NAME, Path_, PathSeg, _Invalid, _kind, _show, _url
from oswitch.core.secret import Secret
from oswitch.known_providers import KNOWN_PROVIDERS, NPM_PACKAGES


@attrs.frozen(kw_only=True)
class _Provider:
    """What one entry of an opencode.json ``provider`` section gives its targets."""

    name: str
    defaults_from: str | None
    api: Api | None
    base_url: str | None
    api_key: str | Secret | None = attrs.field(repr=False)  # never shown, even in debugging
    api_key_env: str | None
    models: tuple[str, ...]
    context_window: int | None
    api_path: Path_
    base_url_path: Path_
    key_path: Path_


_ENV_REF = re.compile(r"\{env:([^}]*)\}")


def _read_provider(name: str, raw: object, at: Path_) -> tuple[_Provider | None, list[_Invalid]]:
    """Read one OpenCode provider entry, in its real or its short shape."""
    problems: list[_Invalid] = []

    def bad(reason: str, *where: PathSeg) -> None:
        problems.append(_Invalid(reason, at + where, absolute=True))

    if not isinstance(raw, Mapping):
        bad(f"expected a mapping (got {_show(raw)})")
        return None, problems
    options = raw.get("options", {})
    if not isinstance(options, Mapping):
        bad(f"expected a mapping (got {_show(options)})", "options")
        options = {}

    defaults_from: str | None = name if name in KNOWN_PROVIDERS else None
    api: Api | None = None
    api_path: Path_ = at
    npm = raw.get("npm")
    if npm is not None:
        api_path = (*at, "npm")
        if not isinstance(npm, str):
            bad(f"expected a string (got {_show(npm)})", "npm")
        elif npm not in NPM_PACKAGES:
            bad(
                f"unsupported package {_show(npm)}: oswitch speaks the OpenAI and Anthropic "
                "APIs (use @ai-sdk/openai-compatible with options.baseURL)",
                "npm",
            )
        else:
            defaults_from = NPM_PACKAGES[npm] or defaults_from
            api = "anthropic" if npm == "@ai-sdk/anthropic" else "openai"
    short_api = raw.get("api")
    if short_api is not None:
        api_path = (*at, "api")
        if short_api in get_args(Api):
            api = short_api
        else:
            bad(f"must be one of {', '.join(get_args(Api))} (got {_show(short_api)})", "api")

    base_url: str | None = None
    short_shape = "options" not in raw and "npm" not in raw
    base_url_path = at + (("baseURL",) if short_shape else ("options", "baseURL"))
    for where, container in ((("options", "baseURL"), options), (("baseURL",), raw)):
        value = container.get(where[-1])
        if value is None:
            continue
        base_url_path = at + where
        if not isinstance(value, str):
            bad(f"expected a string (got {_show(value)})", *where)
        elif _url(value) is not None:
            bad(f"must be an http:// or https:// URL (got {_show(value)})", *where)
        else:
            base_url = value
        break
    resource = options.get("resourceName")
    if base_url is None and isinstance(resource, str) and resource:
        base_url = f"https://{resource}.openai.azure.com/openai/v1"

    api_key: str | None = None
    api_key_env: str | None = None
    key_path = at + (("apiKey",) if short_shape else ("options", "apiKey"))
    for where, container in ((("options", "apiKey"), options), (("apiKey",), raw)):
        value = container.get(where[-1])
        if value is None:
            continue
        key_path = at + where
        if not isinstance(value, str):
            bad(f"expected a string (got {_kind(value)})", *where)
        elif ref := _ENV_REF.fullmatch(value.strip()):
            if _ENV_NAME.fullmatch(ref.group(1)):
                api_key_env = ref.group(1)
            else:
                bad("{env:...} must name an environment variable, like OPENAI_API_KEY", *where)
        elif value.strip().startswith("{file:"):
            bad("{file:...} references are not supported: use {env:VAR}", *where)
        elif not value:
            bad("must not be empty", *where)
        else:
            api_key = value
        break

    models: list[str] = []
    windows: list[int] = []
    raw_models = raw.get("models", {})
    if isinstance(raw_models, list):
        for index, model in enumerate(raw_models):
            if isinstance(model, str) and model:
                models.append(model)
            else:
                bad(f"expected a model name (got {_show(model)})", "models", index)
    elif isinstance(raw_models, Mapping):
        for key, entry in raw_models.items():
            wire_name = key
            if isinstance(entry, Mapping):
                # OpenCode's `id` is the name sent upstream when it differs from the key.
                if isinstance(entry.get("id"), str) and entry["id"]:
                    wire_name = entry["id"]
                limit = entry.get("limit")
                context = limit.get("context") if isinstance(limit, Mapping) else None
                if isinstance(context, int) and not isinstance(context, bool) and context > 0:
                    windows.append(context)
            if wire_name:
                models.append(wire_name)
    else:
        bad(f"expected a mapping of model entries (got {_show(raw_models)})", "models")

    if problems:
        return None, problems
    provider = _Provider(
        name=name,
        defaults_from=defaults_from,
        api=api,
        base_url=base_url,
        api_key=api_key,
        api_key_env=api_key_env,
        models=tuple(models),
        context_window=windows[0] if len(windows) == 1 and len(models) == 1 else None,
        api_path=api_path,
        base_url_path=base_url_path,
        key_path=key_path,
    )
    return provider, problems


@attrs.define
class _ParseContext:
    """State of one parse_config call, read by the target hook."""

    providers: Mapping[str, object]
    providers_path: Path_
    read: dict[str, _Provider | None] = attrs.Factory(dict)
    reported: set[str] = attrs.Factory(set)
    # Problems found while resolving a raw target, keyed by id() of its
    # resolved dict, raised from inside that target's hook so they keep order.
    resolution_problems: dict[int, tuple[int, list[_Invalid]]] = attrs.Factory(dict)

    def provider(self, name: str) -> tuple[_Provider | None, list[_Invalid]]:
        if name not in self.providers:
            return None, []
        if name in self.read:
            return self.read[name], []
        provider, problems = _read_provider(
            name, self.providers[name], (*self.providers_path, name)
        )
        self.read[name] = provider
        return provider, problems


def _resolve_target(
    raw: Mapping[str, Any], index: int, ctx: _ParseContext, *, discovered: bool
) -> dict[str, Any]:
    """Fill api, base_url, the key and serves from the opencode.json provider entry
    of the same name, then from the known-provider table; record what is missing."""
    resolved = dict(raw)
    problems: list[_Invalid] = []
    provider_id = raw.get("provider_id")
    if not isinstance(provider_id, str) or not provider_id.strip():
        return resolved
    entry, entry_problems = ctx.provider(provider_id)
    problems.extend(entry_problems)
    if entry is None and provider_id in ctx.providers:
        # The entry itself is broken and has been reported; guessing further
        # would only add noise.
        ctx.resolution_problems[id(resolved)] = (index, problems)
        return resolved
    table_key = entry.defaults_from if entry is not None else provider_id
    known = KNOWN_PROVIDERS.get(table_key) if table_key is not None else None

    if "api" not in raw:
        api = (entry.api if entry else None) or (known.api if known else None)
        if api is not None:
            resolved["api"] = api

    if "base_url" not in raw:
        base_url = (entry.base_url if entry else None) or (known.base_url if known else None)
        if base_url is not None:
            resolved["base_url"] = base_url
        else:
            if known is not None and known.base_url_hint:
                why = (
                    f"{_show(provider_id)} has no default URL; give one like {known.base_url_hint}"
                )
            else:
                why = f"required, as {_show(provider_id)} is not a well-known provider"
            if discovered and entry is not None:
                problems.append(_Invalid(f"missing: {why}", entry.base_url_path, absolute=True))
            else:
                problems.append(_Invalid(f"missing: {why}", ("base_url",)))

    if raw.get("api_key") is not None and raw.get("api_key_env") is not None:
        problems.append(_Invalid("give api_key or api_key_env, not both", ("api_key",)))
    elif raw.get("api_key") is None and raw.get("api_key_env") is None:
        if entry is not None and entry.api_key is not None:
            resolved["api_key"] = entry.api_key
        elif entry is not None and entry.api_key_env is not None:
            resolved["api_key_env"] = entry.api_key_env
        elif known is not None and known.key_env is not None:
            resolved["api_key_env"] = known.key_env

    if entry is not None:
        if "model" not in raw and "serves" not in raw and entry.models:
            resolved["serves"] = list(entry.models)
        if "context_window" not in raw and entry.context_window is not None:
            resolved["context_window"] = entry.context_window

    if problems:
        ctx.resolution_problems[id(resolved)] = (index, problems)
    return resolved
