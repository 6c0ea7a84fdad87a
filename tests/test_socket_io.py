"""oswitch.transport.socket_io: reads and writes on a non-blocking socket, one schedule
point per read, none for a write that fits; checked over a real socket pair."""

from __future__ import annotations

import errno
import os

import httpx
import pytest
import trio
import trio.lowlevel
import trio.testing

from oswitch.transport import socket_io
from oswitch.transport.connection import Connection

GUARD_S = 5


class StepCounter(trio.abc.Instrument):
    """Counts the task steps one task takes."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def steps_of(call):
    """What ``call()`` returns and how many task steps it took after the first."""
    counter = StepCounter(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(counter)
    try:
        result = await call()
    finally:
        trio.lowlevel.remove_instrument(counter)
    return result, counter.steps


async def test_a_read_that_waits_takes_one_step() -> None:
    """A read with nothing waiting wakes once, when the bytes come, and returns in that
    same step."""
    left, right = trio.socket.socketpair()
    with left, right, trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:

            async def answer() -> None:
                await trio.testing.wait_all_tasks_blocked()
                await right.send(b"late")

            nursery.start_soon(answer)
            data, steps = await steps_of(lambda: socket_io.receive(left, 100))
        assert data == b"late"
        assert steps == 1


async def test_a_read_of_bytes_already_there_is_still_a_schedule_point() -> None:
    """Bytes waiting are read at once, but the reader still yields to the scheduler once
    (a cancel-shielded step after the read)."""
    left, right = trio.socket.socketpair()
    with left, right, trio.fail_after(GUARD_S):
        await right.send(b"ready")
        data, steps = await steps_of(lambda: socket_io.receive(left, 100))
        assert (data, steps) == (b"ready", 1)


async def test_a_cancelled_read_takes_nothing() -> None:
    """A read in a cancelled scope raises Cancelled and leaves the bytes for the next."""
    left, right = trio.socket.socketpair()
    with left, right, trio.fail_after(GUARD_S):
        await right.send(b"keep me")
        with trio.CancelScope() as scope:
            scope.cancel()
            await socket_io.receive(left, 100)
        assert scope.cancelled_caught
        assert await socket_io.receive(left, 100) == b"keep me"


async def test_a_read_after_the_peer_closed_is_empty() -> None:
    """The end of the stream reads as b"" (waiting for it or not)."""
    left, right = trio.socket.socketpair()
    with left, trio.fail_after(GUARD_S):
        right.close()
        assert await socket_io.receive(left, 100) == b""


async def test_closing_the_socket_wakes_a_waiting_read() -> None:
    """Another task closing the socket ends a waiting read with ClosedResourceError."""
    left, right = trio.socket.socketpair()
    with right, trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:

            async def close_soon() -> None:
                await trio.testing.wait_all_tasks_blocked()
                left.close()

            nursery.start_soon(close_soon)
            with pytest.raises(trio.ClosedResourceError):
                await socket_io.receive(left, 100)


async def test_a_closed_socket_reads_and_writes_as_ebadf_after_one_step() -> None:
    """A socket already closed raises OSError(EBADF) at once, read (waiting for
    readability or not) or write; a failing read, and a pool send that fails, still
    yield to the scheduler once first."""
    left, right = trio.socket.socketpair()
    connection = Connection(trio.SocketStream(left), left)
    right.close()
    left.close()
    steps = StepCounter(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(steps)
    with pytest.raises(OSError) as read_error:
        await socket_io.receive(left, 100)
    read_steps = steps.steps
    for _ in range(2):  # a wait on a closed socket leaves nothing behind in trio
        with pytest.raises(OSError) as waited_read_error:
            await socket_io.receive_when_readable(left, 100)
        assert waited_read_error.value.errno == errno.EBADF
    waited_steps = steps.steps
    with pytest.raises(httpx.WriteError, match=r"OSError: \[Errno 9\] Bad file descriptor"):
        await connection.send(b"GET / HTTP/1.1\r\n\r\n", b"")
    trio.lowlevel.remove_instrument(steps)
    with pytest.raises(OSError) as write_error:
        socket_io.write_now(left, b"x")
    assert read_error.value.errno == errno.EBADF
    assert write_error.value.errno == errno.EBADF
    assert (read_steps, waited_steps, steps.steps) == (1, 3, 4)


async def test_a_read_when_readable_takes_one_step_whether_bytes_are_there_or_not() -> None:
    """receive_when_readable waits for bytes before its first read: one step when they
    come later, one step when they were there already, and b"" at the end."""
    left, right = trio.socket.socketpair()
    with left, trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:

            async def answer() -> None:
                await trio.testing.wait_all_tasks_blocked()
                await right.send(b"late")

            nursery.start_soon(answer)
            late = await steps_of(lambda: socket_io.receive_when_readable(left, 100))
        await right.send(b"ready")
        ready = await steps_of(lambda: socket_io.receive_when_readable(left, 100))
        right.close()
        assert (late, ready) == ((b"late", 1), (b"ready", 1))
        assert await socket_io.receive_when_readable(left, 100) == b""


async def test_a_cancelled_read_when_readable_takes_nothing() -> None:
    """A read that waits first, in a cancelled scope, raises Cancelled and leaves the
    bytes for the next read."""
    left, right = trio.socket.socketpair()
    with left, right, trio.fail_after(GUARD_S):
        await right.send(b"keep me")
        with trio.CancelScope() as scope:
            scope.cancel()
            await socket_io.receive_when_readable(left, 100)
        assert scope.cancelled_caught
        assert await socket_io.receive_when_readable(left, 100) == b"keep me"


async def test_a_write_that_fits_is_whole_and_a_full_buffer_returns_zero() -> None:
    """write_now writes what fits and says how much: all of a small write, then nothing
    once the socket's buffer is full."""
    left, right = trio.socket.socketpair()
    with left, right:
        assert socket_io.write_now(left, b"hello") == 5
        assert await right.recv(100) == b"hello"
        total = 0
        while (sent := socket_io.write_now(left, b"x" * 65536)) > 0:
            total += sent
        assert total > 0
        assert socket_io.write_now(left, b"more") == 0


