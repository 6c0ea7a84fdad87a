"""Before serving: what ``oswitch serve`` would refuse, and which targets can work.

Parsing never reads the environment (keys are read by the runtime, so a key set
later is picked up); these checks do, once, for ``check-config`` (and for
``serve`` to print at start). Pure apart from the ``environ`` mapping given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import attrs

from oswitch.config import SwitcherConfig, TargetConfig
from oswitch.config.report import ConfigReport
from oswitch.control.server import control_token
from oswitch.runtime.keys import missing_key_variable

_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})


@attrs.frozen(kw_only=True)
class Preflight:
    """What :func:`preflight` found.

    ``refusals``: ``(path, reason)`` pairs ``oswitch serve`` would refuse to start
    with, so the config is as good as invalid. ``warnings``: one line each, the
    parse's warnings (``reason @ path``) then every target whose key is missing
    (``openai-work: key missing: set OPENAI_API_KEY``). ``servable``: the targets
    that can take a request (enabled, with their key or needing none).
    """

    refusals: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...]
    servable: tuple[str, ...]


def key_missing(target: TargetConfig, environ: Mapping[str, str]) -> str | None:
    """What to do when ``target``'s key is missing (``set OPENAI_API_KEY``), or
    None when it has its key or needs none. Never reads the key into the answer."""
    variable = missing_key_variable(target, environ)
    return None if variable is None else f"set {variable}"


def serve_refusals(
    config: SwitcherConfig,
    *,
    report: ConfigReport | None = None,
    environ: Mapping[str, str] | None = None,
    control_port: int | None = None,
    server_port: int | None = None,
) -> list[tuple[str, str]]:
    """What ``oswitch serve`` refuses ``config`` for, as ``(path, reason)``:
    a control channel without a token (the reason is serve's own), and a control
    channel on the sidecar's port. ``control_port`` and ``server_port`` override
    ``control.port`` and ``server.port``, as ``--control-port`` and ``--port`` do.
    Raises nothing."""
    report = report or ConfigReport()
    environ = os.environ if environ is None else environ
    control, server = config.control, config.server
    port = control.port if control_port is None else control_port
    sidecar_port = server.port if server_port is None else server_port
    refusals: list[tuple[str, str]] = []
    if port is not None and control_token(control, environ) is None:
        refusals.append(
            (
                report.path_of("control", "token"),
                f"the control channel needs a token: set control.token or {control.token_env}",
            )
        )
    hosts_meet = control.host == server.host or {control.host, server.host} & _WILDCARDS
    if port is not None and port != 0 and port == sidecar_port and hosts_meet:
        refusals.append(
            (
                report.path_of("control", "port"),
                f"the same port as server.port ({port}): oswitch serve cannot listen on both",
            )
        )
    return refusals


def preflight(
    config: SwitcherConfig,
    *,
    report: ConfigReport | None = None,
    environ: Mapping[str, str] | None = None,
    control_port: int | None = None,
    server_port: int | None = None,
) -> Preflight:
    """Check ``config`` (parsed with ``report``) against ``environ`` (default
    ``os.environ``): what serve would refuse, every warning, the servable targets.
    ``control_port``/``server_port`` are serve's ``--control-port``/``--port``.
    Key values are only tested for presence. Raises nothing."""
    report = report or ConfigReport()
    environ = os.environ if environ is None else environ
    warnings = [f"{reason} @ {path}" for path, reason in report.warnings]
    servable: list[str] = []
    for target in config.targets:
        if not target.enabled:
            continue
        todo = key_missing(target, environ)
        if todo is None:
            servable.append(target.target_id)
        else:
            warnings.append(f"{target.target_id}: key missing: {todo}")
    return Preflight(
        refusals=tuple(
            serve_refusals(
                config,
                report=report,
                environ=environ,
                control_port=control_port,
                server_port=server_port,
            )
        ),
        warnings=tuple(warnings),
        servable=tuple(servable),
    )
