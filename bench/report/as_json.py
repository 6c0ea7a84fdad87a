"""The whole run as plain JSON data."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from bench.report.run import RunReport


def _plain(value: Any) -> Any:
    if attrs.has(type(value)):
        return {k: _plain(v) for k, v in attrs.asdict(value, recurse=False).items()}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(report: RunReport) -> dict[str, Any]:
    """The whole run as plain JSON data (every figure, check and transition)."""
    data: dict[str, Any] = {
        "started": report.started,
        "argv": list(report.argv),
        "environment": _plain(report.environment),
        "passed": report.passed,
        "scenarios": [{**_plain(r), "passed": r.passed} for r in report.scenarios],
        "overhead": None,
        "soak": None,
    }
    if report.overhead is not None:
        data["overhead"] = {
            **_plain(report.overhead),
            "ratios": {
                f"{c.variant}/{'stream' if c.streamed else 'plain'}/{c.concurrency}": (
                    report.overhead.ratio(c.variant, c.streamed, c.concurrency)
                )
                for c in report.overhead.cells
            },
            "ratios_aiohttp": {
                f"{c.variant}/{'stream' if c.streamed else 'plain'}/{c.concurrency}": (
                    report.overhead.ratio(c.variant, c.streamed, c.concurrency, base="aiohttp")
                )
                for c in report.overhead.cells
            },
            "sidecar_own_cpu_ms": {
                f"{'stream' if streamed else 'plain'}/{concurrency}": (
                    report.overhead.sidecar_own_ms(streamed, concurrency)
                )
                for streamed in (False, True)
                for concurrency in report.overhead.settings.concurrencies
            },
            "sidecar_own_measured": report.overhead.sidecar_own_measured,
            "floor_gates": _plain(list(report.floor_checks)),
            "targets": _plain(list(report.target_checks)),
            "targets_count": report.targets_count,
        }
    if report.soak is not None:
        data["soak"] = {**_plain(report.soak), "passed": report.soak.passed}
    return data
