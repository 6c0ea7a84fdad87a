"""Reads and writes on a connected, non-blocking trio socket, without trio's per-call
layers.

Every trio ``recv`` and ``send`` goes through a wrapper, a helper and an async context
manager (its cancellation sandwich); these go to the file descriptor at once. A read
keeps trio's guarantees: always a cancel point and exactly one schedule point (the wait
for bytes, or a cancel-shielded one after bytes that were waiting already). A write is
split so that its caller chooses: :func:`write_now` never waits, :func:`write_rest`
waits only while the socket's buffer is full. The caller makes a write a cancel point
(a cancelled task writes nothing) and adds a schedule point where one is wanted.

The errors are the socket's own: ``OSError`` (``EBADF`` on a closed socket), and
``trio.ClosedResourceError`` when another task closes the socket during a wait.
"""

from __future__ import annotations

import os

import trio


async def receive(socket: trio.socket.SocketType, max_bytes: int) -> bytes:
    """Up to ``max_bytes`` from ``socket``; ``b""`` once the peer has closed its side.

    Blocks until some bytes (or the end) arrive. A cancel point before the read, and one
    schedule point whichever way: the wait for the socket to become readable, or, when
    bytes (or an error) were waiting already, a cancel-shielded one after the read (so
    nothing read is lost to a cancellation). Raises ``OSError`` from the read (``EBADF``
    once the socket is closed), and ``trio.ClosedResourceError`` if the socket is closed
    while this waits."""
    await trio.lowlevel.checkpoint_if_cancelled()
    try:
        data = os.read(socket.fileno(), max_bytes)
    except BlockingIOError:
        pass
    except OSError:
        await trio.lowlevel.cancel_shielded_checkpoint()
        raise
    else:
        await trio.lowlevel.cancel_shielded_checkpoint()
        return data
    while True:
        await trio.lowlevel.wait_readable(socket)
        try:
            # The descriptor is asked for again: tasks woken with this one may have run
            # first and closed the socket, and its number may already be another
            # connection's (closed, it reads as -1 and so fails with EBADF).
            return os.read(socket.fileno(), max_bytes)
        except BlockingIOError:  # a spurious wakeup: wait again
            continue


async def receive_when_readable(socket: trio.socket.SocketType, max_bytes: int) -> bytes:
    """As :func:`receive`, but waits for the socket to become readable before the first
    read: for a caller whose last read took all the socket had (fewer bytes than it
    asked for), whose next read would only find nothing and cost a failed system call.

    Blocks until some bytes (or the end) arrive; the wait is a cancel point and its one
    schedule point (bytes already waiting end it at once). Raises as :func:`receive`:
    ``OSError`` (``EBADF``) after one schedule point on a socket already closed."""
    if socket.fileno() < 0:
        # trio would register descriptor -1 for the wait (a ValueError, and a stale entry
        # that makes every later wait on a closed socket BusyResourceError): read instead.
        return await receive(socket, max_bytes)
    while True:
        await trio.lowlevel.wait_readable(socket)
        try:
            return os.read(socket.fileno(), max_bytes)
        except BlockingIOError:  # a spurious wakeup: wait again
            continue


def write_now(socket: trio.socket.SocketType, data: bytes | bytearray | memoryview) -> int:
    """Write what fits the socket's buffer now, and return how many bytes that was (0 when
    it is full). Never waits. Raises ``OSError`` (``EBADF`` once the socket is closed)."""
    try:
        return os.write(socket.fileno(), data)
    except BlockingIOError:
        return 0


async def write_rest(
    socket: trio.socket.SocketType, data: bytes | bytearray | memoryview, sent: int
) -> None:
    """Write ``data`` from byte ``sent`` on (at least one byte is left), waiting while the
    socket's buffer is full.

    Blocks until the kernel took every byte; each wait is a checkpoint. A cancellation
    during a wait leaves part of ``data`` unwritten (the caller closes the connection).
    Raises ``OSError`` from the write, and ``trio.ClosedResourceError`` if the socket is
    closed while this waits."""
    view = memoryview(data)
    while True:  # called when the buffer was full: wait before writing again
        await trio.lowlevel.wait_writable(socket)
        sent += write_now(socket, view[sent:])
        if sent >= len(view):
            return
