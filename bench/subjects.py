"""What the overhead benchmark measures: the upstream's process and the calls.

The upstream runs as ``python -m bench.upstream`` in a child process (its CPU is not
the measured process's); ``http_call`` is the bare httpx baseline, ``switcher_call`` a
call through an embedded switcher on ``embedded_config``, ``null_transport`` the
upstream that answers at once (for the routing cost).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx

from bench.upstream import OVERHEAD_KEY, overhead_request
from oswitch import SwitcherConfig, parse_config
from oswitch.testing import completion

MODEL = "gpt-4o-mini"
ROOT = Path(__file__).resolve().parent.parent


# ---- the upstream ---------------------------------------------------------------------


@contextlib.contextmanager
def upstream_process(
    server: str = "raw", timeout_s: float = 30.0, latency_ms: float = 0.0
) -> Iterator[int]:
    """Run ``python -m bench.upstream`` in a child process (answering ``latency_ms``
    after each request); yield its port.

    Raises RuntimeError if it does not report a port within ``timeout_s``.
    """
    arguments = ("--server", server, "--latency-ms", str(latency_ms))
    with port_reporting_child(["bench.upstream", *arguments], timeout_s=timeout_s) as port:
        yield port


def child_env() -> dict[str, str]:
    """This environment, with the checkout first on PYTHONPATH (so ``-m bench...``
    children import this tree's bench and oswitch)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


@contextlib.contextmanager
def port_reporting_child(module_and_args: list[str], *, timeout_s: float = 30.0) -> Iterator[int]:
    """Run ``python -m <module> --port-file FILE <args>`` in a child process until the
    block ends (then terminate it, killed after 5 s); yield the port it wrote to FILE.

    Raises RuntimeError if it exits or writes no port within ``timeout_s``.
    """
    module, *arguments = module_and_args
    with tempfile.TemporaryDirectory(prefix="oswitch-bench-") as tmp:
        port_file = os.path.join(tmp, "port")
        child = subprocess.Popen(
            [sys.executable, "-m", module, "--port-file", port_file, *arguments],
            cwd=ROOT,
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + timeout_s
            while not os.path.exists(port_file):
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{module} did not start")
                time.sleep(0.05)
            with open(port_file) as f:
                port = int(f.read())
            yield port
        finally:
            child.terminate()
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


# ---- one request, three ways -------------------------------------------------------------

Call = Callable[[], Awaitable[float | None]]


def http_call(client: httpx.AsyncClient, url: str, streamed: bool) -> Call:
    """A bare httpx call that parses the reply (every SSE event, when streamed)."""
    headers = {"authorization": f"Bearer {OVERHEAD_KEY}"}
    body = overhead_request(streamed)

    async def plain() -> float | None:
        response = await client.post(url, json=body, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")
        response.json()["choices"][0]["message"]["content"]
        return None

    async def stream() -> float | None:
        started = time.perf_counter()
        ttft: float | None = None
        async with client.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}")
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                choices = chunk.get("choices") or ()
                if ttft is None and choices and (choices[0].get("delta") or {}).get("content"):
                    ttft = time.perf_counter() - started
        return ttft

    return stream if streamed else plain


def switcher_call(switcher: Any, streamed: bool) -> Call:
    """A call through an embedded switcher (``complete`` or ``stream``)."""
    body = overhead_request(False)

    async def plain() -> float | None:
        reply = await switcher.complete(body)
        reply["choices"][0]["message"]["content"]
        return None

    async def stream() -> float | None:
        started = time.perf_counter()
        ttft: float | None = None
        async with switcher.stream(body) as chunks:
            async for _ in chunks:
                if ttft is None:
                    ttft = time.perf_counter() - started
        return ttft

    return stream if streamed else plain


def embedded_config(base_url: str, *, targets: int = 1, concurrency: int = 512) -> SwitcherConfig:
    """Targets serving one model at ``base_url`` with limits that never bind the benchmark."""
    return parse_config(
        {
            "concurrency_limit": concurrency,
            "queue_limit": 4 * concurrency,
            "backpressure_threshold": 4 * concurrency,
            "targets": [
                {
                    "target_id": f"upstream-{n}",
                    "provider_id": "openai",
                    "base_url": base_url,
                    "api_key": OVERHEAD_KEY if targets == 1 else f"{OVERHEAD_KEY}-{n}",
                    "model": MODEL,
                    "concurrency_limit": concurrency,
                }
                for n in range(targets)
            ],
        }
    )


# Request traces an engine keeps (the config's default, which embedded_config keeps).
TRACE_CAPACITY: int = attrs.fields(SwitcherConfig).trace_capacity.default


def pool_limits(concurrency: int = 512) -> httpx.Limits:
    """httpx pool limits as large as the benchmark's oswitch target gets."""
    return httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)


def http_client(concurrency: int = 512) -> httpx.AsyncClient:
    """The bare client: the same pool size and timeouts oswitch gives a target."""
    return httpx.AsyncClient(limits=pool_limits(concurrency), timeout=httpx.Timeout(None, pool=5.0))


# ---- an upstream that answers at once --------------------------------------------------

_CANNED = json.dumps(completion("ok", model=MODEL)).encode()


def null_transport() -> httpx.MockTransport:
    """A transport that answers every request at once with a canned completion."""

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=_CANNED, headers={"content-type": "application/json"})

    return httpx.MockTransport(handle)
