"""Instructions per request of the embedded engine (and of aiohttp), counted by callgrind.

``python -m bench.instructions [--cells plain:1,plain:32,stream:1,stream:32]
[--requests N] [--warmup N] [--ratelimit-headers] [--aiohttp] [--json]``

CPU time on a loaded two-core machine spreads by tens of percent between rounds;
the number of user-space instructions a request costs does not. Each cell runs a
fresh child process under ``valgrind --tool=callgrind``: the
child opens the switcher (``bench.subjects.embedded_config``: one target over
oswitch's own HTTP/1.1 pool), sends ``--warmup`` requests uninstrumented, then asks
callgrind (``callgrind_control``, through vgdb) to start counting, zeroes and dumps
once (the cost of the control call itself), sends ``--requests`` requests in a
closed loop at the cell's concurrency, and dumps again. A cell's figure is
``(second dump - first dump) / requests``: the control call's own cost cancels, and
neither the interpreter's start, the imports, the switcher's start nor the warm-up
are counted. ``--aiohttp`` counts the same closed loop with aiohttp's client on
asyncio (``bench.aiohttp_baseline``), the floor of issue #19, and prints the ratio.

The upstream is ``bench.upstream``'s raw loopback server in its own process (not
counted). ``--ratelimit-headers`` adds six OpenAI-style ``x-ratelimit-*`` headers to
every reply, so the cost of learning provider-reported limits shows.

Caveats: under callgrind the client runs ~50x slower than natively, so more of a
stream's events arrive per socket read than at full speed (fewer reads, fewer
wake-ups): compare figures from this script with each other, not with a native
profile. Counts repeat within about 1% between runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.subjects import child_env, port_reporting_child

Call = Callable[[], Awaitable[object]]

ROOT = Path(__file__).resolve().parent.parent

RATELIMIT_HEADERS = (
    b"x-ratelimit-limit-requests: 10000\r\n"
    b"x-ratelimit-limit-tokens: 30000000\r\n"
    b"x-ratelimit-remaining-requests: 9999\r\n"
    b"x-ratelimit-remaining-tokens: 29999000\r\n"
    b"x-ratelimit-reset-requests: 6ms\r\n"
    b"x-ratelimit-reset-tokens: 2ms\r\n"
)
DEFAULT_CELLS = ("plain:1", "plain:32", "stream:1", "stream:32")
CELL_TIMEOUT_S = 900.0
# Under callgrind a request takes ~50x its native time, more on a loaded machine: at
# c=32 a plain call's latency passes the 5 s floor of the learned response deadline
# and the call fails over. The counted engine gets every deadline policy scaled by
# this (open_switcher's ``deadline_policies``): the same code runs, with longer limits.
DEADLINE_SCALE = 20.0


# ---- the upstream ---------------------------------------------------------------------


def _with_headers(raw: tuple[bytes, list[bytes]], extra: bytes) -> tuple[bytes, list[bytes]]:
    """``bench.upstream``'s raw replies with ``extra`` header lines after the status line."""
    plain, pieces = raw

    def add(head: bytes) -> bytes:
        status, _, rest = head.partition(b"\r\n")
        return status + b"\r\n" + extra + rest

    return add(plain), [add(pieces[0]), *pieces[1:]]


def _serve_upstream(port_file: str, ratelimit_headers: bool) -> int:
    import trio

    import bench.upstream as upstream

    if ratelimit_headers:
        # _raw_connection reads the module's replies on every connection.
        upstream._RAW = _with_headers(upstream._RAW, RATELIMIT_HEADERS)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(upstream._serve, port_file, 0, "raw")
    return 0


@contextlib.contextmanager
def upstream(ratelimit_headers: bool, timeout_s: float = 30.0) -> Iterator[int]:
    """Run the raw loopback upstream in a child process; yield its port."""
    arguments = ["bench.instructions", "--serve-upstream"]
    if ratelimit_headers:
        arguments.append("--ratelimit-headers")
    with port_reporting_child(arguments, timeout_s=timeout_s) as port:
        yield port


# ---- the counted child ----------------------------------------------------------------


