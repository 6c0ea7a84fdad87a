"""The run's outputs: a summary table on stdout, a JSON file and a self-contained HTML page.

The HTML page has no script and loads nothing. It opens with a summary table (a
row per scenario, the overhead benchmark and the soak, with checks passed); each
scenario gets inline SVG charts of traffic share per target over time (stacked bars,
failed requests marked in red beneath when there are any), each target's condition
over time (bands) and latency per bucket (ticks and gridlines); the overhead section
charts CPU per request and latency of every cell against the bare httpx baseline,
and the routing cost by number of targets.

Import everything from here; the modules below are the layout: ``run`` (the
RunReport), ``targets`` (the overhead targets it is judged by), ``text`` (tables),
``summary`` (the summary rows), ``as_json``, ``svg`` (scenario charts and axes),
``overhead_svg`` (overhead charts), ``page`` (the HTML page) and ``files`` (writing
both).
"""

from __future__ import annotations

from bench.report.as_json import to_json
from bench.report.files import write_outputs
from bench.report.page import STYLE, to_html
from bench.report.run import RunReport
from bench.report.svg import (
    CONDITION_COLOURS,
    LEFT,
    TARGET_COLOURS,
    WIDTH,
    conditions_svg,
    latency_svg,
    traffic_svg,
)
from bench.report.targets import (
    CPU_RATIO_TARGET,
    ROUTING_RATIO_TARGET,
    RSS_TARGET_MB,
    overhead_targets,
)
from bench.report.text import (
    overhead_table,
    scenario_table,
    soak_table,
    summary,
    targets_table,
)

__all__ = [
    "CONDITION_COLOURS",
    "CPU_RATIO_TARGET",
    "LEFT",
    "ROUTING_RATIO_TARGET",
    "RSS_TARGET_MB",
    "STYLE",
    "TARGET_COLOURS",
    "WIDTH",
    "RunReport",
    "conditions_svg",
    "latency_svg",
    "overhead_table",
    "overhead_targets",
    "scenario_table",
    "soak_table",
    "summary",
    "targets_table",
    "to_html",
    "to_json",
    "traffic_svg",
    "write_outputs",
]
