"""The token_storm bench: learned headers keep 429s the exception; without learning
the same load finds each key's limit by its 429s."""

from __future__ import annotations

import attrs

from bench.harness import VIRTUAL, run_scenario
from bench.token_storm import METERS, VARIANTS, side_by_side

SHORT = ((700.0, 0.45),)  # a third of the bench's run: ~315 requests


def test_token_storm_learning_beats_no_learning() -> None:
    """With OpenAI-style headers learned every expectation holds and no 429 is
    provoked; the same load with learning off provokes 429s."""
    learning, blind = (attrs.evolve(v, load=SHORT) for v in VARIANTS[:2])
    on = run_scenario(learning, VIRTUAL)
    off = run_scenario(blind, VIRTUAL)
    failed = [f"{c.name}: {c.detail}" for c in on.checks if not c.passed]
    assert failed == []
    assert sum(m.rejected for m in METERS[learning.name].values()) == 0
    assert sum(m.rejected for m in METERS[blind.name].values()) > 0
    assert all(c.passed for c in off.checks)
    table = side_by_side({on.name: on, off.name: off})
    assert table[0].split() == ["variant", "requests", "429s/1000", "failed", "p99", "ms"]
    assert table[1].split()[2] == "0.0"


def test_token_storm_with_anthropic_headers() -> None:
    """Anthropic-style headers (RFC 3339 resets, across the wall clock) are learned as well."""
    scenario = attrs.evolve(VARIANTS[2], load=SHORT)
    result = run_scenario(scenario, VIRTUAL)
    assert [c.name for c in result.checks if not c.passed] == []
