"""What each operator command does to the switcher, and the reply frame it earns.

The connection (oswitch.control.connection) carries frames; this module runs one
parsed command. Every failure becomes a refusal frame: a bug here costs that one
command, never the connection or routing.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from oswitch.config import SwitcherConfig, load_config, parse_config
from oswitch.control.protocol import (
    Auth,
    Command,
    ErrorCode,
    InspectRequest,
    ListTargets,
    ProtocolError,
    ReloadConfig,
    TargetCommand,
    error_reply,
    ok_reply,
    protocol_error_reply,
    trace_json,
)
from oswitch.errors import ConfigError, UnknownRequest, UnknownTarget
from oswitch.runtime.switcher import Switcher

log = logging.getLogger("oswitch.control")


async def execute(switcher: Switcher, command: Command) -> tuple[str, bool]:
    """Run ``command`` on ``switcher``: its reply frame, and whether it was refused.

    Blocks until the switcher has applied the command (a target's actor, a reload, a
    config file read in a worker thread that is abandoned when cancelled). Raises
    only Cancelled: an unknown target or request, a bad config, a protocol misuse or
    a bug is answered with the matching error frame.
    """
    try:
        result = await _run(switcher, command)
    except ProtocolError as exc:
        reply = protocol_error_reply(exc)
    except UnknownTarget as exc:
        reply = error_reply(command.id, ErrorCode.UNKNOWN_TARGET, str(exc))
    except UnknownRequest as exc:
        reply = error_reply(command.id, ErrorCode.UNKNOWN_REQUEST, str(exc))
    except ConfigError as exc:
        message = "; ".join(f"{reason} @ {path}" for path, reason in exc.problems)
        reply = error_reply(command.id, ErrorCode.INVALID_CONFIG, message, exc.problems)
    except Exception:
        # A bug here must cost this one command, not the connection or routing.
        log.exception("control_command_failed", extra={"op": type(command).__name__})
        reply = error_reply(command.id, ErrorCode.INTERNAL, "internal error; see the server log")
    else:
        return ok_reply(command.id, result), False
    # A refusal can come before any checkpoint (``already authenticated`` is raised at
    # once), and an async function always checkpoints.
    await trio.lowlevel.checkpoint()
    return reply, True


async def _run(switcher: Switcher, command: Command) -> dict[str, Any]:
    if isinstance(command, ListTargets):
        await trio.lowlevel.checkpoint()
        return {"targets": switcher.list_targets()}
    if isinstance(command, TargetCommand):
        operations = {
            "pause_target": switcher.pause_target,
            "resume_target": switcher.resume_target,
            "drain_target": switcher.drain_target,
            "disable_target": switcher.disable_target,
        }
        await operations[command.op](command.target_id)
        views = [v for v in switcher.list_targets() if v.target_id == command.target_id]
        return {"target": views[0] if views else None}
    if isinstance(command, InspectRequest):
        await trio.lowlevel.checkpoint()
        return {"trace": trace_json(switcher.inspect_request(command.request_id))}
    if isinstance(command, ReloadConfig):
        config = await _load(command)
        await switcher.reload_config(config)
        return {"target_ids": [t.target_id for t in config.targets]}
    if isinstance(command, Auth):
        raise ProtocolError(ErrorCode.ALREADY_AUTHENTICATED, "already authenticated", id=command.id)
    raise AssertionError(f"unhandled command {type(command).__name__}")


async def _load(command: ReloadConfig) -> SwitcherConfig:
    if command.path is not None:
        # Abandoned on cancel: a file on a hung network mount must not hold up shutdown.
        return await trio.to_thread.run_sync(load_config, command.path, abandon_on_cancel=True)
    assert command.config is not None
    await trio.lowlevel.checkpoint()
    return parse_config(command.config, source="inline config")
