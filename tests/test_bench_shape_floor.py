"""``python -m bench.shape_floor``: what the engine's actor shape costs on trio, beside
a bare trio client, embedded oswitch and aiohttp."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from bench import shape_floor


def test_shape_floor_measures_every_variant_against_aiohttp(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A tiny run gives one row per variant (the three shapes, oswitch, aiohttp), each
    with its CPU per request (every call answered) and its ratio to aiohttp's."""
    pytest.importorskip("aiohttp")
    assert (
        shape_floor.main(["--requests", "12", "--rounds", "1", "--concurrency", "2", "--json"]) == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert [(r["variant"], r["concurrency"]) for r in rows] == [
        ("trio socket", 2),
        ("+ inbox", 2),
        ("+ inbox, spawn", 2),
        ("oswitch embedded", 2),
        ("aiohttp", 2),
    ]
    aiohttp_ms = rows[-1]["cpu_ms"]
    assert rows[-1]["vs_aiohttp"] == 1.0
    for row in rows:
        assert row["cpu_ms"] > 0
        assert row["vs_aiohttp"] == pytest.approx(row["cpu_ms"] / aiohttp_ms, abs=0.011)


async def test_the_bare_client_refuses_a_reply_it_cannot_read() -> None:
    """The bare trio client reads 200 replies with a Content-Length; anything else is a
    RuntimeError naming the head, never a wrong figure."""
    client = shape_floor.BareClient(port=1)
    near, far = trio.testing.memory_stream_pair()
    client.idle.append(near)
    async with trio.open_nursery() as nursery:

        async def answer() -> None:
            await far.receive_some(65536)
            await far.send_all(b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n")

        nursery.start_soon(answer)
        with trio.fail_after(5), pytest.raises(RuntimeError, match="unexpected reply head"):
            await client.exchange()
