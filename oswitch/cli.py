"""The ``oswitch`` command line: ``check-config FILE``, ``serve``, ``ctl …``.

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
from oswitch.control.ctl import add_ctl_parser
from oswitch.errors import ConfigError
from oswitch.sidecar.cli import add_serve_parser

EXIT_OK = 0
EXIT_INVALID = 2
"""Exit code for a usage error or an invalid configuration (argparse's own)."""

Handler = Callable[[argparse.Namespace], int]


def _check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        for path, reason in exc.problems:
            print(f"{reason} @ {path}", file=sys.stderr)
        return EXIT_INVALID
    count = len(config.targets)
    print(f"{args.file}: valid, {count} target{'s' if count != 1 else ''}")
    for line in describe_targets(config, environ=os.environ):
        print(f"  {line}")
    return EXIT_OK


def _add_check_config(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "check-config",
        help="validate a config file and summarise its targets",
        description=(
            "Validate FILE (TOML, JSON or an OpenCode opencode.json). Prints every "
            "problem as 'reason @ path' to stderr and exits 2, or prints the targets "
            "and exits 0. API keys are never printed."
        ),
    )
    parser.add_argument("file", metavar="FILE", help="oswitch.toml, a JSON file or opencode.json")
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
