"""``oswitch demo``: a sidecar to try in one command, with no keys and no network.

Three fake providers answer on loopback (``oswitch.testing``, over real sockets):
one key healthy, one always rate-limited, one failing every other request. The
sidecar and its control channel run in front of them exactly as ``oswitch serve``
runs (``run_gateway``), and the commands to try are printed with the real ports
and a control token made for this run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import secrets
import sys
from collections.abc import Mapping
from functools import partial
from typing import Any, TextIO

import httpx
import trio

from oswitch.config import SwitcherConfig, parse_config
from oswitch.logs import configure_logging
from oswitch.sidecar.serve import run_gateway
from oswitch.testing import (
    Behaviour,
    FakeProvider,
    rate_limited,
    reply,
    serve_fake_provider,
    server_error,
    stream,
)

DEFAULT_PORT = 8787
DEFAULT_CONTROL_PORT = 8788
DEMO_MODEL = "oswitch-demo"
DEMO_KEY = "demo"  # what clients send the sidecar: it has no api_keys, so anything goes
RATE_LIMIT_RETRY_AFTER_S = 30.0
_LIMITED = f"answers 429, retry after {RATE_LIMIT_RETRY_AFTER_S:g} s"
CALLS_KEPT = 100

# (target_id, the key it sends, what its fake provider does)
_TARGETS = (
    ("healthy", "demo-key-healthy", "answers every request"),
    ("rate-limited", "demo-key-rate-limited", _LIMITED),
    ("flaky", "demo-key-flaky", "fails every other request with 503"),
)  # fmt: skip


class _DemoProvider(FakeProvider):
    """A FakeProvider that keeps only its last calls: the demo may run for hours."""

    async def handle(self, request: httpx.Request) -> httpx.Response:
        del self.calls[:-CALLS_KEPT]
        return await super().handle(request)


def _answer(target_id: str) -> Behaviour:
    """A chat answer naming ``target_id``, streamed when the request asks for a stream."""
    text = f"Hello from the {target_id} demo key, through oswitch."
    plain = reply(text, latency=0.05)
    streamed = stream(text, latency=0.05, chunk_latency=0.02)

    async def respond(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        return await (streamed if body.get("stream") else plain).respond(request, body)

    return Behaviour(name="answer", respond=respond, latency=0.05)


def _every_other_fails(target_id: str) -> Behaviour:
    calls = itertools.count()
    failure, answer = server_error(503), _answer(target_id)

    async def respond(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        chosen = failure if next(calls) % 2 == 0 else answer
        return await chosen.respond(request, body)

    return Behaviour(name="every_other_fails", respond=respond, latency=0.05)


def demo_provider() -> FakeProvider:
    """The three fake upstreams, routed by the key each demo target sends."""
    fake = _DemoProvider()
    healthy, limited, flaky = (key for _, key, _ in _TARGETS)
    fake.on(healthy, _answer("healthy"))
    fake.on(limited, rate_limited(retry_after=RATE_LIMIT_RETRY_AFTER_S))
    fake.on(flaky, _every_other_fails("flaky"))
    return fake


def demo_config(upstream_port: int, *, port: int, control_port: int, token: str) -> SwitcherConfig:
    """The demo's config: three targets on the fake upstream at ``upstream_port``,
    each serving model ``oswitch-demo``; sidecar and control channel on loopback."""
    base_url = f"http://127.0.0.1:{upstream_port}/v1"
    return parse_config(
        {
            "failover_budget": 3,
            "targets": [
                {
                    "target_id": target_id,
                    "provider_id": "demo",
                    "base_url": base_url,
                    "api_key": key,
                    # A model of its own (not a passthrough), so a cooldown shows on
                    # the whole target in `oswitch ctl list-targets`.
                    "model": DEMO_MODEL,
                }
                for target_id, key, _ in _TARGETS
            ],
            "server": {"host": "127.0.0.1", "port": port, "shutdown_grace_ms": 2000},
            "control": {"host": "127.0.0.1", "port": control_port, "token": token},
        }
    )


def instructions(*, port: int, control_port: int, token: str, upstream_port: int) -> str:
    """What the demo prints once listening: where everything is and what to try."""
    base = f"http://127.0.0.1:{port}/v1"
    control = f"ws://127.0.0.1:{control_port}"
    ask = json.dumps({"model": DEMO_MODEL, "messages": [{"role": "user", "content": "Hello"}]})
    ask_stream = json.dumps(
        {"model": DEMO_MODEL, "stream": True, "messages": [{"role": "user", "content": "Hello"}]}
    )
    opencode = {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            "oswitch": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "oswitch demo",
                "options": {"baseURL": base, "apiKey": DEMO_KEY},
                "models": {DEMO_MODEL: {"name": "oswitch demo (fake providers)"}},
            }
        },
    }
    targets = "\n".join(f"    {target_id:<13} {behaviour}" for target_id, _, behaviour in _TARGETS)
    snippet = "\n".join("    " + line for line in json.dumps(opencode, indent=2).splitlines())
    return f"""\
