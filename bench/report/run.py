"""What one ``python -m bench`` invocation produced, and whether it passed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from bench.harness import Check, ScenarioResult
from bench.overhead_result import OverheadResult
from bench.report.targets import floor_gates, overhead_targets
from bench.soak import SoakResult


@attrs.frozen(kw_only=True)
class RunReport:
    """Everything one ``python -m bench`` invocation produced."""

    started: str
    argv: tuple[str, ...]
    environment: Mapping[str, Any]
    scenarios: tuple[ScenarioResult, ...]
    overhead: OverheadResult | None
    soak: SoakResult | None

    @property
    def target_checks(self) -> tuple[Check, ...]:
        return () if self.overhead is None else tuple(overhead_targets(self.overhead))

    @property
    def floor_checks(self) -> tuple[Check, ...]:
        """The floor targets, against aiohttp and the engine (shown, not counted in
        :attr:`passed`: the goal the speed work is measured against)."""
        return () if self.overhead is None else tuple(floor_gates(self.overhead))

    @property
    def targets_count(self) -> bool:
        """Overhead targets decide the exit code only for a full ``--overhead`` run:
        a quick run is too short to judge a 10% margin."""
        return self.overhead is not None and self.overhead.settings.judge_targets

    @property
    def passed(self) -> bool:
        ok = all(result.passed for result in self.scenarios)
        if self.soak is not None:
            ok = ok and self.soak.passed
        if self.targets_count:
            ok = ok and all(check.passed for check in self.target_checks)
        return ok
