"""A real redis-server (or valkey-server) on a free 127.0.0.1 port, persistence off,
for the fleet bench and the store tests, with the faults they inject: kill, restart,
SIGSTOP / SIGCONT, and plain commands (``SCRIPT FLUSH``, ``CLIENT KILL``) over a
tiny RESP client of its own."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def server_binary() -> str | None:
    """valkey-server or redis-server from PATH, or None."""
    return shutil.which("valkey-server") or shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One server process; ``restart`` brings it back on the same port."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.command("PING") == "PONG":
                    return
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
        self.kill()

    def command(self, *args: str) -> object:
        """Send one command and read its reply (a blocking helper for tests)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
            sock.sendall(payload.encode())
            reader = sock.makefile("rb")
            return _read(reader)


def _read(reader: object) -> object:
    line = reader.readline()  # type: ignore[attr-defined]
    kind, rest = line[:1], line[1:-2].decode()
    if kind in (b"+", b"-"):
        return rest if kind == b"+" else RuntimeError(rest)
    if kind == b":":
        return int(rest)
    if kind == b"$":
        if rest == "-1":
            return None
        data = reader.read(int(rest) + 2)  # type: ignore[attr-defined]
        return data[:-2].decode()
    if kind == b"*":
        return [_read(reader) for _ in range(int(rest))]
    raise RuntimeError(f"unexpected reply {line!r}")
