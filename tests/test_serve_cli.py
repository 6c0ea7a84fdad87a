"""`oswitch serve` as a real process: listens, serves, logs NDJSON, stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import trio
from trio_websocket import open_websocket_url

from oswitch.testing import FakeProvider, reply, serve_fake_provider

SECRET_KEY = "sk-serve-test-0123456789"
TOKEN = "control-token-for-tests-42"


async def read_until(stream: trio.abc.ReceiveStream, marker: str, seen: list[str]) -> str:
    """Read stderr lines into ``seen`` until one contains ``marker``; return that line."""
    while True:
        for line in seen:
            if marker in line:
                return line
        data = await stream.receive_some(4096)
        if not data:
            raise AssertionError(f"process ended before {marker!r}: {seen}")
        text = (seen.pop() if seen and not seen[-1].endswith("\n") else "") + data.decode()
        seen.extend(line + "\n" for line in text.split("\n")[:-1])
        if not text.endswith("\n"):
            seen.append(text.split("\n")[-1])


async def exercise(process: trio.Process, seen: list[str]) -> str:
    """Talk to a running `oswitch serve`, then SIGTERM it; return the request's id."""
    assert process.stderr is not None
    control_line = await read_until(process.stderr, "control_listening", seen)
    control_url = "ws://127.0.0.1:" + control_line.split(" port=")[1].split()[0]
    line = await read_until(process.stderr, "sidecar_listening", seen)
    base = line.split("note=")[1].split()[0]
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{base}/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert response.status_code == 200
    async with open_websocket_url(control_url) as ws:
        await ws.send_message(json.dumps({"op": "auth", "token": TOKEN}))
        assert json.loads(await ws.get_message())["ok"] is True
        await ws.send_message(json.dumps({"id": 1, "op": "list_targets"}))
        listing = json.loads(await ws.get_message())
    assert listing["ok"] and listing["result"]["targets"][0]["target_id"] == "only"
    process.send_signal(signal.SIGTERM)
    assert await process.wait() == 0
    return response.headers["x-oswitch-request-id"]


async def test_serve_process_serves_then_exits_zero_on_sigterm(tmp_path: Path) -> None:
    """A real `oswitch serve` answers a chat request, audits it as NDJSON on stdout
    (never the key), serves the control channel, and exits 0 on SIGTERM."""
    fake = FakeProvider().on(SECRET_KEY, reply("served by a real process"))
    stdout: list[bytes] = []
    seen: list[str] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            upstream = await nursery.start(serve_fake_provider, fake)
            config = tmp_path / "oswitch.toml"
            config.write_text(
                f"""
[[targets]]
target_id = "only"
provider_id = "openai"
base_url = "http://127.0.0.1:{upstream}/v1"
api_key = "{SECRET_KEY}"
model = "gpt-4o"
"""
            )
            process = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "oswitch",
                    "serve",
                    "--config",
                    str(config),
                    "--port",
                    "0",
                    "--control-port",
                    "0",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**os.environ, "OSWITCH_CONTROL_TOKEN": TOKEN},
            )

            async def drain_stdout() -> None:
                assert process.stdout is not None
                while data := await process.stdout.receive_some(65536):
                    stdout.append(data)

            nursery.start_soon(drain_stdout)
            try:
                request_id = await exercise(process, seen)
            finally:
                if process.returncode is None:
                    process.kill()
            nursery.cancel_scope.cancel()
    audit = [json.loads(line) for line in b"".join(stdout).decode().splitlines() if line]
    attempts = [e for e in audit if e.get("request_id") == request_id]
    assert [(e["event"], e["decision"]) for e in attempts] == [("attempt", "return")]
    assert all(e["ts"] for e in audit)
    everything = b"".join(stdout).decode() + "".join(seen)
    assert SECRET_KEY not in everything and TOKEN not in everything


