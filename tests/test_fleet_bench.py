"""The fleet bench's pieces that need no processes: its config is valid, its window
counts are right, ``--fleet`` is parsed."""

from __future__ import annotations

from pathlib import Path

from bench.cli import _parser
from bench.fleet import FleetTarget, fleet_config, max_in_window, per_window, window_bound
from oswitch import load_config


def test_the_fleet_config_loads_with_its_store_and_limits(tmp_path: Path) -> None:
    """Every replica's TOML is a valid config carrying the store and the key's limit."""
    path = tmp_path / "fleet.toml"
    target = FleetTarget(target_id="limited", key="k", requests_per_minute=600, burst=2)
    path.write_text(
        fleet_config([target], provider_port=1234, store_url="redis://127.0.0.1:1", prefix="p")
    )
    config = load_config(path)
    assert config.store is not None and config.store.expected_replicas == 3
    assert config.targets[0].rate_limit is not None
    assert config.targets[0].rate_limit.burst == 2


def test_window_counts() -> None:
    """The busiest window and per-window counts over arrival times."""
    times = [0.0, 0.1, 0.2, 1.05, 1.1, 2.5]
    assert max_in_window(times, 1.0) == 3
    assert max_in_window(times, 0.1) == 2
    assert per_window(times, 0.0, 3.0, 1.0) == [3, 2, 1]
    assert window_bound(10.0, 2, 1.0) == 13.0


def test_fleet_takes_an_optional_replica_count() -> None:
    """``--fleet`` alone means three replicas."""
    assert _parser().parse_args(["--fleet"]).fleet == 3
    assert _parser().parse_args(["--fleet", "5"]).fleet == 5
