"""OpenCode's ``provider`` section: reading its entries, and resolving targets from them.

A target takes what it leaves out (api, base_url, key, served models, context
window) from the opencode.json provider entry of the same name, then from the
known-provider table (oswitch.known_providers).

An entry is read in every shape OpenCode and o-switcher write: OpenCode's own
(``npm``, ``options.baseURL`` / ``options.apiKey``, ``models``; or models.dev's
``api`` URL and ``env`` list), and o-switcher's short one (``api`` naming the
well-known provider whose defaults apply, ``apiKey``, ``baseURL``), with
``{env:VAR}`` and ``{file:path}`` references.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from oswitch.config.model import Api
from oswitch.config.problems import ConfigPath, Invalid, PathSeg, PreparedTable, show
from oswitch.config.references import (
    KEY_FILE_LIMIT,
    REFERENCE,
    MissingReference,
    References,
    referenced,
    substitute,
)
from oswitch.config.structure import ENV_NAME, url_problem
from oswitch.core.kinds import kind_of
from oswitch.core.secret import Secret
from oswitch.known_providers import KNOWN_PROVIDERS, NPM_PACKAGES, UNSUPPORTED_PROVIDERS

# KEY_FILE_LIMIT and References live in oswitch.config.references; importable here too.
__all__ = ["KEY_FILE_LIMIT", "ProviderEntries", "References", "resolve_target"]


@attrs.frozen(kw_only=True)
class _Provider:
    """What one entry of an opencode.json ``provider`` section gives its targets."""

    name: str
    defaults_from: str | None
    api: Api | None
    base_url: str | None
    api_key: str | Secret | None = attrs.field(repr=False)  # never shown, even in debugging
    api_key_env: str | None
    key_missing: bool  # its key is a {file:...} that is not there: its targets start disabled
    models: tuple[str, ...]
    context_window: int | None
    api_path: ConfigPath
    base_url_path: ConfigPath
    key_path: ConfigPath
    unsupported: Invalid | None  # why oswitch cannot serve it, and where that is said


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


def _is_url_like(value: str) -> bool:
    # models.dev (and so OpenCode's own schema) spells the API's root URL as `api`.
    return value.startswith(("http://", "https://")) or REFERENCE.search(value) is not None


class _EntryReader:
    """Reads one provider entry, collecting its problems (paths in the document)
    and warnings."""

    def __init__(self, name: str, raw: Mapping[str, Any], at: ConfigPath, refs: References) -> None:
        self.name, self.raw, self.at, self.refs = name, raw, at, refs
        self.problems: list[Invalid] = []
        self.warnings: list[Invalid] = []

    def bad(self, reason: str, *where: PathSeg) -> None:
        self.problems.append(Invalid(reason, self.at + where, absolute=True))

    def url(self, value: object, where: ConfigPath) -> str | None:
        """A URL option, its references read; None (and a problem) when unusable."""
        if not isinstance(value, str):
            self.bad(f"expected a string (got {show(value)})", *where)
            return None
        try:
            url = substitute(value, self.refs)
        except Invalid as exc:
            self.bad(exc.reason, *where)
            return None
        except MissingReference as exc:
            self.bad(f"missing: {exc.what}", *where)
            return None
        if (reason := url_problem(url)) is not None:
            # Shown as written: a value read from a reference is never echoed.
            self.bad(f"{reason} (got {show(value)})", *where)
            return None
        return url

    def key(self, value: object, where: ConfigPath) -> tuple[str | None, str | None, bool]:
        """``(api_key, api_key_env, key_missing)`` from an apiKey option."""
        if not isinstance(value, str):
            self.bad(f"expected a string (got {kind_of(value)})", *where)
            return None, None, False
        ref = REFERENCE.fullmatch(value.strip())
        if ref is not None and ref[1] == "env":
            if ENV_NAME.fullmatch(ref[2]):
                # Read by the runtime, not now: a key set later is picked up (the
                # one "credential refresh"), and a missing one is only a warning.
                return None, ref[2], False
            self.bad("{env:...} must name an environment variable, like OPENAI_API_KEY", *where)
        elif ref is not None:
            try:
                return referenced("file", ref[2], self.refs), None, False
            except Invalid as exc:
                self.bad(exc.reason, *where)
            except MissingReference as exc:
                self.warnings.append(
                    Invalid(
                        f"key missing: {exc.what}; {show(self.name)} starts disabled "
                        f"({exc.do}, then reload)",
                        self.at + where,
                        absolute=True,
                    )
                )
                return None, None, True
        elif REFERENCE.search(value):
            self.bad("a reference must be the whole value: {env:VAR} or {file:path}", *where)
        elif not value:
            self.bad("must not be empty", *where)
        else:
            return value, None, False
        return None, None, False

    def key_env_list(self, value: object) -> str | None:
        """models.dev's ``env``: the variables that may hold the key; the first is used."""
        names = value if isinstance(value, list) else None
        if not names or not all(isinstance(n, str) and ENV_NAME.fullmatch(n) for n in names):
            self.bad("expected a list of environment variable names", "env")
            return None
        first: str = names[0]
        return first

    def models(self) -> tuple[list[str], list[int]]:
        models: list[str] = []
        windows: list[int] = []
        raw_models = self.raw.get("models", {})
        if isinstance(raw_models, list):
            for index, model in enumerate(raw_models):
                if isinstance(model, str) and model:
                    models.append(model)
                else:
                    self.bad(f"expected a model name (got {show(model)})", "models", index)
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
            self.bad(f"expected a mapping of model entries (got {show(raw_models)})", "models")
        return models, windows


