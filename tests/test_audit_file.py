"""Logs operators can use: the audit file's size rotation and reopen, --log-level, and
the control channel's per-connection lines at debug."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio
from test_ctl import TOKEN as CTL_TOKEN
from test_ctl import running
from test_serve_cli import read_until
from trio_websocket import open_websocket_url

from oswitch.audit import audit, audit_log
from oswitch.logs import configure_logging, reopen_log_files
from oswitch.testing import FakeProvider, reply, serve_fake_provider

SECRET_KEY = "sk-audit-file-test-0123456789"
TOKEN = "control-token-for-audit-tests-42"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the audit and root loggers back as they were (configure_logging replaces
    their handlers)."""
    root = logging.getLogger()
    saved = (list(audit_log.handlers), audit_log.level, audit_log.propagate)
    saved_root = (list(root.handlers), root.level)
    yield
    for handler in audit_log.handlers:
        handler.close()
    audit_log.handlers[:], audit_log.level, audit_log.propagate = saved
    root.handlers[:], root.level = saved_root


def lines_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_audit_file_rotates_by_size_and_keeps_backups(
    tmp_path: Path, restore_logging: None
) -> None:
    """Past audit.max_bytes the file rotates to FILE.1 … FILE.<backups>; no file grows
    past the bound, the oldest is deleted, every line stays whole JSON."""
    path = tmp_path / "audit.ndjson"
    configure_logging(audit_path=str(path), audit_max_bytes=1024, audit_backups=2)
    for index in range(200):
        audit("attempt", request_id=f"req_{index:04d}", target_id="a", decision="return")
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["audit.ndjson", "audit.ndjson.1", "audit.ndjson.2"]
    for name in kept:
        assert (tmp_path / name).stat().st_size <= 1024
    newest = lines_of(path)
    assert newest[-1]["request_id"] == "req_0199"
    assert all(line["event"] == "attempt" for name in kept for line in lines_of(tmp_path / name))


def test_no_backups_truncates_the_full_file(tmp_path: Path, restore_logging: None) -> None:
    """audit.backups = 0 starts the file afresh when full: it never passes max_bytes."""
    path = tmp_path / "audit.ndjson"
    configure_logging(audit_path=str(path), audit_max_bytes=1024, audit_backups=0)
    for index in range(200):
        audit("attempt", request_id=f"req_{index:04d}")
    assert [p.name for p in tmp_path.iterdir()] == ["audit.ndjson"]
    assert path.stat().st_size <= 1024
    assert lines_of(path)[-1]["request_id"] == "req_0199"


def test_reopen_follows_a_file_moved_away(tmp_path: Path, restore_logging: None) -> None:
    """After logrotate moves the file, reopen_log_files sends new lines to a new file at
    the configured path; the moved one keeps the old lines."""
    path = tmp_path / "audit.ndjson"
    configure_logging(audit_path=str(path))
    audit("attempt", request_id="req_before")
    path.rename(tmp_path / "audit.ndjson.old")
    audit("attempt", request_id="req_moved")  # still the open (moved) file
    assert reopen_log_files() == 1
    audit("attempt", request_id="req_after")
    assert [e["request_id"] for e in lines_of(tmp_path / "audit.ndjson.old")] == [
        "req_before",
        "req_moved",
    ]
    assert [e["request_id"] for e in lines_of(path)] == ["req_after"]


def test_log_level_sets_the_stderr_threshold(restore_logging: None) -> None:
    """--log-level: debug lets debug lines through; the default (info) does not; the
    audit log stays at info either way."""
    configure_logging(level="debug")
    assert logging.getLogger("oswitch.control").isEnabledFor(logging.DEBUG)
    configure_logging()
    assert not logging.getLogger("oswitch.control").isEnabledFor(logging.DEBUG)
    configure_logging(level="error")
    assert not logging.getLogger("oswitch.sidecar").isEnabledFor(logging.WARNING)
    assert audit_log.isEnabledFor(logging.INFO)


async def test_serve_writes_audit_to_a_file_reopened_on_sigusr1(tmp_path: Path) -> None:
    """A real `oswitch serve --audit FILE --log-level debug`: the request's audit line
    goes to FILE, not stdout; after the file is moved, SIGUSR1 makes it write a new
    FILE; the control connection's `control_authenticated` shows at debug level."""
    fake = FakeProvider().on(SECRET_KEY, reply("ok"))
    audit_path = tmp_path / "audit.ndjson"
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
                    *(sys.executable, "-m", "oswitch", "serve", "--config", str(config)),
                    *("--port", "0", "--control-port", "0", "--log-level", "debug"),
                    *("--audit", str(audit_path)),
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
                assert process.stderr is not None
                control = await read_until(process.stderr, "control_listening", seen)
                control_url = "ws://127.0.0.1:" + control.split(" port=")[1].split()[0]
                line = await read_until(process.stderr, "sidecar_listening", seen)
                base = line.split("note=")[1].split()[0]
                body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
                async with httpx.AsyncClient() as client:
                    first = await client.post(f"{base}/v1/chat/completions", json=body)
                    audit_path.rename(tmp_path / "audit.ndjson.1")
                    process.send_signal(signal.SIGUSR1)
                    await read_until(process.stderr, "log_files_reopened", seen)
                    second = await client.post(f"{base}/v1/chat/completions", json=body)
                async with open_websocket_url(control_url) as ws:
                    await ws.send_message(json.dumps({"op": "auth", "token": TOKEN}))
                    assert json.loads(await ws.get_message())["ok"] is True
                await read_until(process.stderr, "control_authenticated", seen)
                process.send_signal(signal.SIGTERM)
                assert await process.wait() == 0
            finally:
                if process.returncode is None:
                    process.kill()
            nursery.cancel_scope.cancel()
    moved = lines_of(tmp_path / "audit.ndjson.1")
    fresh = lines_of(audit_path)
    first_id = first.headers["x-oswitch-request-id"]
    second_id = second.headers["x-oswitch-request-id"]
    assert [e["event"] for e in moved if e.get("request_id") == first_id] == ["attempt"]
    assert [e["event"] for e in fresh if e.get("request_id") == second_id] == ["attempt"]
    assert b"".join(stdout) == b""
    assert any("DEBUG" in line and "control_authenticated" in line for line in seen)
    everything = "".join(seen) + audit_path.read_text() + (tmp_path / "audit.ndjson.1").read_text()
    assert SECRET_KEY not in everything and TOKEN not in everything


async def test_control_connections_log_at_debug_not_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A control client authenticating logs `control_authenticated` at debug only, so
    at the default level a busy `ctl` loop adds no lines."""
    caplog.set_level(logging.DEBUG, logger="oswitch.control")
    with trio.fail_after(10):
        async with running(FakeProvider()) as (_, url):
            async with open_websocket_url(url) as ws:
                await ws.send_message(json.dumps({"op": "auth", "token": CTL_TOKEN}))
                assert json.loads(await ws.get_message())["ok"] is True
    [record] = [r for r in caplog.records if r.getMessage() == "control_authenticated"]
    assert record.levelno == logging.DEBUG
