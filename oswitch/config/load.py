"""The public entry points: parse_config, load_config, validate_config, describe_target(s)."""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any, cast

import attrs

from oswitch.config.advice import advise
from oswitch.config.files import FileTooBig, NotRegularFile, read_regular_file
from oswitch.config.model import MODEL_CLASSES, SHORTHANDS, SwitcherConfig, TargetConfig
from oswitch.config.opencode import ProviderEntries, resolve_target
from oswitch.config.problems import ConfigPath, Invalid, PreparedTable, Problems, show
from oswitch.config.references import References
from oswitch.config.report import ConfigReport
from oswitch.config.structure import structure_switcher
from oswitch.errors import ConfigError

_MISSING = object()


def parse_config(
    mapping: Mapping[str, Any],
    *,
    source: str | None = None,
    report: ConfigReport | None = None,
) -> SwitcherConfig:
    """Validate ``mapping`` (a parsed TOML/JSON document) into a SwitcherConfig.

    A mapping with ``provider`` or ``switcher`` at the top level is an opencode.json:
    its ``switcher`` section is oswitch's, and without ``switcher.targets`` each
    entry of ``provider`` becomes a target (an entry oswitch cannot serve is
    skipped, with a warning). Otherwise the whole mapping is oswitch's section.
    Defaults are resolved (see docs/configuration.md). ``source`` (a file name) is
    added to the error as a note, and is where relative ``{file:...}`` paths start.
    ``report``, when given, receives the warnings (a skipped provider, a key file
    not there, contradictory or unsafe settings) and where oswitch's section is.

    Raises ConfigError listing every problem as ``(path, reason)``; no secret
    value ever appears in it, nor in a warning.
    """
    problems = Problems()
    if not isinstance(mapping, Mapping):
        problems.add((), f"expected a mapping at the top level (got {show(mapping)})")
        raise problems.error(source=source)

    prefix: ConfigPath = ()
    section: Mapping[str, Any] = mapping
    raw_entries: Mapping[str, Any] = {}
    opencode = "provider" in mapping or "switcher" in mapping
    if opencode:
        prefix = ("switcher",)
        section, raw_entries = {}, {}
        raw_section, raw_providers = mapping.get("switcher", {}), mapping.get("provider", {})
        if isinstance(raw_section, Mapping):
            section = raw_section
        else:
            problems.add(prefix, f"expected a mapping (got {show(raw_section)})")
        if isinstance(raw_providers, Mapping):
            raw_entries = raw_providers
        else:
            problems.add(("provider",), f"expected a mapping (got {show(raw_providers)})")

    own = dict(section)
    renamed: dict[str, str] = {}
    for short, long in SHORTHANDS.items():
        if short not in own:
            continue
        value = own.pop(short)
        if long not in own:
            own[long] = value
            renamed[long] = short
        elif not _same_value(value, own[long]):
            problems.add(
                (*prefix, short),
                f"conflicts with {long} ({show(value)} vs {show(own[long])}): "
                "give only one of them",
            )

    providers = ProviderEntries(
        entries=raw_entries, path=("provider",), refs=References.of_source(source)
    )
    discovered: dict[int, str] = {}
    prepared: dict[int, PreparedTable] = {}  # by index in targets
    raw_targets = own.get("targets", _MISSING)
    discovering = raw_targets is _MISSING and opencode and "provider" in mapping
    if discovering:
        # OpenCode's own keys: names of providers to leave out, or the only ones to
        # keep (anything but a list of names is ignored).
        listed = mapping.get("disabled_providers", [])
        disabled = {n for n in listed if isinstance(n, str)} if isinstance(listed, list) else set()
        only = mapping.get("enabled_providers")
        kept = {n for n in only if isinstance(n, str)} if isinstance(only, list) else None
        skipped: list[str] = []
        for name in raw_entries:
            unsupported = providers.unsupported(str(name))
            if unsupported is not None:
                # One provider oswitch cannot speak to does not sink the file.
                providers.warnings.append(
                    Invalid(f"skipped: {unsupported.reason}", unsupported.at, absolute=True)
                )
                skipped.append(str(name))
                continue
            raw: dict[str, Any] = {"target_id": str(name), "provider_id": str(name)}
            if name in disabled or (kept is not None and name not in kept):
                raw["enabled"] = False
            index = len(prepared)
            discovered[index] = str(name)
            prepared[index] = resolve_target(raw, providers, discovered=True)
        own["targets"] = list(prepared.values())
        if not prepared and skipped:
            problems.add(
                ("provider",),
                "lists no provider oswitch can serve (skipped: "
                f"{', '.join(show(name) for name in skipped)}), and switcher.targets is not given",
            )
        elif not prepared and isinstance(mapping.get("provider"), Mapping):
            problems.add(("provider",), "lists no providers, and switcher.targets is not given")
    elif isinstance(raw_targets, list | tuple):
        prepared = {
            index: resolve_target(raw, providers, discovered=False)
            for index, raw in enumerate(raw_targets)
            if isinstance(raw, Mapping)
        }
        own["targets"] = [prepared.get(index, raw) for index, raw in enumerate(raw_targets)]

    config, found = structure_switcher(own)
    for problem in found:
        if problem.at == ("targets",) and discovering and not discovered:
            continue  # already reported at $.provider, where targets should come from
        where = (
            problem.at
            if problem.absolute
            else _place(problem.at, prefix, renamed, discovered, providers)
        )
        problems.add(where, problem.reason)
    # Problems of a prepared target the converter never reached (it failed before
    # that element) would otherwise be lost.
    for index, table in prepared.items():
        for problem in table.take_problems():
            at = problem.at if problem.absolute else (*prefix, "targets", index, *problem.at)
            problems.add(at, problem.reason)
    if report is not None:
        report.section = prefix
        for warning in providers.warnings:
            report.warn(warning.at, warning.reason)
    if problems or config is None:
        raise problems.error(source=source)
    if report is not None:
        for at, reason in advise(config):
            report.warn(_place(at, prefix, renamed, discovered, providers), reason)
    return config