def _read_provider(
    name: str, raw: object, at: ConfigPath, refs: References
) -> tuple[_Provider | None, list[Invalid], list[Invalid]]:
    """Read one OpenCode provider entry: ``(provider, problems, warnings)``. An entry
    oswitch cannot serve comes back with ``unsupported`` set and no problems."""
    if not isinstance(raw, Mapping):
        return None, [Invalid(f"expected a mapping (got {show(raw)})", at, absolute=True)], []
    reader = _EntryReader(name, raw, at, refs)
    options = raw.get("options", {})
    if not isinstance(options, Mapping):
        reader.bad(f"expected a mapping (got {show(options)})", "options")
        options = {}

    defaults_from: str | None = name if name in KNOWN_PROVIDERS else None
    api: Api | None = None
    api_path: ConfigPath = at
    unsupported: Invalid | None = None
    npm = raw.get("npm")
    if npm is not None:
        api_path = (*at, "npm")
        if not isinstance(npm, str):
            reader.bad(f"expected a string (got {show(npm)})", "npm")
        elif npm not in NPM_PACKAGES:
            unsupported = Invalid(
                f"unsupported package {show(npm)}: oswitch speaks the OpenAI and Anthropic "
                "APIs (use @ai-sdk/openai-compatible with options.baseURL)",
                api_path,
                absolute=True,
            )
        else:
            defaults_from = NPM_PACKAGES[npm] or defaults_from
            api = "anthropic" if npm == "@ai-sdk/anthropic" else "openai"
    api_url: str | None = None
    named = raw.get("api")
    if named is not None:
        if not isinstance(named, str):
            reader.bad(f"expected a string (got {show(named)})", "api")
        elif _is_url_like(named):
            api_url = named
        elif named in KNOWN_PROVIDERS:
            # o-switcher's short shape: `api` names the provider whose defaults
            # apply, exactly as an npm package does; the entry's name is a label.
            api_path = (*at, "api")
            defaults_from = named
            api = KNOWN_PROVIDERS[named].api
        elif named in UNSUPPORTED_PROVIDERS:
            unsupported = Invalid(
                f"{show(named)} is not supported: {UNSUPPORTED_PROVIDERS[named]}",
                (*at, "api"),
                absolute=True,
            )
        else:
            reader.bad(
                f"must name a well-known provider ({', '.join(KNOWN_PROVIDERS)}) or be the "
                f"API's URL (got {show(named)})",
                "api",
            )

    short_shape = "options" not in raw and "npm" not in raw
    value, where = _option(raw, options, "baseURL", short_shape=short_shape)
    url_given = value is not None or api_url is not None
    if value is None and api_url is not None:
        value, where = api_url, ("api",)
    base_url_path = at + where
    base_url = reader.url(value, where) if value is not None else None
    resource = options.get("resourceName")
    if base_url is None and isinstance(resource, str) and resource:
        try:
            resource = substitute(resource, refs)
        except (Invalid, MissingReference) as exc:
            reader.bad(f"cannot build the Azure URL: {exc}", "options", "resourceName")
        else:
            base_url = f"https://{resource}.openai.azure.com/openai/v1"

    api_key: str | None = None
    api_key_env: str | None = None
    key_missing = False
    value, where = _option(raw, options, "apiKey", short_shape=short_shape)
    key_path = at + where
    if value is not None:
        api_key, api_key_env, key_missing = reader.key(value, where)
    elif raw.get("env") is not None:
        key_path = (*at, "env")
        api_key_env = reader.key_env_list(raw["env"])

    models, windows = reader.models()

    # Named like one of OpenCode's own providers oswitch cannot speak to, and not
    # made into something else (a package, the URL of a proxy in front of it).
    remade = npm is not None or named is not None or url_given
    if unsupported is None and name in UNSUPPORTED_PROVIDERS and not remade:
        unsupported = Invalid(
            f"{show(name)} is not supported: {UNSUPPORTED_PROVIDERS[name]}", at, absolute=True
        )
    if unsupported is None and reader.problems:
        return None, reader.problems, reader.warnings
    provider = _Provider(
        name=name,
        defaults_from=defaults_from,
        api=api,
        base_url=base_url,
        api_key=api_key,
        api_key_env=api_key_env,
        key_missing=key_missing,
        models=tuple(models),
        context_window=windows[0] if len(windows) == 1 and len(models) == 1 else None,
        api_path=api_path,
        base_url_path=base_url_path,
        key_path=key_path,
        unsupported=unsupported,
    )
    if unsupported is not None:
        return provider, [], []
    return provider, [], reader.warnings