async def test_serve_reports_a_busy_port_plainly(tmp_path: Path) -> None:
    """A port already in use is a one-line error and exit 2, not a traceback."""
    config = tmp_path / "oswitch.toml"
    config.write_text('[[targets]]\ntarget_id = "only"\nprovider_id = "ollama"\nmodel = "llama3"\n')
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    with trio.fail_after(20), listener:
        result = await trio.run_process(
            [
                sys.executable,
                "-m",
                "oswitch",
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 2
    assert b"oswitch serve: cannot listen:" in result.stderr
    assert b"Traceback" not in result.stderr


async def test_control_port_without_a_token_is_refused(tmp_path: Path) -> None:
    """Asking for the control channel without a token is a config error, exit 2."""
    config = tmp_path / "oswitch.toml"
    config.write_text('[[targets]]\ntarget_id = "only"\nprovider_id = "ollama"\nmodel = "llama3"\n')
    env = {k: v for k, v in os.environ.items() if k != "OSWITCH_CONTROL_TOKEN"}
    with trio.fail_after(20):
        result = await trio.run_process(
            [
                sys.executable,
                "-m",
                "oswitch",
                "serve",
                "--config",
                str(config),
                "--port",
                "0",
                "--control-port",
                "0",
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )
    assert result.returncode == 2
    assert (
        result.stderr.decode()
        .strip()
        .endswith(
            "the control channel needs a token: set control.token or OSWITCH_CONTROL_TOKEN"
            " @ $.control.token"
        )
    )


def serve_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "oswitch", "serve", "--config", str(config), "--port", "0"]


def offline_target(target_id: str, model: str) -> str:
    """A target nothing will call (the tests below only ask /v1/models and /healthz)."""
    return f"""
[[targets]]
target_id = "{target_id}"
provider_id = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "{SECRET_KEY}"
model = "{model}"
"""


async def served_models(base: str) -> list[str]:
    async with httpx.AsyncClient() as client:
        listing = (await client.get(f"{base}/v1/models")).json()
    return [entry["id"] for entry in listing["data"]]


async def test_sighup_reloads_the_config_file_and_a_broken_one_changes_nothing(
    tmp_path: Path,
) -> None:
    """A real `oswitch serve`: SIGHUP with a changed file brings the new target's model
    into /v1/models; SIGHUP with a broken file keeps the old config serving and logs
    config_reload_failed naming the problem; SIGTERM then exits 0."""
    config = tmp_path / "oswitch.toml"
    config.write_text(offline_target("first", "m1"))
    stdout_seen: list[str] = []
    stderr_seen: list[str] = []
    with trio.fail_after(30):
        process = await trio.lowlevel.open_process(
            serve_command(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert process.stdout is not None and process.stderr is not None
        try:
            line = await read_until(process.stderr, "sidecar_listening", stderr_seen)
            base = line.split("note=")[1].split()[0]
            assert await served_models(base) == ["m1"]

            config.write_text(offline_target("first", "m1") + offline_target("second", "m2"))
            process.send_signal(signal.SIGHUP)
            reloaded = await read_until(process.stdout, "config_reloaded", stdout_seen)
            assert json.loads(reloaded)["note"] == "2 targets"
            assert await served_models(base) == ["m1", "m2"]

            config.write_text(offline_target("first", "m1").replace("model", "modle"))
            process.send_signal(signal.SIGHUP)
            failed = await read_until(process.stderr, "config_reload_failed", stderr_seen)
            assert failed.rstrip().endswith(
                f"config_reload_failed note={config} problems="
                "[\"unknown key 'modle' (did you mean 'model'?) @ $.targets[0].modle\"]"
            )
            assert await served_models(base) == ["m1", "m2"]

            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
    assert SECRET_KEY not in "".join(stdout_seen + stderr_seen)


async def test_serve_names_missing_keys_at_start_and_serves_anyway(tmp_path: Path) -> None:
    """`oswitch serve` prints check-config's warnings at start (the missing key by name),
    starts anyway, and answers a request with 503 naming the variable to set."""
    config = tmp_path / "oswitch.toml"
    config.write_text(
        '[[targets]]\ntarget_id = "only"\nprovider_id = "openai"\n'
        'api_key_env = "OSWITCH_TEST_UNSET_KEY"\nmodel = "m"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "OSWITCH_TEST_UNSET_KEY"}
    seen: list[str] = []
    with trio.fail_after(30):
        process = await trio.lowlevel.open_process(
            serve_command(config), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        assert process.stderr is not None
        try:
            line = await read_until(process.stderr, "sidecar_listening", seen)
            base = line.split("note=")[1].split()[0]
            async with httpx.AsyncClient() as client:
                response = await client.post(
                    f"{base}/v1/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                )
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
    assert seen[:2] == [
        "warning: only: key missing: set OSWITCH_TEST_UNSET_KEY\n",
        "warning: no target can serve a request yet: each is disabled or missing its key\n",
    ]
    assert any(
        "key_missing: target only has no API key: set OSWITCH_TEST_UNSET_KEY" in line
        for line in seen
    )
    assert (response.status_code, response.json()["error"]["code"]) == (503, "no_api_key")
    assert response.json()["error"]["message"] == (
        "no target for 'm' has an API key: set OSWITCH_TEST_UNSET_KEY (only)"
    )