def _callgrind(*args: str) -> None:
    subprocess.run(
        ["callgrind_control", *args, str(os.getpid())],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _window_start() -> None:
    _callgrind("-z")
    _callgrind("-d")


def _window_end() -> None:
    _callgrind("-d")


def _count_embedded(url: str, streamed: bool, concurrency: int, warmup: int, requests: int) -> int:
    import trio

    from bench.subjects import embedded_config, switcher_call
    from oswitch import open_switcher
    from oswitch.core.deadline_learning import DeadlinePolicies

    async def closed_loop(call: Call, count: int) -> int:
        remaining = count
        errors = 0

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                try:
                    await call()
                except Exception as exc:
                    if not errors:
                        print(f"first failed call: {exc!r}", file=sys.stderr)
                    errors += 1

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        return errors

    # The same code paths with longer limits: see DEADLINE_SCALE.
    policies = DeadlinePolicies().scaled(DEADLINE_SCALE)

    async def run() -> int:
        async with open_switcher(embedded_config(url), deadline_policies=policies) as switcher:
            call = switcher_call(switcher, streamed)
            errors = await closed_loop(call, warmup)
            # Blocking the loop here is fine: nothing is in flight between the windows.
            _window_start()
            errors += await closed_loop(call, requests)
            _window_end()
        return errors

    return trio.run(run)


def _count_aiohttp(url: str, streamed: bool, concurrency: int, warmup: int, requests: int) -> int:
    import asyncio

    import aiohttp

    from bench.aiohttp_baseline import aiohttp_call, closed_loop

    async def run() -> int:
        connector = aiohttp.TCPConnector(limit=512, limit_per_host=0)
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            call = aiohttp_call(session, f"{url}/chat/completions", streamed)
            errors = await closed_loop(call, concurrency, warmup, [], [])
            _window_start()
            errors += await closed_loop(call, concurrency, requests, [], [])
            _window_end()
        return errors

    return asyncio.run(run())


def _child(args: argparse.Namespace) -> int:
    count = _count_aiohttp if args.variant == "aiohttp" else _count_embedded
    errors = count(args.url, args.mode == "stream", args.concurrency, args.warmup, args.requests)
    if errors:
        print(f"{errors} calls failed", file=sys.stderr)
        return 1
    return 0


# ---- the parent -----------------------------------------------------------------------

_TOTALS = re.compile(rb"^summary:\s*(\d+)", re.MULTILINE)


def _dump_total(path: Path) -> int:
    found = _TOTALS.findall(path.read_bytes())
    if not found:
        raise RuntimeError(f"no totals in {path}")
    return int(found[-1])


def count_cell(
    url: str, variant: str, mode: str, concurrency: int, warmup: int, requests: int
) -> float:
    """Instructions per request of one cell, counted in a fresh child under callgrind.

    Raises RuntimeError when valgrind is missing, the child fails, or a dump is missing.
    """
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise RuntimeError("valgrind (callgrind) is not installed")
    with tempfile.TemporaryDirectory(prefix="oswitch-cg-") as tmp:
        out = os.path.join(tmp, "cg.out")
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "bench.instructions",
            "--child",
            "--variant",
            variant,
            "--url",
            url,
            "--mode",
            mode,
            "--concurrency",
            str(concurrency),
            "--warmup",
            str(warmup),
            "--requests",
            str(requests),
        ]
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=child_env(),
            capture_output=True,
            timeout=CELL_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines()
            ours = [line for line in lines if not line.startswith("==")] or lines[-3:]
            raise RuntimeError(f"{variant} {mode}:{concurrency} failed: {' | '.join(ours[-5:])}")
        # Dump 1 is the control call alone; dump 2 the requests and one control call.
        dumps = sorted(Path(tmp).glob("cg.out.*"), key=lambda p: int(p.suffix[1:]))
        if len(dumps) < 2:
            raise RuntimeError(f"{variant} {mode}:{concurrency}: expected two dumps")
        first, second = _dump_total(dumps[0]), _dump_total(dumps[1])
        return max(0, second - first) / requests


def _parse_cells(text: str) -> list[tuple[str, int]]:
    cells = []
    for item in text.split(","):
        mode, _, conc = item.strip().partition(":")
        if mode not in ("plain", "stream") or not conc.isdigit() or int(conc) < 1:
            raise argparse.ArgumentTypeError(f"a cell is plain:N or stream:N (got {item!r})")
        cells.append((mode, int(conc)))
    return cells


def measure(
    cells: Sequence[tuple[str, int]],
    *,
    requests: int,
    warmup: int,
    ratelimit_headers: bool,
    floor: bool,
) -> list[dict[str, Any]]:
    """Count every cell (and aiohttp's, with ``floor``) against one upstream."""
    rows: list[dict[str, Any]] = []
    with upstream(ratelimit_headers) as port:
        url = f"http://127.0.0.1:{port}/v1"
        for mode, concurrency in cells:
            warm = max(warmup, concurrency)
            row: dict[str, Any] = {
                "mode": mode,
                "concurrency": concurrency,
                "ratelimit_headers": ratelimit_headers,
                "requests": requests,
            }
            row["embedded_minstr"] = round(
                count_cell(url, "embedded", mode, concurrency, warm, requests) / 1e6, 3
            )
            if floor:
                row["aiohttp_minstr"] = round(
                    count_cell(url, "aiohttp", mode, concurrency, warm, requests) / 1e6, 3
                )
                row["ratio"] = round(row["embedded_minstr"] / row["aiohttp_minstr"], 2)
            rows.append(row)
            print(_line(row), file=sys.stderr, flush=True)
    return rows


def _line(row: dict[str, Any]) -> str:
    label = f"{row['mode']:6} c={row['concurrency']:<4}"
    if row["ratelimit_headers"]:
        label += " +headers"
    text = f"{label}  embedded {row['embedded_minstr']:7.3f} M instr/request"
    if "aiohttp_minstr" in row:
        text += f"   aiohttp {row['aiohttp_minstr']:7.3f}   ratio {row['ratio']:.2f}x"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument(
        "--cells",
        type=_parse_cells,
        default=_parse_cells(",".join(DEFAULT_CELLS)),
        help="comma-separated plain:C / stream:C (default: %(default)s)",
    )
    parser.add_argument("--requests", type=int, default=200, help="counted requests per cell")
    parser.add_argument("--warmup", type=int, default=40, help="uncounted requests first")
    parser.add_argument("--ratelimit-headers", action="store_true")
    parser.add_argument("--aiohttp", action="store_true", help="count aiohttp's client too")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    # Internal: the roles of the child processes.
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port-file", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="embedded", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="plain", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_upstream:
        return _serve_upstream(args.port_file, args.ratelimit_headers)
    if args.child:
        return _child(args)
    rows = measure(
        args.cells,
        requests=args.requests,
        warmup=args.warmup,
        ratelimit_headers=args.ratelimit_headers,
        floor=args.aiohttp,
    )
    print_rows(rows, _line, args.json)
    return 0


def print_rows(
    rows: list[dict[str, Any]], line: Callable[[dict[str, Any]], str], as_json: bool
) -> None:
    """Print ``rows`` as JSON, or one ``line`` each."""
    if as_json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        for row in rows:
            print(line(row))


if __name__ == "__main__":
    sys.exit(main())
