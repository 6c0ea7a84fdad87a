"""Instructions per request of the sidecar's own process, counted by callgrind, beside the
embedded engine's (``bench.instructions``): the steady measure of the speed goal's
sidecar ratio.

``python -m bench.sidecar_instructions [--cells plain:32,stream:32] [--requests N]
[--warmup N] [--json]``

For each cell a fresh child runs ``oswitch serve``'s pieces under
``valgrind --tool=callgrind`` (the engine on ``bench.subjects.embedded_config``, its
deadline policies scaled as ``bench.instructions`` scales them, the sidecar on a free
loopback port, the gateway collector setting ``oswitch serve`` uses). This process drives
it with aiohttp's client at the cell's concurrency: ``--warmup`` requests, then it zeroes
the child's counts and dumps once (``callgrind_control``), sends ``--requests`` requests
and dumps again. The figure is ``(second dump - first dump) / requests``; the driver,
the upstream and the child's start are not counted. The embedded engine's count for the
same cell (``bench.instructions.count_cell``) is printed beside it, with the ratio.

Needs valgrind and the optional ``bench`` extra (aiohttp). Counts repeat within about
1 %; under callgrind the sidecar runs ~50x slower, so compare figures from this script
with each other (and with ``bench.instructions``), not with a native profile.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.instructions import (
    CELL_TIMEOUT_S,
    DEADLINE_SCALE,
    ROOT,
    _dump_total,
    _parse_cells,
    count_cell,
    print_rows,
    upstream,
)
from bench.overhead import aiohttp_available
from bench.subjects import child_env

DEFAULT_CELLS = ("plain:32", "stream:32")
START_TIMEOUT_S = 120.0


def _serve_counted(url: str, port_file: str) -> int:
    """The counted child: the engine and the sidecar, its port written to ``port_file``."""
    import functools

    import trio

    from bench.subjects import embedded_config
    from oswitch import open_switcher
    from oswitch.core.deadline_learning import DeadlinePolicies
    from oswitch.sidecar.collector import gateway_collector
    from oswitch.sidecar.serve import serve_sidecar

    async def run() -> None:
        policies = DeadlinePolicies().scaled(DEADLINE_SCALE)
        async with open_switcher(embedded_config(url), deadline_policies=policies) as switcher:
            async with trio.open_nursery() as nursery:
                port = await nursery.start(functools.partial(serve_sidecar, switcher, port=0))
                _report_port(port_file, port)

    with gateway_collector():
        trio.run(run)
    return 0


def _report_port(port_file: str, port: int) -> None:
    """Write ``port`` to ``port_file`` whole (a reader never sees it half written)."""
    Path(port_file + ".tmp").write_text(str(port))
    os.replace(port_file + ".tmp", port_file)


async def _drive(
    url: str, streamed: bool, concurrency: int, warmup: int, requests: int, child_pid: int
) -> None:
    """aiohttp's client in ``bench.aiohttp_baseline``'s closed loop; the child's counting
    window around the counted requests."""
    import aiohttp

    from bench.aiohttp_baseline import aiohttp_call, closed_loop

    def control(*args: str) -> None:
        subprocess.run(
            ["callgrind_control", *args, str(child_pid)], check=True, capture_output=True
        )

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        call = aiohttp_call(session, url, streamed)
        errors = await closed_loop(call, concurrency, warmup, [], [])
        control("-z")
        control("-d")
        errors += await closed_loop(call, concurrency, requests, [], [])
        control("-d")
    if errors:
        raise RuntimeError(f"{errors} calls to the counted sidecar failed")


def count_sidecar_cell(
    upstream_url: str, mode: str, concurrency: int, warmup: int, requests: int
) -> float:
    """Instructions per request of the sidecar's process for one cell (see the module
    docstring). Raises RuntimeError when valgrind or aiohttp is missing, the child does
    not start, or a dump is missing."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise RuntimeError("valgrind (callgrind) is not installed")
    if not aiohttp_available():
        raise RuntimeError("aiohttp is not installed: pip install -e '.[bench]'")
    with tempfile.TemporaryDirectory(prefix="oswitch-cg-sidecar-") as tmp:
        out, port_file = os.path.join(tmp, "cg.out"), os.path.join(tmp, "port")
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "bench.sidecar_instructions",
            "--serve-counted",
            "--url",
            upstream_url,
            "--port-file",
            port_file,
        ]
        child = subprocess.Popen(
            command,
            cwd=ROOT,
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            started = time.monotonic()
            while not os.path.exists(port_file):
                if child.poll() is not None or time.monotonic() - started > START_TIMEOUT_S:
                    stderr = child.stderr.read().decode(errors="replace") if child.stderr else ""
                    ours = [line for line in stderr.splitlines() if not line.startswith("==")]
                    raise RuntimeError(f"the counted sidecar did not start: {ours[-3:]}")
                time.sleep(0.2)
            url = f"http://127.0.0.1:{Path(port_file).read_text()}/v1/chat/completions"
            asyncio.run(
                asyncio.wait_for(
                    _drive(url, mode == "stream", concurrency, warmup, requests, child.pid),
                    CELL_TIMEOUT_S,
                )
            )
        finally:
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        dumps = sorted(Path(tmp).glob("cg.out.*"), key=lambda p: int(p.suffix[1:]))
        if len(dumps) < 2:
            raise RuntimeError(f"sidecar {mode}:{concurrency}: expected two dumps")
        return max(0, _dump_total(dumps[1]) - _dump_total(dumps[0])) / requests


def measure(
    cells: Sequence[tuple[str, int]], *, requests: int, warmup: int
) -> list[dict[str, Any]]:
    """Count the sidecar and the embedded engine for every cell against one upstream."""
    rows: list[dict[str, Any]] = []
    with upstream(False) as port:
        url = f"http://127.0.0.1:{port}/v1"
        for mode, concurrency in cells:
            warm = max(warmup, concurrency)
            sidecar = count_sidecar_cell(url, mode, concurrency, warm, requests)
            embedded = count_cell(url, "embedded", mode, concurrency, warm, requests)
            row = {
                "mode": mode,
                "concurrency": concurrency,
                "requests": requests,
                "sidecar_minstr": round(sidecar / 1e6, 3),
                "embedded_minstr": round(embedded / 1e6, 3),
                "ratio": round(sidecar / embedded, 2),
            }
            rows.append(row)
            print(_line(row), file=sys.stderr, flush=True)
    return rows


def _line(row: dict[str, Any]) -> str:
    return (
        f"{row['mode']:6} c={row['concurrency']:<4}  sidecar {row['sidecar_minstr']:7.3f} M"
        f" instr/request   embedded {row['embedded_minstr']:7.3f}   ratio {row['ratio']:.2f}x"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sidecar_instructions", description=__doc__
    )
    parser.add_argument(
        "--cells",
        type=_parse_cells,
        default=_parse_cells(",".join(DEFAULT_CELLS)),
        help="comma-separated plain:C / stream:C (default: %(default)s)",
    )
    parser.add_argument("--requests", type=int, default=500, help="counted requests per cell")
    parser.add_argument("--warmup", type=int, default=200, help="uncounted requests first")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    # Internal: the counted child's role.
    parser.add_argument("--serve-counted", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--port-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_counted:
        return _serve_counted(args.url, args.port_file)
    print_rows(measure(args.cells, requests=args.requests, warmup=args.warmup), _line, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
