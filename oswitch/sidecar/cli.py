"""``oswitch serve``: run the gateway from a config file."""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial

import trio

from oswitch.config import load_config
from oswitch.config.report import ConfigReport
from oswitch.errors import ConfigError
from oswitch.logs import LOG_LEVELS, configure_logging
from oswitch.preflight import preflight
from oswitch.sidecar.collector import (
    GATEWAY_YOUNG_THRESHOLD,
    collector_threshold,
    gateway_collector,
)
from oswitch.sidecar.serve import run_gateway


def _serve(args: argparse.Namespace) -> int:
    report = ConfigReport()
    try:
        config = load_config(args.config, report=report)
    except ConfigError as exc:
        for path, reason in exc.problems:
            print(f"{reason} @ {path}", file=sys.stderr)
        return 2
    # The checks check-config makes: what serve refuses, then every warning (a key
    # missing names its variable); serve starts anyway, as a missing key is no error.
    check = preflight(
        config,
        report=report,
        environ=os.environ,
        control_port=args.control_port,
        server_port=args.port,
    )
    if check.refusals:
        for path, reason in check.refusals:
            print(f"{reason} @ {path}", file=sys.stderr)
        return 2
    for line in check.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if not check.servable:
        print(
            "warning: no target can serve a request yet: each is disabled or missing its key",
            file=sys.stderr,
        )
    audit_path = args.audit if args.audit is not None else config.audit.path
    try:
        configure_logging(
            args.log_format,
            level=args.log_level,
            audit_path=audit_path,
            audit_max_bytes=config.audit.max_bytes,
            audit_backups=config.audit.backups,
        )
    except OSError as exc:
        print(f"oswitch serve: cannot open the audit file: {exc}", file=sys.stderr)
        return 2
    try:
        with gateway_collector(args.gc_threshold):
            trio.run(
                partial(
                    run_gateway,
                    config,
                    host=args.host,
                    port=args.port,
                    control_port=args.control_port,
                    config_path=args.config,
                )
            )
    except ConfigError as exc:
        for path, reason in exc.problems:
            print(f"{reason} @ {path}", file=sys.stderr)
        return 2
    except (OSError, BaseExceptionGroup) as exc:
        # Binding fails inside the server's nurseries, so the OSError may come wrapped.
        failure = _find_os_error(exc)
        if failure is None:
            raise
        print(f"oswitch serve: cannot listen: {failure}", file=sys.stderr)
        return 2
    return 0


def _find_os_error(exc: BaseException) -> OSError | None:
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find_os_error(inner)
            if found is not None:
                return found
    return None


def add_serve_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the OpenAI-compatible gateway (sidecar)",
        description=(
            "Serve POST /v1/chat/completions, /v1/models, /healthz, /readyz and /metrics "
            "for the targets in the config (and /dashboard when the control channel is "
            "on). Warnings (a key missing, …) are printed at start, as check-config "
            "prints them. Audit events go to stdout as NDJSON (or to --audit FILE, "
            "rotated by size and reopened on SIGUSR1), logs to stderr. SIGHUP reads "
            "the config file again and applies it (the server and control sections "
            "need a restart); SIGTERM/SIGINT shut down gracefully."
        ),
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="config file")
    parser.add_argument("--host", default=None, help="bind address (default: server.host)")
    parser.add_argument("--port", type=int, default=None, help="port (default: server.port)")
    parser.add_argument(
        "--control-port",
        type=int,
        default=None,
        help="also serve the websocket control channel on this port (needs a token)",
    )
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="least severe log line written to stderr (default: info)",
    )
    parser.add_argument(
        "--audit",
        default=None,
        metavar="FILE",
        help="append the audit log to FILE instead of stdout (default: audit.path)",
    )
    parser.add_argument(
        "--gc-threshold",
        type=collector_threshold,
        default=GATEWAY_YOUNG_THRESHOLD,
        metavar="N",
        help=(
            "collect the youngest generation of Python's cyclic garbage collector every N "
            f"net allocations (default: {GATEWAY_YOUNG_THRESHOLD}; Python's own is 700; "
            "0 leaves it as Python set it)"
        ),
    )
    parser.set_defaults(handler=_serve)
