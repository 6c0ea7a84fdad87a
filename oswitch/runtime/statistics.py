"""The switcher's counters (``Switcher.statistics()``)."""

from __future__ import annotations

import attrs

from oswitch.runtime.admission import AdmissionStatistics


@attrs.frozen(kw_only=True)
class SwitcherStatistics:
    """Counters of a running switcher (for metrics and listings)."""

    targets: int
    requests: int
    succeeded: int
    failed: int
    cancelled: int
    traces_kept: int
    trace_bytes: int
    admission: AdmissionStatistics
