"""`oswitch demo`: a keyless sidecar in one command, run as a real process over loopback."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import openai
import trio

ROOT = Path(__file__).resolve().parent.parent
END_OF_BANNER = "Ctrl-C stops the demo."
# Each wait below sits under this: a whole demo start-up is well under a second.
GUARD_S = 30


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "oswitch", *args]


async def _read_banner(process: trio.Process) -> str:
    """stdout up to the banner's last line (audit lines may follow it)."""
    assert process.stdout is not None
    text = b""
    while END_OF_BANNER.encode() not in text:
        chunk = await process.stdout.receive_some()
        assert chunk, f"the demo ended before its banner: {text.decode()!r}"
        text += chunk
    return text.decode()


def _printed(pattern: str, banner: str) -> str:
    found = re.search(pattern, banner, flags=re.MULTILINE | re.DOTALL)
    assert found is not None, f"{pattern!r} not in the banner:\n{banner}"
    return found.group(1)


async def test_demo_answers_the_printed_sdk_and_ctl_lines_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    """`oswitch demo --port 0 --control-port 0` prints its real URLs and a fresh token;
    the printed OpenAI SDK snippet gets an answer, the SDK streams one, the printed
    `oswitch ctl` line lists the three fake targets, and SIGTERM exits 0."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OSWITCH_")}
    env.update({"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""})  # nothing real is reachable
    stderr = (tmp_path / "demo.err").open("wb")
    process = await trio.lowlevel.open_process(
        _command("demo", "--port", "0", "--control-port", "0"),
        stdout=subprocess.PIPE,
        stderr=stderr,
        cwd=tmp_path,
        env=env,
    )
    try:
        with trio.fail_after(GUARD_S):
            banner = await _read_banner(process)
        base_url = _printed(r"^  sidecar +(http://127\.0\.0\.1:\d+/v1)$", banner)
        control_url = _printed(r"^  control channel +(ws://127\.0\.0\.1:\d+)$", banner)
        token = _printed(r"^  control token +(\S+)$", banner)
        assert not base_url.endswith(":8787/v1") and len(token) >= 32

        # The OpenAI SDK snippet, exactly as printed.
        snippet = textwrap.dedent(_printed(r"python - <<'EOF'\n(.*?)\n *EOF\n", banner))
        assert base_url in snippet
        with trio.fail_after(GUARD_S):
            done = await trio.run_process(
                [sys.executable, "-c", snippet], capture_stdout=True, env=env, check=False
            )
        assert done.returncode == 0, done.stdout
        assert done.stdout.decode().startswith("Hello from the ")

        # A stream through the SDK, from this test.
        client = openai.OpenAI(base_url=base_url, api_key="demo", max_retries=0, timeout=10)

        def streamed() -> str:
            chunks = client.chat.completions.create(
                model="oswitch-demo",
                messages=[{"role": "user", "content": "Hello"}],
                stream=True,
            )
            return "".join(chunk.choices[0].delta.content or "" for chunk in chunks)

        with trio.fail_after(GUARD_S):
            answer = await trio.to_thread.run_sync(streamed, abandon_on_cancel=True)
        assert answer.startswith("Hello from the ") and answer.endswith("through oswitch.")

        # The OpenCode snippet is a provider pointing at this sidecar.
        opencode = json.loads(
            _printed(r'"Hello"\n(    \{\n.*?\n    \})\n', banner).replace("\n    ", "\n")
        )
        assert opencode["provider"]["oswitch"]["options"]["baseURL"] == base_url

        # The ctl lines, as printed: the export, then list-targets.
        exported = _printed(
            r"^    export (OSWITCH_CONTROL_URL=\S+ OSWITCH_CONTROL_TOKEN=\S+)$", banner
        )
        ctl_env = {**env, **dict(pair.split("=", 1) for pair in exported.split())}
        assert (ctl_env["OSWITCH_CONTROL_URL"], ctl_env["OSWITCH_CONTROL_TOKEN"]) == (
            control_url,
            token,
        )
        with trio.fail_after(GUARD_S):
            listed = await trio.run_process(
                _command("ctl", "list-targets"), capture_stdout=True, env=ctl_env, check=False
            )
        assert listed.returncode == 0
        rows = [line.split()[0] for line in listed.stdout.decode().splitlines()]
        assert rows == ["TARGET", "healthy", "rate-limited", "flaky"]

        process.send_signal(signal.SIGTERM)
        with trio.fail_after(GUARD_S):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        stderr.close()
    assert token not in (tmp_path / "demo.err").read_text()


async def test_demo_on_a_port_in_use_says_so_and_exits_2() -> None:
    """A port already taken is one clear line and exit 2, not a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        with trio.fail_after(GUARD_S):
            done = await trio.run_process(
                _command("demo", "--port", port, "--control-port", "0"),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert done.returncode == 2
    last = done.stderr.decode().splitlines()[-1]
    assert last.startswith("oswitch demo: cannot listen: ")
    assert last.endswith("(is another oswitch running? --port 0 --control-port 0 pick free ports)")