def _same_value(a: object, b: object) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _place(
    path: ConfigPath,
    prefix: ConfigPath,
    renamed: Mapping[str, str],
    discovered: Mapping[int, str],
    providers: ProviderEntries,
) -> ConfigPath:
    """Turn a path inside oswitch's section into a path in the document."""
    if path and isinstance(path[0], str) and path[0] in renamed:
        path = (renamed[path[0]], *path[1:])
    if len(path) >= 2 and path[0] == "targets" and isinstance(path[1], int):
        name = discovered.get(path[1])
        if name is not None:
            # A discovered target exists only as its provider entry; point there.
            return providers.entry_path(name)
    return prefix + path


_TOML_WHERE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")

MAX_CONFIG_BYTES = 1024 * 1024
"""The largest config file read. A config of 1,000 targets is ~300 KiB of TOML; an
opencode.json with agent prompts and model lists is tens of KiB."""


def read_config_file(name: str, *, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of the regular file ``name``, at most ``limit`` of them.

    Never blocks on the file itself: it is opened non-blocking, and anything but a
    regular file (a FIFO, ``/dev/zero``, a directory, a socket) is refused before a
    byte is read; at most ``limit + 1`` bytes are ever read (see
    :func:`oswitch.config.files.read_regular_file`). Raises ConfigError naming
    ``name`` and why: cannot read file, not a regular file, too big.
    """
    try:
        return read_regular_file(name, limit=limit)
    except FileTooBig:
        raise ConfigError([(name, f"file too big: over {limit} bytes")]) from None
    except NotRegularFile as exc:
        raise ConfigError([(name, str(exc))]) from None
    except OSError as exc:
        raise ConfigError([(name, f"cannot read file: {exc.strerror or exc}")]) from None


def load_config(
    path: str | os.PathLike[str], *, report: ConfigReport | None = None
) -> SwitcherConfig:
    """Read and validate a config file: TOML when the name ends in ``.toml``, else
    JSON (an opencode.json included; see :func:`parse_config`).

    Only a regular file of at most :data:`MAX_CONFIG_BYTES` is read, without ever
    waiting on it (see :func:`read_config_file`). Raises ConfigError for an
    unreadable, non-regular or oversized file (naming it), a syntax error (naming
    file, line and column, as ``FILE:LINE:COL``) and every invalid value.
    """
    name = os.fspath(path)
    data = read_config_file(name)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError([(name, f"not UTF-8 text (byte {exc.start})")]) from None
    document: object
    if name.lower().endswith(".toml"):
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            message = str(exc)
            where = _TOML_WHERE.search(message)
            location = f"{name}:{where.group(1)}:{where.group(2)}" if where else name
            reason = _TOML_WHERE.sub("", message)
            raise ConfigError([(location, f"invalid TOML: {reason}")]) from None
    else:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            location = f"{name}:{exc.lineno}:{exc.colno}"
            raise ConfigError([(location, f"invalid JSON: {exc.msg}")]) from None
    if not isinstance(document, Mapping):
        problems = Problems()
        problems.add((), f"expected a mapping at the top level (got {show(document)})")
        raise problems.error(source=name)
    return parse_config(document, source=name, report=report)


def validate_config(config: SwitcherConfig) -> None:
    """Check a SwitcherConfig built in code (not parsed) against every rule of
    :func:`parse_config`, e.g. before ``Switcher.reload_config`` applies it.

    A ``backpressure_threshold`` left at its default is not held against a smaller
    ``queue_limit`` (parsing would have lowered it). Raises ConfigError with the
    same ``(path, reason)`` problems parsing the equivalent mapping would give.
    """
    document = cast(dict[str, Any], _unstructure(config))
    if config.backpressure_threshold == attrs.fields(SwitcherConfig).backpressure_threshold.default:
        del document["backpressure_threshold"]
    parse_config(document)


def _unstructure(value: object) -> object:
    """The mapping parse_config would accept for ``value``; secrets stay Secrets."""
    if type(value) in MODEL_CLASSES:
        fields: tuple[attrs.Attribute[Any], ...] = attrs.fields(type(value))  # type: ignore[arg-type]
        # None is every optional field's default: leaving it out reads the same.
        return {
            field.name: _unstructure(getattr(value, field.name))
            for field in fields
            if getattr(value, field.name) is not None
        }
    if isinstance(value, Mapping):
        return {key: _unstructure(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_unstructure(item) for item in value]
    return value


def describe_target(target: TargetConfig, *, environ: Mapping[str, str] | None = None) -> str:
    """One line about ``target`` for humans; its key shows only where it comes from.

    With ``environ`` the key variable is reported ``(set)`` or ``(missing → starts
    ReauthRequired)``; the variable's value is never read into the line.
    Raises nothing.
    """
    if target.api_key is not None:
        key = "inline (hidden)"
    elif target.api_key_env is not None:
        key = f"env {target.api_key_env}"
        if environ is not None:
            present = bool(environ.get(target.api_key_env))
            key += " (set)" if present else " (missing → starts ReauthRequired)"
    else:
        key = "none"
    model = target.model if target.model is not None else "(passthrough)"
    parts = [
        f"provider {target.provider_id}",
        f"api {target.api}",
        target.base_url,
        f"model {model}",
        f"serves {', '.join(target.serves)}",
        f"priority {target.operator_priority}",
        f"key {key}",
    ]
    if not target.enabled:
        parts.append("disabled")
    return f"{target.target_id}: " + "; ".join(parts)


def describe_targets(
    config: SwitcherConfig, *, environ: Mapping[str, str] | None = None
) -> list[str]:
    """One :func:`describe_target` line per target, in config order. Raises nothing."""
    return [describe_target(target, environ=environ) for target in config.targets]
