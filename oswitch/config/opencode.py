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
from oswitch.config.problems import ConfigPath, Invalid, PathSeg, PreparedTable, show
from oswitch.config.structure import ENV_NAME, url_problem
from oswitch.core.kinds import kind_of
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
    api_path: ConfigPath
    base_url_path: ConfigPath
    key_path: ConfigPath


_ENV_REF = re.compile(r"\{env:([^}]*)\}")


def _option(
    raw: Mapping[str, Any], options: Mapping[str, Any], name: str, *, short_shape: bool
) -> tuple[object, ConfigPath]:
    """An entry's option ``name`` (from ``options``, else from the entry itself, as the
    short shape writes it) and where it was found, relative to the entry; when it is
    absent, None and where it belongs."""
    for where, container in ((("options", name), options), ((name,), raw)):
        value = container.get(name)
        if value is not None:
            return value, where
    return None, ((name,) if short_shape else ("options", name))


def _read_provider(
    name: str, raw: object, at: ConfigPath
) -> tuple[_Provider | None, list[Invalid]]:
    """Read one OpenCode provider entry, in its real or its short shape."""
    problems: list[Invalid] = []

    def bad(reason: str, *where: PathSeg) -> None:
        problems.append(Invalid(reason, at + where, absolute=True))

    if not isinstance(raw, Mapping):
        bad(f"expected a mapping (got {show(raw)})")
        return None, problems
    options = raw.get("options", {})
    if not isinstance(options, Mapping):
        bad(f"expected a mapping (got {show(options)})", "options")
        options = {}

    defaults_from: str | None = name if name in KNOWN_PROVIDERS else None
    api: Api | None = None
    api_path: ConfigPath = at
    npm = raw.get("npm")
    if npm is not None:
        api_path = (*at, "npm")
        if not isinstance(npm, str):
            bad(f"expected a string (got {show(npm)})", "npm")
        elif npm not in NPM_PACKAGES:
            bad(
                f"unsupported package {show(npm)}: oswitch speaks the OpenAI and Anthropic "
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
            bad(f"must be one of {', '.join(get_args(Api))} (got {show(short_api)})", "api")

    base_url: str | None = None
    short_shape = "options" not in raw and "npm" not in raw
    value, where = _option(raw, options, "baseURL", short_shape=short_shape)
    base_url_path = at + where
    if value is None:
        pass
    elif not isinstance(value, str):
        bad(f"expected a string (got {show(value)})", *where)
    elif (reason := url_problem(value)) is not None:
        bad(f"{reason} (got {show(value)})", *where)
    else:
        base_url = value
    resource = options.get("resourceName")
    if base_url is None and isinstance(resource, str) and resource:
        base_url = f"https://{resource}.openai.azure.com/openai/v1"

    api_key: str | None = None
    api_key_env: str | None = None
    value, where = _option(raw, options, "apiKey", short_shape=short_shape)
    key_path = at + where
    if value is None:
        pass
    elif not isinstance(value, str):
        bad(f"expected a string (got {kind_of(value)})", *where)
    elif ref := _ENV_REF.fullmatch(value.strip()):
        if ENV_NAME.fullmatch(ref.group(1)):
            api_key_env = ref.group(1)
        else:
            bad("{env:...} must name an environment variable, like OPENAI_API_KEY", *where)
    elif value.strip().startswith("{file:"):
        bad("{file:...} references are not supported: use {env:VAR}", *where)
    elif not value:
        bad("must not be empty", *where)
    else:
        api_key = value

    models: list[str] = []
    windows: list[int] = []
    raw_models = raw.get("models", {})
    if isinstance(raw_models, list):
        for index, model in enumerate(raw_models):
            if isinstance(model, str) and model:
                models.append(model)
            else:
                bad(f"expected a model name (got {show(model)})", "models", index)
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
        bad(f"expected a mapping of model entries (got {show(raw_models)})", "models")

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
class ProviderEntries:
    """An opencode.json ``provider`` section, each entry read once, when first asked for."""

    entries: Mapping[str, object]
    path: ConfigPath  # where the section is in the document
    _read: dict[str, _Provider | None] = attrs.field(factory=dict, init=False)

    def entry_path(self, name: str) -> ConfigPath:
        return (*self.path, name)

    def read(self, name: str) -> tuple[_Provider | None, list[Invalid]]:
        """Entry ``name`` (None when absent or broken) and, the first time it is read,
        its problems."""
        if name not in self.entries:
            return None, []
        if name in self._read:
            return self._read[name], []
        provider, problems = _read_provider(name, self.entries[name], self.entry_path(name))
        self._read[name] = provider
        return provider, problems


def resolve_target(
    raw: Mapping[str, Any], providers: ProviderEntries, *, discovered: bool
) -> PreparedTable:
    """Fill api, base_url, the key and serves from the opencode.json provider entry
    of the same name, then from the known-provider table; the problems found (what
    is missing, what the entry gets wrong) travel with the returned table to its
    structure hook. ``discovered``: the target exists only as its provider entry, so
    what it lacks is reported at the entry. Raises nothing."""
    resolved = dict(raw)
    problems: list[Invalid] = []
    provider_id = raw.get("provider_id")
    if not isinstance(provider_id, str) or not provider_id.strip():
        return PreparedTable(resolved)
    entry, entry_problems = providers.read(provider_id)
    problems.extend(entry_problems)
    if entry is None and provider_id in providers.entries:
        # The entry itself is broken and has been reported; guessing further
        # would only add noise.
        return PreparedTable(resolved, problems)
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
                why = f"{show(provider_id)} has no default URL; give one like {known.base_url_hint}"
            else:
                why = f"required, as {show(provider_id)} is not a well-known provider"
            if discovered and entry is not None:
                problems.append(Invalid(f"missing: {why}", entry.base_url_path, absolute=True))
            else:
                problems.append(Invalid(f"missing: {why}", ("base_url",)))

    if raw.get("api_key") is not None and raw.get("api_key_env") is not None:
        problems.append(Invalid("give api_key or api_key_env, not both", ("api_key",)))
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

    return PreparedTable(resolved, problems)
