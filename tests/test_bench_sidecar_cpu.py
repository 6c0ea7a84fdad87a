"""``python -m bench.sidecar_cpu``: the sidecar's own CPU, measured with the caller in
another process, beside the embedded engine's."""

from __future__ import annotations

import json

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
        assert row["embedded_ms"] > 0 and row["sidecar_own_ms"] > 0
        assert row["ratio"] == pytest.approx(row["sidecar_own_ms"] / row["embedded_ms"], abs=0.011)
