"""The ``oswitch`` command line: ``check-config FILE``, ``serve``, ``ctl …``, ``demo``.

Each subcommand is one ``_add_*`` function that registers its parser and sets
``handler``; the handler takes the parsed arguments and returns the exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from oswitch import __version__
from oswitch.config import describe_targets, load_config
from oswitch.config.report import ConfigReport
from oswitch.control.ctl import add_ctl_parser
from oswitch.demo import add_demo_parser
from oswitch.errors import ConfigError
from oswitch.preflight import preflight
from oswitch.sidecar.cli import add_serve_parser

EXIT_OK = 0
EXIT_UNSERVABLE = 1
"""check-config: valid, but no target can serve a request (or a warning, with --strict)."""
EXIT_INVALID = 2
"""Exit code for a usage error or an invalid configuration (argparse's own)."""

Handler = Callable[[argparse.Namespace], int]


def _check_config(args: argparse.Namespace) -> int:
    report = ConfigReport()
    try:
        config = load_config(args.file, report=report)
    except ConfigError as exc:
        for path, reason in exc.problems:
            print(f"{reason} @ {path}", file=sys.stderr)
        return EXIT_INVALID
    check = preflight(config, report=report, environ=os.environ)
    if check.refusals:
        # What serve would refuse to start with is as good as invalid.
        for path, reason in check.refusals:
            print(f"{reason} @ {path}", file=sys.stderr)
        return EXIT_INVALID
    count = len(config.targets)
    print(f"{args.file}: valid, {count} target{'s' if count != 1 else ''}")
    for line in describe_targets(config, environ=os.environ):
        print(f"  {line}")
    for line in check.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if not check.servable:
        print(
            f"{args.file}: no target can serve a request: each is disabled or missing its key",
            file=sys.stderr,
        )
        return EXIT_UNSERVABLE
    if args.strict and check.warnings:
        return EXIT_UNSERVABLE
    return EXIT_OK


def _add_check_config(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "check-config",
        help="validate a config file and summarise its targets",
        description=(
            "Validate FILE (TOML, JSON or an OpenCode opencode.json) and the environment "
            "it will run in. Invalid, or something 'oswitch serve' would refuse (a "
            "control port without a token): every problem as 'reason @ path' on stderr, "
            "exit 2. Valid: the targets on stdout and every warning on stderr (a key "
            "missing, a provider skipped, unsafe or contradictory settings); exit 1 when "
            "no target can serve a request, else 0. API keys are never printed."
        ),
    )
    parser.add_argument("file", metavar="FILE", help="oswitch.toml, a JSON file or opencode.json")
    parser.add_argument("--strict", action="store_true", help="exit 1 on any warning (for CI)")
    parser.set_defaults(handler=_check_config)


def _add_ctl(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # `oswitch ctl` lives with the control channel it drives.
    add_ctl_parser(commands)


def build_parser() -> argparse.ArgumentParser:
    """Return the ``oswitch`` argument parser with every subcommand. Raises nothing."""
    parser = argparse.ArgumentParser(
        prog="oswitch",
        description="Routing and execution resilience for LLM API calls.",
    )
    parser.add_argument("--version", action="version", version=f"oswitch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_check_config(commands)
    add_serve_parser(commands)
    _add_ctl(commands)
    add_demo_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    Usage errors print argparse's message and return 2 rather than raising
    SystemExit, so callers and tests get a plain code back.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_INVALID
    handler: Handler = args.handler
    return handler(args)


def run() -> None:
    """Console-script entry point: exit the process with :func:`main`'s code."""
    sys.exit(main())