async def test_write_rest_waits_for_room_and_delivers_every_byte_in_order() -> None:
    """A write larger than the socket's buffer goes out whole, in order, as the peer
    reads."""
    left, right = trio.socket.socketpair()
    data = bytes(range(256)) * 40_000  # ~10 MB, far past any socket buffer
    received = bytearray()
    with left, right, trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:

            async def read_all() -> None:
                while len(received) < len(data):
                    received.extend(await right.recv(1 << 20))

            nursery.start_soon(read_all)
            sent = socket_io.write_now(left, data)
            assert 0 < sent < len(data)
            await socket_io.write_rest(left, data, sent)
        assert bytes(received) == data


async def test_a_write_waiting_for_room_can_be_cancelled() -> None:
    """A write waiting on a peer that reads nothing ends when its scope is cancelled."""
    left, right = trio.socket.socketpair()
    data = b"y" * (8 << 20)
    with left, right, trio.fail_after(GUARD_S):
        sent = socket_io.write_now(left, data)
        with trio.move_on_after(0.05) as scope:
            await socket_io.write_rest(left, data, sent)
        assert scope.cancelled_caught


async def test_a_pool_request_takes_one_step_to_send_and_one_to_read_its_answer() -> None:
    """A pool connection sends a small request with one schedule point (so the answer's
    first read comes a round later) and reads the answer's head in one step."""
    left, right = trio.socket.socketpair()
    connection = Connection(trio.SocketStream(left), left)
    with left, right, trio.fail_after(GUARD_S):
        _, send_steps = await steps_of(lambda: connection.send(b"GET / HTTP/1.1\r\n\r\n", b""))
        assert await right.recv(100) == b"GET / HTTP/1.1\r\n\r\n"
        async with trio.open_nursery() as nursery:

            async def answer() -> None:
                await trio.testing.wait_all_tasks_blocked()
                await right.send(b"HTTP/1.1 204 No Content\r\n\r\n")

            nursery.start_soon(answer)
            head, read_steps = await steps_of(lambda: connection.read_head(b"GET"))
        assert (send_steps, read_steps, head.status) == (1, 1, 204)


async def test_a_cancelled_pool_connection_sends_nothing() -> None:
    """A send in a cancelled scope raises Cancelled before a byte leaves."""
    left, right = trio.socket.socketpair()
    connection = Connection(trio.SocketStream(left), left)
    with left, right:
        with trio.CancelScope() as scope:
            scope.cancel()
            await connection.send(b"GET / HTTP/1.1\r\n\r\n", b"")
        assert scope.cancelled_caught
        with pytest.raises(BlockingIOError):
            os.read(right.fileno(), 10)  # trio sockets are non-blocking: nothing came


async def _read_woken_with_its_closer() -> object:
    """Wake a read of ``a`` and a task that closes ``a`` and puts another connection
    behind its number in one scheduling round; return what the read gave."""
    a, a_peer = trio.socket.socketpair()
    trigger, trigger_peer = trio.socket.socketpair()
    other, other_peer = trio.socket.socketpair()
    read: list[object] = []
    reused: list[int] = []

    async def read_a() -> None:
        try:
            read.append(await socket_io.receive(a, 100))
        except (OSError, trio.ClosedResourceError) as exc:
            read.append(type(exc))

    async def close_a_and_reuse_its_number() -> None:
        await trio.lowlevel.wait_readable(trigger)
        number = a.fileno()
        a.close()
        os.dup2(other.fileno(), number)  # the freed number now reads `other`
        reused.append(number)

    with trio.fail_after(GUARD_S):
        await other_peer.send(b"other connection's bytes")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_a)
            nursery.start_soon(close_a_and_reuse_its_number)
            await trio.testing.wait_all_tasks_blocked()
            # Both written in one task step, so both tasks wake in one round.
            os.write(a_peer.fileno(), b"a's bytes")
            os.write(trigger_peer.fileno(), b"x")
    os.close(reused[0])
    for sock in (a_peer, trigger, trigger_peer, other, other_peer):
        sock.close()
    return read[0]


async def test_a_read_woken_with_the_task_that_closes_its_socket_never_reads_another() -> None:
    """A read woken in the same scheduling round as the task that closes its socket and
    hands the descriptor's number to another connection (as an accept loop does) reads
    its own bytes or fails as closed, never the other connection's bytes."""
    # Which of the two woken tasks runs first is trio's random pick: both orders come up.
    outcomes = {await _read_woken_with_its_closer() for _ in range(40)}
    assert outcomes == {b"a's bytes", OSError}
