"""Reading config files: only regular files, at most MAX_CONFIG_BYTES, never waiting on
the file (a FIFO or /dev/zero given to load_config or to a control reload is refused)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import trio

from oswitch.config import load_config, parse_config
from oswitch.config.load import MAX_CONFIG_BYTES, read_config_file
from oswitch.control import ControlServer, open_control
from oswitch.control.client import CommandRefused
from oswitch.errors import ConfigError
from oswitch.runtime.switcher import open_switcher
from oswitch.testing import FakeProvider
from support import BASE_URL

GUARD_S = 5.0
TOKEN = "ctl-token-config-files-not-a-secret"
DOCUMENT = {
    "targets": [
        {"target_id": "a", "provider_id": "openai", "base_url": BASE_URL, "model": "gpt-4o"}
    ]
}


def problems_of(path: str | Path) -> tuple[tuple[str, str], ...]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


async def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    """A FIFO (which no one writes) is refused as not a regular file instead of
    blocking the reader forever."""
    fifo = tmp_path / "oswitch.toml"
    os.mkfifo(fifo)
    with trio.fail_after(GUARD_S), pytest.raises(ConfigError) as info:
        await trio.to_thread.run_sync(load_config, fifo, abandon_on_cancel=True)
    assert info.value.problems == ((str(fifo), "not a regular file (a FIFO)"),)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_dev_zero_is_refused_without_reading() -> None:
    """/dev/zero (endless bytes) is refused as a character device, not read into memory."""
    assert problems_of("/dev/zero") == (("/dev/zero", "not a regular file (a character device)"),)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    """A directory is refused as not a regular file."""
    assert problems_of(tmp_path) == ((str(tmp_path), "not a regular file (a directory)"),)


def test_an_oversize_file_is_refused_with_the_limit(tmp_path: Path) -> None:
    """A file one byte over MAX_CONFIG_BYTES (1 MiB) is refused naming it and the limit."""
    path = tmp_path / "big.json"
    text = json.dumps(DOCUMENT)
    path.write_text(text + " " * (MAX_CONFIG_BYTES + 1 - len(text)))
    assert problems_of(path) == ((str(path), "file too big: over 1048576 bytes"),)


def test_a_file_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    """A file of exactly MAX_CONFIG_BYTES is read and parsed."""
    path = tmp_path / "full.json"
    text = json.dumps(DOCUMENT)
    path.write_text(text + " " * (MAX_CONFIG_BYTES - len(text)))
    assert load_config(path) == parse_config(DOCUMENT)


def test_a_symlink_to_a_regular_file_is_read(tmp_path: Path) -> None:
    """A symlink to a regular file (as a mounted ConfigMap is) is followed and read."""
    real = tmp_path / "real.json"
    real.write_text(json.dumps(DOCUMENT))
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert load_config(link) == parse_config(DOCUMENT)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs procfs")
def test_more_bytes_than_the_size_said_are_still_cut_at_the_limit() -> None:
    """A regular file whose size says 0 but reads longer (procfs, or a file that grew
    after it was looked at) is refused once more than the limit has been read."""
    assert os.stat("/proc/self/status").st_size == 0
    with pytest.raises(ConfigError) as info:
        read_config_file("/proc/self/status", limit=16)
    assert info.value.problems == (("/proc/self/status", "file too big: over 16 bytes"),)


async def test_a_control_reload_of_a_fifo_is_refused_and_shutdown_is_prompt(
    tmp_path: Path,
) -> None:
    """reload_config naming a FIFO is refused with invalid_config at once, the running
    config stays, and the server then shuts down without waiting on the FIFO."""
    fifo = tmp_path / "reload.json"
    os.mkfifo(fifo)
    config = parse_config(DOCUMENT)

    async def unblock_a_stuck_reader() -> None:
        # A reader stuck in a worker thread ignores cancellation: end it with EOF, so
        # a regression fails this test instead of hanging it.
        await trio.sleep(GUARD_S)
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    with trio.fail_after(2 * GUARD_S):
        async with open_switcher(config, transport=FakeProvider().transport()) as switcher:
            server = ControlServer(switcher, token=TOKEN)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(unblock_a_stuck_reader)
                port = await nursery.start(server.serve)
                async with open_control(f"ws://127.0.0.1:{port}", token=TOKEN) as control:
                    with pytest.raises(CommandRefused) as refused:
                        await control.reload_config(path=str(fifo))
                nursery.cancel_scope.cancel()
            assert switcher.config is config
    assert refused.value.code == "invalid_config"
    assert refused.value.problems == ((str(fifo), "not a regular file (a FIFO)"),)
