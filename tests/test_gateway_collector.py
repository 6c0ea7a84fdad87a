"""``oswitch serve`` collects Python's young generation less often than an embedding
application would, and gives back whatever setting it found."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from oswitch.cli import build_parser
from oswitch.sidecar.collector import GATEWAY_YOUNG_THRESHOLD, gateway_collector


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield 700, 10, 10
    gc.set_threshold(*before)


def test_the_gateway_setting_holds_inside_and_is_restored_after(
    thresholds: tuple[int, int, int],
) -> None:
    """Inside the block the young threshold is the gateway's and the older ones are
    untouched; after it, the setting found before is back, even after an error."""
    with pytest.raises(RuntimeError), gateway_collector():
        assert gc.get_threshold() == (GATEWAY_YOUNG_THRESHOLD, 10, 10)
        raise RuntimeError("the server failed")
    assert gc.get_threshold() == thresholds


def test_zero_leaves_the_collector_alone_and_negative_is_refused(
    thresholds: tuple[int, int, int],
) -> None:
    """0 keeps Python's setting (it never turns collection off); a negative value is
    refused before anything changes."""
    with gateway_collector(0):
        assert gc.get_threshold() == thresholds
    with pytest.raises(ValueError, match=r"must be >= 0 \(got -1\)"):
        with gateway_collector(-1):
            pass
    assert gc.get_threshold() == thresholds
    gc.set_threshold(0, 10, 10)  # the process turned collection off
    with gateway_collector():
        assert gc.get_threshold() == (0, 10, 10)


def test_serve_takes_the_threshold_from_its_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """`oswitch serve` defaults to the gateway's threshold, takes --gc-threshold N, and
    refuses a value that is not a whole number >= 0 with a usage error."""
    parser = build_parser()
    assert parser.parse_args(["serve", "--config", "c.toml"]).gc_threshold == 10_000
    args = parser.parse_args(["serve", "--config", "c.toml", "--gc-threshold", "700"])
    assert args.gc_threshold == 700
    for bad, reason in (("-5", "must be >= 0 (got -5)"), ("lots", "not a whole number: 'lots'")):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(["serve", "--config", "c.toml", "--gc-threshold", bad])
        assert exited.value.code == 2
        assert f"argument --gc-threshold: {reason}" in capsys.readouterr().err
