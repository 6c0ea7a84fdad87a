"""Playing a streamed answer's bytes as TCP may deliver them, acting out its faults,
and telling the fake provider how the body ended."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Final, Literal, Protocol, TypeAlias

import attrs
import httpx
import trio

from oswitch.testing.script import StreamScript
from oswitch.testing.sse import error_event, ping, terminator


@attrs.frozen
class _Pause:
    """Wait this long before going on (the script's ``chunk_latency``)."""

    seconds: float


_STALL: Final = "stall"  # go silent until cancelled
_RESET: Final = "reset"  # the connection is reset by the peer
_Act: TypeAlias = bytes | _Pause | Literal["stall", "reset"]


def _acts(script: StreamScript, events: list[bytes], content: range) -> Iterator[_Act]:
    """What the stream does, in order: pieces of bytes, split every ``split_bytes``,
    and the pauses and faults between them. Pure: :func:`play` acts them out."""
    pending = b""
    content_index = 0
    for position, raw in enumerate(events):
        is_content = position in content
        if is_content and content_index == 0 and 0 in (script.cut_after, script.stall_after):
            # Faults "after 0 chunks": the provider dies before any content.
            if pending:
                yield pending
            if script.stall_after == 0:
                yield _STALL
            return
        if is_content:
            content_index += 1
            if script.malformed_at == content_index:
                raw = b'data: {"choices": [{"delta": {"content": "bro\n\n'
            if script.chunk_latency:
                yield _Pause(script.chunk_latency)
        pending += raw
        if script.ping_every and is_content and content_index % script.ping_every == 0:
            pending += ping(script.api)
        while len(pending) >= script.split_bytes:
            yield pending[: script.split_bytes]
            pending = pending[script.split_bytes :]
        if not is_content:
            continue
        if script.error_after == content_index:
            yield pending + error_event(script.api, script.error_type)
            return
        if script.cut_after == content_index:
            if pending:
                yield pending
            return
        if script.reset_after == content_index:
            if pending:
                yield pending
            yield _RESET
            return
        if script.stall_after == content_index:
            if pending:
                yield pending
            yield _STALL
            return
    if not script.no_terminator:
        pending += terminator(script.api)
    if pending:
        yield pending


# No checkpoint after the last piece: a reader that asks for more after the
# terminator and then ends its attempt would be cancelled at that checkpoint, and
# a finished stream would count as cancelled (FakeProvider.cancelled, which tests
# assert); a real body read to its end is not cancelled either.
async def play(  # noqa: ASYNC911 (ends right after its last piece, see above)
    script: StreamScript, events: list[bytes], content: range
) -> AsyncIterator[bytes]:
    """Yield the stream's bytes, split every ``split_bytes``, acting out the faults.

    ``content`` says which of ``events`` are content chunks (counted from 1 by the
    script's ``*_after`` and ``malformed_at`` options). A stall sleeps until cancelled;
    a reset raises ``httpx.ReadError``. Every piece is a checkpoint, as a read from a
    socket is: a consumer that never waits still lets other tasks run between pieces
    (and with ``chunk_latency`` 0, virtual time does not move).
    """
    for act in _acts(script, events, content):
        if isinstance(act, bytes):
            await trio.lowlevel.checkpoint()
            yield act
        elif isinstance(act, _Pause):
            await trio.sleep(act.seconds)
        elif act == _STALL:
            await trio.sleep_forever()
        else:
            raise httpx.ReadError("connection reset by peer")


class StreamWatcher(Protocol):
    """Who counts how streamed bodies end (the FakeProvider's public tallies)."""

    cancelled: int
    closed_early: int
    open_streams: int
    max_open_streams: int


class PlayedBody(httpx.AsyncByteStream):
    """A streamed fake body that tells its watcher how it ended (read, cancelled,
    or closed early by the client), as a real connection would be seen to end."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self.watcher: StreamWatcher | None = None
        self._open = False
        self._ended = False

    async def __aiter__(self) -> Any:
        watcher = self.watcher
        if watcher is not None:
            watcher.open_streams += 1
            watcher.max_open_streams = max(watcher.max_open_streams, watcher.open_streams)
        self._open = True
        try:
            async for piece in self._source:
                yield piece
            self._ended = True
        except trio.Cancelled:
            self._ended = True
            if watcher is not None:
                watcher.cancelled += 1
            raise
        finally:
            self._release()

    def _release(self) -> None:
        if self._open and self.watcher is not None:
            self.watcher.open_streams -= 1
        self._open = False

    async def aclose(self) -> None:
        if not self._ended and self.watcher is not None:
            self._ended = True
            self.watcher.closed_early += 1
        self._release()
        await self._source.aclose()