@attrs.define
class ProviderEntries:
    """An opencode.json ``provider`` section, each entry read once, when first asked for.

    ``warnings`` collects what the entries read so far warn about (a key file not
    there), in the order they were read.
    """

    entries: Mapping[str, object]
    path: ConfigPath  # where the section is in the document
    refs: References = attrs.field(factory=References)
    warnings: list[Invalid] = attrs.field(factory=list, init=False)
    _read: dict[str, tuple[_Provider | None, list[Invalid]]] = attrs.field(factory=dict, init=False)

    def entry_path(self, name: str) -> ConfigPath:
        return (*self.path, name)

    def _entry(self, name: str) -> tuple[_Provider | None, list[Invalid]]:
        if name not in self._read:
            provider, problems, warnings = _read_provider(
                name, self.entries[name], self.entry_path(name), self.refs
            )
            self._read[name] = (provider, problems)
            self.warnings.extend(warnings)
        return self._read[name]

    def read(self, name: str) -> tuple[_Provider | None, list[Invalid]]:
        """Entry ``name`` (None when absent or broken) and, the first time this is
        called for it, its problems."""
        if name not in self.entries:
            return None, []
        provider, problems = self._entry(name)
        self._read[name] = (provider, [])
        return provider, problems

    def unsupported(self, name: str) -> Invalid | None:
        """Why entry ``name`` is one oswitch cannot serve (at the entry's path), or
        None. Reads the entry; its problems still come with the first ``read``."""
        provider, _ = self._entry(name)
        return provider.unsupported if provider is not None else None


def resolve_target(
    raw: Mapping[str, Any], providers: ProviderEntries, *, discovered: bool
) -> PreparedTable:
    """Fill api, base_url, the key and serves from the opencode.json provider entry
    of the same name, then from the known-provider table; the problems found (what
    is missing, what the entry gets wrong) travel with the returned table to its
    structure hook. ``discovered``: the target exists only as its provider entry, so
    what it lacks is reported at the entry (an unsupported entry is never
    discovered: the caller skips it). A target inheriting a key file that is not
    there starts disabled. Raises nothing."""
    resolved = dict(raw)
    problems: list[Invalid] = []
    provider_id = raw.get("provider_id")
    if not isinstance(provider_id, str) or not provider_id.strip():
        return PreparedTable(resolved)
    entry, entry_problems = providers.read(provider_id)
    problems.extend(entry_problems)
    if entry is not None and entry.unsupported is not None:
        # Asked for by name, so not skipped: the target cannot be served.
        problems.append(entry.unsupported)
        return PreparedTable(resolved, problems)
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
        if entry is not None and entry.key_missing:
            resolved["enabled"] = False
        elif entry is not None and entry.api_key is not None:
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
