"""``oswitch ctl``: steer a running oswitch from a second terminal.

    oswitch ctl --url ws://127.0.0.1:8788 list-targets
    oswitch ctl --url ws://127.0.0.1:8788 pause openai-a
    oswitch ctl --url ws://127.0.0.1:8788 inspect-request req_0123456789abcdef0123
    oswitch ctl --url ws://127.0.0.1:8788 reload --path oswitch.toml
    oswitch ctl --url ws://127.0.0.1:8788 watch --topics targets

The URL comes from ``--url``, else ``OSWITCH_CONTROL_URL``, else the ``control``
section of ``--config FILE`` (the file ``oswitch serve`` runs with); the token from
``--token``, else ``OSWITCH_CONTROL_TOKEN``, else that file's ``control.token`` /
``control.token_env``. The token is never printed. Exit codes: 0 done, 1 the server
refused the command, 2 usage, connection or authentication failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Callable

import trio

from oswitch.config import load_config
from oswitch.control.client import (
    CommandRefused,
    ControlClient,
    ControlConnectionError,
    open_control,
)
from oswitch.control.protocol import TOPICS
from oswitch.control.server import control_token
from oswitch.control.tables import (
    format_deadlines,
    format_event,
    format_headroom,
    format_targets,
    format_trace,
    view_line,
)
from oswitch.errors import ConfigError

# The formatting lives in oswitch.control.tables; its public names stay importable
# from here, where the tests and docs have always found them.
__all__ = [
    "DEFAULT_TIMEOUT_S",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_REFUSED",
    "TOKEN_ENV",
    "URL_ENV",
    "add_ctl_parser",
    "format_deadlines",
    "format_event",
    "format_headroom",
    "format_targets",
    "format_trace",
    "run_ctl",
]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_FAILURE = 2

TOKEN_ENV = "OSWITCH_CONTROL_TOKEN"
URL_ENV = "OSWITCH_CONTROL_URL"
DEFAULT_TIMEOUT_S = 10.0

_TARGET_COMMANDS = {
    "pause": "pause_target",
    "resume": "resume_target",
    "drain": "drain_target",
    "disable": "disable_target",
}
_TARGET_HELP = {
    "pause": "route no new work to TARGET; in-flight attempts finish",
    "resume": "back to Active: breaker reset, cooldowns cleared, key re-read",
    "drain": "no new work; in-flight attempts finish, then TARGET is Disabled",
    "disable": "no new work; in-flight attempts are cancelled and fail over",
}


# ---- commands ------------------------------------------------------------------------

Runner = Callable[[ControlClient, argparse.Namespace], Awaitable[int]]


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


async def _list_targets(client: ControlClient, args: argparse.Namespace) -> int:
    views = await client.list_targets()
    if args.json:
        _print_json(views)
    elif getattr(args, "deadlines", False):
        print("\n".join(format_deadlines(views)))
    else:
        print("\n".join(format_targets(views, tokens=True if args.tokens else None)))
    return EXIT_OK


async def _target_command(client: ControlClient, args: argparse.Namespace) -> int:
    result = await client.call(_TARGET_COMMANDS[args.ctl_command], target_id=args.target)
    view = result.get("target") if isinstance(result, dict) else None
    if args.json:
        _print_json(view)
    elif isinstance(view, dict):
        print(view_line(view))
    return EXIT_OK


async def _inspect_request(client: ControlClient, args: argparse.Namespace) -> int:
    trace = await client.inspect_request(args.request_id)
    if args.json:
        _print_json(trace)
    else:
        print("\n".join(format_trace(trace)))
    return EXIT_OK


async def _reload(client: ControlClient, args: argparse.Namespace) -> int:
    target_ids = await client.reload_config(path=args.path)
    if args.json:
        _print_json({"target_ids": target_ids})
    else:
        count = len(target_ids)
        print(f"reloaded: {count} target{'s' if count != 1 else ''} ({', '.join(target_ids)})")
    return EXIT_OK


async def _watch(client: ControlClient, args: argparse.Namespace) -> int:
    topics = args.topics or list(TOPICS)
    await client.subscribe(topics)
    seen = 0
    while args.count is None or seen < args.count:
        event = await client.next_event()
        if event.get("event") == "subscription_dropped":
            # Fell behind (the terminal was too slow): say so, and pick the feed up again.
            print("oswitch ctl: events were dropped; resubscribing", file=sys.stderr)
            await client.subscribe(topics)
            continue
        seen += 1
        if args.json:
            print(json.dumps(event), flush=True)
        else:
            print(format_event(event), flush=True)
    return EXIT_OK


_RUNNERS: dict[str, Runner] = {
    "list-targets": _list_targets,
    **dict.fromkeys(_TARGET_COMMANDS, _target_command),
    "inspect-request": _inspect_request,
    "reload": _reload,
    "watch": _watch,
}


async def _run(args: argparse.Namespace, url: str, token: str, timeout_s: float) -> int:
    # A refusal to connect (a malformed URL) can come before any checkpoint: take one
    # first, so every way out of an async function is one.
    await trio.lowlevel.checkpoint()
    try:
        async with open_control(url, token=token, connect_timeout_s=timeout_s) as client:
            runner = _RUNNERS[args.ctl_command]
            if args.ctl_command == "watch":
                return await runner(client, args)
            with trio.fail_after(timeout_s):
                return await runner(client, args)
    except CommandRefused as exc:
        print(f"oswitch ctl: refused ({exc.code}): {exc.message}", file=sys.stderr)
        for path, reason in exc.problems:
            print(f"  {reason} @ {path}", file=sys.stderr)
        return EXIT_REFUSED
    except ControlConnectionError as exc:
        print(f"oswitch ctl: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except trio.TooSlowError:
        print(f"oswitch ctl: no reply within {timeout_s:g} s", file=sys.stderr)
        return EXIT_FAILURE


def _from_config(path: str) -> tuple[str | None, str]:
    """The control URL and token that the config at ``path`` serves with.

    Raises ConfigError when the file is not a valid config."""
    control = load_config(path).control
    token = control_token(control)
    if control.port is None:
        return None, token.reveal() if token else ""
    host = f"[{control.host}]" if ":" in control.host else control.host
    return f"ws://{host}:{control.port}", token.reveal() if token else ""


def run_ctl(args: argparse.Namespace) -> int:
    """Handler of ``oswitch ctl``: run one command against a control channel and
    return the exit code (0 done, 1 refused, 2 usage/connection/auth failure).

    Blocks until the command is answered (``watch``: until Ctrl-C or ``--count``).
    Raises nothing; Ctrl-C ends ``watch`` with exit code 0.
    """
    url = getattr(args, "url", None) or os.environ.get(URL_ENV, "")
    token = getattr(args, "token", None) or os.environ.get(TOKEN_ENV, "")
    timeout_s = getattr(args, "timeout", None) or DEFAULT_TIMEOUT_S
    args.json = getattr(args, "json", False)
    config_path = getattr(args, "config", None)
    if config_path and not (url and token):
        try:
            config_url, config_token = _from_config(config_path)
        except ConfigError as exc:
            print(f"oswitch ctl: {config_path}: invalid configuration", file=sys.stderr)
            for path, reason in exc.problems:
                print(f"  {reason} @ {path}", file=sys.stderr)
            return EXIT_FAILURE
        if not url and config_url is None:
            print(
                f"oswitch ctl: {config_path} serves no control channel (control.port is not set)",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        url = url or config_url or ""
        token = token or config_token
    if not url:
        print(
            f"oswitch ctl: --url is required (e.g. ws://127.0.0.1:8788), or set {URL_ENV}, "
            "or pass --config FILE",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    if not token:
        print(
            f"oswitch ctl: no token: pass --token or set {TOKEN_ENV}"
            + (f" (or control.token_env in {config_path})" if config_path else ""),
            file=sys.stderr,
        )
        return EXIT_FAILURE
    if args.ctl_command == "reload":
        # The server reads the file: a relative path means the operator's directory.
        args.path = os.path.abspath(args.path)
    try:
        return trio.run(_run, args, url, token, timeout_s)
    except KeyboardInterrupt:
        return EXIT_OK


def add_ctl_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``oswitch ctl`` and its commands on ``commands``. Raises nothing."""
    # Shared options are accepted before or after COMMAND; SUPPRESS keeps a value
    # given before COMMAND from being reset by the command's own parser.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help=f"the control channel, ws://HOST:PORT (default: ${URL_ENV}, else --config's)",
    )
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="the config oswitch serve runs with: its control.host/port and token",
    )
    common.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help=f"the control token (default: ${TOKEN_ENV}, which keeps it out of ps)",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print raw JSON results"
    )
    common.add_argument(
        "--timeout",
        type=float,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help=f"connect and reply timeout (default {DEFAULT_TIMEOUT_S:g})",
    )
    parser = commands.add_parser(
        "ctl",
        parents=[common],
        help="steer a running oswitch over its control channel",
        description=(
            "Send one operator command to a running oswitch's control channel. "
            f"The token comes from --token or ${TOKEN_ENV} and is never printed. "
            "Exit codes: 0 done, 1 refused by the server, 2 usage, connection or "
            "authentication failure."
        ),
    )
    sub = parser.add_subparsers(dest="ctl_command", required=True, metavar="COMMAND")
    listing = sub.add_parser(
        "list-targets",
        parents=[common],
        help="every target: state, condition, breaker, health, in-flight, cooldown "
        "(and tokens per minute, headroom and cost where known)",
    )
    listing.add_argument(
        "--tokens",
        action="store_true",
        help="always show tokens per minute and headroom (shown anyway when some "
        "target has a token budget or reported limits)",
    )
    listing.add_argument(
        "--deadlines",
        action="store_true",
        help="instead, the deadlines each target applies per model it served "
        "(first token, chunk gap, non-streamed response) and why",
    )
    for name in _TARGET_COMMANDS:
        command = sub.add_parser(name, parents=[common], help=_TARGET_HELP[name])
        command.add_argument("target", metavar="TARGET", help="a target_id")
    inspect = sub.add_parser(
        "inspect-request", parents=[common], help="a request's trace as a timeline"
    )
    inspect.add_argument("request_id", metavar="ID", help="a request id (req_...)")
    reload = sub.add_parser("reload", parents=[common], help="hot-reload the configuration")
    reload.add_argument(
        "--path", required=True, metavar="FILE", help="config file, read by the server"
    )
    watch = sub.add_parser("watch", parents=[common], help="print events live until Ctrl-C")
    watch.add_argument(
        "--topics", nargs="+", choices=TOPICS, metavar="TOPIC", help="audit, targets (default both)"
    )
    watch.add_argument(
        "--count", type=int, metavar="N", help="stop after N events (default: never)"
    )
    parser.set_defaults(handler=run_ctl)
