"""Reading a small file the config names (the config file itself, a ``{file:...}`` key)
without ever waiting on it: only a regular file, and at most a bounded number of bytes.

A leaf: the config loader and the reference reader both import it, and it imports
nothing of oswitch. Each caller words the refusal its own way.
"""

from __future__ import annotations

import os
import stat

# Never wait on the file: a FIFO or a device opens at once, and is then refused.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class NotRegularFile(ValueError):
    """The path names something other than a regular file; ``kind`` says what it is
    ("a FIFO", "a directory", ...)."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"not a regular file ({kind})")
        self.kind = kind


class FileTooBig(ValueError):
    """The file holds more than ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"over {limit} bytes")
        self.limit = limit


def _refuse_irregular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise NotRegularFile(next((kind for test, kind in _KINDS if test(mode)), "not a file"))


def read_regular_file(path: str | os.PathLike[str], *, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    Never blocks on the file itself: it is looked at, opened non-blocking and looked
    at again, so anything but a regular file (a FIFO, ``/dev/zero``, a directory, a
    socket) is refused before a byte is read; at most ``limit + 1`` bytes are ever
    read, however big the file says it is. Raises NotRegularFile, FileTooBig, or the
    OSError of a file that cannot be looked at, opened or read.
    """
    # Looked at before opening too: opening some devices acts (a watchdog arms).
    _refuse_irregular(os.stat(path).st_mode)
    fd = os.open(path, _OPEN_FLAGS)
    try:
        info = os.fstat(fd)  # the file opened, not the one looked at: no race
        _refuse_irregular(info.st_mode)
        if info.st_size > limit:
            raise FileTooBig(limit)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:  # the file may grow after fstat: count what is read
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise FileTooBig(limit)
    return b"".join(chunks)
