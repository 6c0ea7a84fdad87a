"""``python -m bench``: run fault scenarios, the overhead benchmark and the soak.

With no options it runs the default suite: every scenario in virtual time, then a
quick overhead run. ``--scenario``, ``--wire``, ``--overhead`` and ``--soak`` pick
parts instead. Exit status 0 when every expectation passed, 1 otherwise, 2 for a
usage error.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from bench.harness import VIRTUAL, WIRE, ScenarioResult, run_scenario
from bench.overhead import run_overhead
from bench.overhead_result import OverheadResult, OverheadSettings
from bench.progress import Progress
from bench.report import RunReport, summary, write_outputs
from bench.scenarios import SCENARIOS
from bench.soak import SoakResult, run_soak
from bench.token_storm import VARIANTS as TOKEN_STORMS
from bench.token_storm import side_by_side

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="oswitch's bench: fault scenarios, overhead figures and a soak, with "
        "no API keys and no network. Without options: every scenario in virtual time "
        "and a quick overhead run.",
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        default=[],
        help="run this scenario (repeatable; see --list)",
    )
    parser.add_argument(
        "--wire",
        action="store_true",
        help="run the scenarios on the real clock over the wire (client -> sidecar -> "
        "loopback upstream), times scaled by 0.25; all scenarios unless --scenario",
    )
    parser.add_argument(
        "--token-storm",
        action="store_true",
        help="run the four token_storm variants (OpenAI- and Anthropic-style headers, "
        "header learning on and off) and print their 429s side by side; each also runs "
        f"by name with --scenario: {', '.join(s.name for s in TOKEN_STORMS)}",
    )
    parser.add_argument(
        "--overhead",
        action="store_true",
        help="run the full overhead benchmark (concurrency 1, 32, 256; 3 rounds)",
    )
    parser.add_argument(
        "--soak", type=int, metavar="N", help="soak: N requests with faults (e.g. 100000)"
    )
    parser.add_argument(
        "--fleet",
        type=int,
        nargs="?",
        const=3,
        metavar="N",
        help="a fleet of N sidecars (default 3) sharing a redis-server from PATH, against "
        "N on their own, and a store fault timeline; writes fleet.json and fleet.svg",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"where to write the JSON and HTML results (default {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--upstream",
        choices=("raw", "fake"),
        default="raw",
        help="which server plays the overhead upstream: a minimal HTTP loop (raw, default) "
        "or oswitch.testing's FakeProvider behind hypercorn (fake)",
    )
    return parser


def _environment() -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "trio": trio.__version__,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench as the command line asks; return the exit status."""
    args = _parser().parse_args(argv)
    # The token storms run by name or with --token-storm, not in the default suite
    # (each is 2,100 scenario seconds: 9 minutes over the wire).
    available = {**SCENARIOS, **{s.name: s for s in TOKEN_STORMS}}
    if args.list:
        width = max(len(name) for name in SCENARIOS)
        for name, scenario in SCENARIOS.items():
            print(f"{name:<{width}}  {scenario.title}")
        return 0
    unknown = [name for name in args.scenario if name not in available]
    if unknown:
        print(
            f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(available)}",
            file=sys.stderr,
        )
        return 2
    if args.soak is not None and args.soak < 1:
        print("--soak needs a positive number of requests", file=sys.stderr)
        return 2
    if args.fleet is not None:
        if args.fleet < 1:
            print("--fleet needs at least one replica", file=sys.stderr)
            return 2
        from bench.fleet_bench import run_fleet_bench

        logging.getLogger("hypercorn.error").disabled = True
        return run_fleet_bench(args.fleet, args.out)
    # The fake upstreams run hypercorn in this process; its own
    # logs (startup lines, deliberately broken connections) are noise here.
    logging.getLogger("hypercorn.error").disabled = True

    chosen = bool(args.scenario or args.wire or args.overhead or args.soak or args.token_storm)
    names = args.scenario or (
        list(SCENARIOS) if (args.wire or not chosen) and not args.token_storm else []
    )
    if args.token_storm:
        names += [s.name for s in TOKEN_STORMS if s.name not in names]
    mode = WIRE if args.wire else VIRTUAL
    progress = Progress()
    started = datetime.datetime.now().astimezone()

    results: list[ScenarioResult] = []
    for name in names:
        result = run_scenario(available[name], mode, progress=progress)
        results.append(result)
        failed = [c for c in result.checks if not c.passed]
        progress.say(
            f"{name}: {'PASS' if not failed else 'FAIL'} ({mode.name}, "
            f"{result.figures.requests} requests, {result.figures.wall_s:.1f} s)"
        )

    overhead: OverheadResult | None = None
    if args.overhead or not chosen:
        settings = OverheadSettings.full() if args.overhead else OverheadSettings.quick()
        settings = attrs.evolve(settings, server=args.upstream)
        overhead = run_overhead(settings, progress=progress)
        progress.say("overhead: done")

    soak: SoakResult | None = None
    if args.soak:
        soak = run_soak(args.soak, progress=progress)
        progress.say(f"soak: {'PASS' if soak.passed else 'FAIL'}")
    progress.finish()

    report = RunReport(
        started=started.isoformat(timespec="seconds"),
        argv=("python -m bench", *(argv if argv is not None else sys.argv[1:])),
        environment=_environment(),
        scenarios=tuple(results),
        overhead=overhead,
        soak=soak,
    )
    print(summary(report))
    storms = {r.name: r for r in results if r.name.startswith("token_storm")}
    if storms:
        print("\ntoken_storm, header learning on and off:")
        print("\n".join(side_by_side(storms)))
    stem = "bench-" + started.strftime("%Y%m%d-%H%M%S")
    json_path, html_path = write_outputs(report, args.out, _free_stem(args.out, stem))
    print(f"\nresults: {json_path}\nchart:   {html_path}")
    return 0 if report.passed else 1


def _free_stem(out: Path, stem: str) -> str:
    candidate, n = stem, 1
    while (out / f"{candidate}.json").exists():
        n += 1
        candidate = f"{stem}-{n}"
    return candidate