oswitch demo: a sidecar in front of three fake providers on this machine (no keys needed).

  sidecar          {base}
  control channel  {control}
  control token    {token}
  fake upstream    http://127.0.0.1:{upstream_port}/v1, model "{DEMO_MODEL}", one key per target:
{targets}

Try it from another terminal.

  curl:
    curl -s {base}/chat/completions -H 'content-type: application/json' -d '{ask}'
    curl -sN {base}/chat/completions -H 'content-type: application/json' -d '{ask_stream}'

  The OpenAI Python SDK:
    python - <<'EOF'
    from openai import OpenAI
    client = OpenAI(base_url="{base}", api_key="{DEMO_KEY}", max_retries=0)
    reply = client.chat.completions.create(model="{DEMO_MODEL}", messages=[{{"role": "user", "content": "Hello"}}])
    print(reply.choices[0].message.content, reply.model_extra["oswitch"])
    EOF
  or any OpenAI client: OPENAI_BASE_URL={base} OPENAI_API_KEY={DEMO_KEY}

  OpenCode: save this as opencode.json, then: opencode run -m oswitch/{DEMO_MODEL} "Hello"
{snippet}

  oswitch ctl:
    export OSWITCH_CONTROL_URL={control} OSWITCH_CONTROL_TOKEN={token}
    oswitch ctl list-targets
    oswitch ctl watch

Each routing decision is printed below as one NDJSON line. Ctrl-C stops the demo.
"""  # noqa: E501


async def run_demo(
    *,
    port: int = DEFAULT_PORT,
    control_port: int = DEFAULT_CONTROL_PORT,
    out: TextIO | None = None,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[tuple[int, int | None]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the fake upstreams, then the sidecar and control channel before them,
    until ``shutdown`` is set (or SIGTERM/SIGINT, from the main thread); then stop
    everything and return.

    ``port`` / ``control_port`` 0 pick free ports. Once listening, writes
    :func:`instructions` to ``out`` (default stdout) and reports ``(port,
    control_port)``. Raises OSError (perhaps in an ExceptionGroup) when a port is
    taken.
    """
    token = secrets.token_urlsafe(24)
    async with trio.open_nursery() as nursery:
        upstream = await nursery.start(serve_fake_provider, demo_provider())
        config = demo_config(upstream, port=port, control_port=control_port, token=token)

        async def gateway(task_status: trio.TaskStatus[tuple[int, int | None]]) -> None:
            try:
                await run_gateway(config, shutdown=shutdown, task_status=task_status)
            finally:
                nursery.cancel_scope.cancel()  # the fake upstreams go with the gateway

        bound, bound_control = await nursery.start(gateway)
        text = instructions(
            port=bound, control_port=bound_control or 0, token=token, upstream_port=upstream
        )
        stream_out = out or sys.stdout
        stream_out.write(text)
        stream_out.flush()
        task_status.started((bound, bound_control))


def _os_error(exc: BaseException) -> OSError | None:
    if isinstance(exc, BaseExceptionGroup):
        found = exc.subgroup(lambda inner: isinstance(inner, OSError))
        while isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0]
        return found
    return exc if isinstance(exc, OSError) else None


def _demo(args: argparse.Namespace) -> int:
    configure_logging(args.log_format)
    try:
        trio.run(partial(run_demo, port=args.port, control_port=args.control_port))
    except KeyboardInterrupt:
        return 0  # Ctrl-C before the gateway listens for it
    except (OSError, BaseExceptionGroup) as exc:
        failure = _os_error(exc)
        if failure is None:
            raise
        print(
            f"oswitch demo: cannot listen: {failure} "
            "(is another oswitch running? --port 0 --control-port 0 pick free ports)",
            file=sys.stderr,
        )
        return 2
    return 0


def add_demo_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``oswitch demo`` on ``commands``. Raises nothing."""
    parser = commands.add_parser(
        "demo",
        help="try the sidecar with fake providers: no keys, nothing to configure",
        description=(
            "Run the sidecar and its control channel in front of three fake providers on "
            "this machine (one key healthy, one rate-limited, one flaky), and print the "
            "curl, OpenAI SDK, OpenCode and oswitch ctl lines to try. Runs until Ctrl-C "
            "or SIGTERM (exit 0)."
        ),
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"sidecar port (default {DEFAULT_PORT}; 0: any free one)",
    )
    parser.add_argument(
        "--control-port",
        type=int,
        default=DEFAULT_CONTROL_PORT,
        help=f"control channel port (default {DEFAULT_CONTROL_PORT}; 0: any free one)",
    )
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.set_defaults(handler=_demo)
