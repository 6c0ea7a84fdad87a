"""The fake provider schedules as a real one would: a request is always a checkpoint,
and so is every piece of a streamed body, as every read from a socket is."""

from __future__ import annotations

import httpx
import trio

from oswitch.testing import FakeProvider, reply, stream


def _request(key: str, *, streamed: bool = False) -> httpx.Request:
    body = b'{"model": "m", "stream": true}' if streamed else b'{"model": "m"}'
    return httpx.Request(
        "POST",
        "https://fake.test/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        content=body,
    )


async def test_an_instant_answer_is_still_a_checkpoint(autojump_clock: object) -> None:
    """A zero-latency reply, and a request no route matches, are each cancelled when
    asked for inside a cancelled scope: handling a request is always a checkpoint."""
    fake = FakeProvider()
    fake.on("key", reply("hi"))
    for key in ("key", "nobody"):
        with trio.CancelScope() as scope:
            scope.cancel()
            await fake.handle(_request(key))
        assert scope.cancelled_caught, key
    assert (await fake.handle(_request("key"))).status_code == 200
    assert trio.current_time() == 0.0


async def test_every_piece_of_a_streamed_body_is_a_checkpoint(autojump_clock: object) -> None:
    """The next piece of a zero-latency stream, asked for inside a cancelled scope, is
    cancelled rather than handed over at once, and the fake counts the stream cancelled."""
    fake = FakeProvider()
    fake.on("key", stream("one two three four five", split_bytes=16))
    response = await fake.handle(_request("key", streamed=True))
    pieces = response.aiter_raw()
    assert await pieces.__anext__()
    with trio.CancelScope() as scope:
        scope.cancel()
        await pieces.__anext__()
    assert scope.cancelled_caught
    assert fake.cancelled == 1
    assert trio.current_time() == 0.0
