"""``oswitch serve`` reading its config file again (on SIGHUP)."""

from __future__ import annotations

import logging
import os
from functools import partial

import trio

from oswitch.config import SwitcherConfig, load_config
from oswitch.config.report import ConfigReport
from oswitch.errors import ConfigError
from oswitch.preflight import preflight
from oswitch.runtime.switcher import Switcher

log = logging.getLogger("oswitch.sidecar")

# What a reload cannot change: the listeners and the gateway's own keys are set up
# once, when serve starts.
READ_AT_START = (
    "the server, control, audit and otel sections are read at start: restart to apply them"
)


async def reload_from_file(
    switcher: Switcher, path: str | os.PathLike[str], *, started: SwitcherConfig
) -> bool:
    """Read ``path`` again, validate it, and apply it to ``switcher``; True if applied.

    Blocks while the file is read (in a worker thread, abandoned if cancelled) and
    until every target's actor has applied its change. An unreadable or invalid file
    changes nothing: ``config_reload_failed`` is logged at error level with the file
    (``note``) and every problem (``problems``, ``reason @ path`` each). An applied
    file logs each preflight warning (a key missing, …) as ``config_warning``, and
    ``config_reload_partial`` when its ``server``, ``control``, ``audit`` or ``otel``
    section differs from the one serve ``started`` with; the switcher's own
    ``config_reloaded`` audit event says how many targets it now has. Raises nothing
    else; cancellation propagates.
    """
    report = ConfigReport()
    name = os.fspath(path)
    try:
        config = await trio.to_thread.run_sync(
            partial(load_config, name, report=report), abandon_on_cancel=True
        )
        await switcher.reload_config(config)
    except ConfigError as error:
        log.error(
            "config_reload_failed",
            extra={
                "note": name,
                "problems": [f"{reason} @ {where}" for where, reason in error.problems],
            },
        )
        # reload_config may refuse the config before it awaits anything.
        await trio.lowlevel.checkpoint()
        return False
    for line in preflight(config, report=report).warnings:
        log.warning("config_warning", extra={"note": line})
    read_at_start = (config.server, config.control, config.audit, config.otel)
    if read_at_start != (started.server, started.control, started.audit, started.otel):
        log.warning("config_reload_partial", extra={"note": READ_AT_START})
    return True
