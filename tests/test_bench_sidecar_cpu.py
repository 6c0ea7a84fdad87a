"""``python -m bench.sidecar_cpu``: the sidecar's own CPU, measured with the caller in
another process, beside the embedded engine's."""

from __future__ import annotations

import gc
import json
from functools import partial

import pytest

from bench import sidecar_cpu


def test_sidecar_cpu_measures_both_and_their_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    """A tiny run gives one row per mode and concurrency: the embedded engine's CPU per
    request, the sidecar process's own (its aiohttp caller in a child process, every
    call answered), and their ratio against the issue's gate."""
    pytest.importorskip("aiohttp")
    assert (
        sidecar_cpu.main(["--requests", "12", "--rounds", "1", "--concurrency", "2", "--json"]) == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert [(r["mode"], r["concurrency"], r["gate"]) for r in rows] == [
        ("plain", 2, 1.5),
        ("stream", 2, 2.0),
    ]
    for row in rows:
        assert row["embedded_ms"] > 0 and row["sidecar_own_ms"] > 0 and row["aiohttp_ms"] > 0
        assert row["sidecar_collector_ms"] >= 0
        assert row["ratio"] == pytest.approx(row["sidecar_own_ms"] / row["embedded_ms"], abs=0.011)
        assert row["embedded_vs_aiohttp"] == pytest.approx(
            row["embedded_ms"] / row["aiohttp_ms"], abs=0.011
        )


def test_collector_time_counts_the_collections_inside_the_block_only() -> None:
    """The collector's time is summed while the block runs, and its watch is gone
    afterwards: a collection after the block adds nothing."""
    with sidecar_cpu.collector_time() as spent:
        gc.collect()
        gc.collect()
    inside = spent[0]
    assert inside > 0
    gc.collect()
    assert spent[0] == inside


async def test_the_upstream_answers_after_its_latency(autojump_clock: object) -> None:
    """The bench upstream's raw loop, given a latency, answers each request exactly that
    long after it is in (virtual clock, over an in-memory stream)."""
    import trio
    import trio.testing

    from bench.upstream import _raw_connection

    client, server = trio.testing.memory_stream_pair()
    request = b"POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\n{}"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(_raw_connection, server, latency_s=0.02))  # type: ignore[arg-type]
        answered = []
        for _ in range(2):
            sent = trio.current_time()
            await client.send_all(request)
            reply = await client.receive_some(65536)
            answered.append(round(trio.current_time() - sent, 6))
            assert reply.startswith(b"HTTP/1.1 200")
        nursery.cancel_scope.cancel()
    assert answered == [0.02, 0.02]
