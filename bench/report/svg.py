"""Inline SVG charts of a scenario: traffic share, conditions and latency over time."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence

from bench.harness import ScenarioResult
from bench.record import Figures

WIDTH = 760
LEFT = 90
GRID_COLOUR = "#e6e6e6"

TARGET_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948")
CONDITION_COLOURS = {
    "Healthy": "#59a14f",
    "HalfOpen": "#f1ce63",
    "CoolingDown": "#8cd17d",
    "CircuitOpen": "#e15759",
    "QuotaExhausted": "#b07aa1",
    "ReauthRequired": "#9d7660",
    "PolicyBlocked": "#333333",
    "Paused": "#bab0ac",
    "Draining": "#bab0ac",
    "Disabled": "#79706e",
}


def escaped(text: object) -> str:
    """``text`` as HTML/SVG character data."""
    return html.escape(str(text))


def _colour(target_ids: Sequence[str], target_id: str) -> str:
    return TARGET_COLOURS[target_ids.index(target_id) % len(TARGET_COLOURS)]


def open_svg(height: float, label: str) -> str:
    """The opening tag of a chart ``WIDTH`` wide; ``label`` is already escaped."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'role="img" aria-label="{label}">'
    )


def legend_row(
    entries: Sequence[tuple[str, str]], x: float, y: float, gap: int
) -> tuple[str, float]:
    """Swatches with their labels from ``x`` on one line at ``y``, each ``gap`` plus
    its label's width apart; returns the markup and where the line ends."""
    parts = []
    for label, colour in entries:
        parts.append(
            f'<rect x="{x}" y="{y}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{x + 14}" y="{y + 9}" font-size="11">{escaped(label)}</text>'
        )
        x += gap + 7 * len(label)
    return "".join(parts), x


def _timeline_end(f: Figures) -> float:
    return max(f.clock_s, len(f.buckets) * f.bucket_s) or 1.0


def _axis(
    x0: float, x1: float, y: float, end_s: float, *, ticks: int = 6, grid_top: float | None = None
) -> str:
    """A time axis from 0 to ``end_s`` along ``y``, with a labelled tick at round
    seconds; with ``grid_top``, a light vertical gridline up to it at each tick."""
    parts = [f'<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="#999"/>']
    step = _nice_step(end_s / ticks)
    index = 0
    while (t := round(index * step, 9)) <= end_s + 1e-9:
        x = x0 + (x1 - x0) * (t / end_s if end_s else 0)
        if grid_top is not None and index:
            parts.append(
                f'<line class="grid" x1="{x:.1f}" y1="{grid_top}" x2="{x:.1f}" y2="{y}" '
                f'stroke="{GRID_COLOUR}"/>'
            )
        parts.append(
            f'<line class="tick" x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 4}" stroke="#999"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{y + 15}" font-size="10" text-anchor="middle">{t:g}s</text>'
        )
        index += 1
    return "".join(parts)


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * magnitude:
            return float(factor * magnitude)
    return float(10 * magnitude)


def nice_ticks(top: float, *, count: int = 4) -> list[float]:
    """Round values from 0 to at least ``top``, about ``count`` steps apart: the
    ticks of a value axis, whose last one is the axis's end."""
    step = _nice_step(top / count) if top > 0 else 1.0
    ticks = [0.0]
    while ticks[-1] < top - 1e-9 * step:
        ticks.append(round(len(ticks) * step, 9))
    if len(ticks) == 1:
        ticks.append(step)
    return ticks


def value_axis(
    ticks: Sequence[float],
    *,
    x0: float,
    x1: float,
    y_of: Callable[[float], float],
    unit: str = "",
) -> str:
    """Ticks with labels left of ``x0`` and light horizontal gridlines across to ``x1``
    at each of ``ticks`` (values placed by ``y_of``); ``unit`` follows the top label."""
    parts = []
    for index, value in enumerate(ticks):
        y = y_of(value)
        if index:
            parts.append(
                f'<line class="grid" x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" '
                f'stroke="{GRID_COLOUR}"/>'
            )
        parts.append(
            f'<line class="tick" x1="{x0 - 4}" y1="{y:.1f}" x2="{x0}" y2="{y:.1f}" stroke="#999"/>'
        )
        shown = f"{value / 1000:g}k" if value >= 10_000 else f"{value:g}"
        label = shown + (f" {unit}" if unit and index == len(ticks) - 1 else "")
        parts.append(
            f'<text class="tick-label" x="{x0 - 6}" y="{y + 3.5:.1f}" font-size="10" '
            f'text-anchor="end">{escaped(label)}</text>'
        )
    parts.append(
        f'<line x1="{x0}" y1="{y_of(ticks[-1]):.1f}" x2="{x0}" y2="{y_of(0):.1f}" stroke="#999"/>'
    )
    return "".join(parts)


def traffic_svg(result: ScenarioResult) -> str:
    """Stacked bars: each bucket's attempts split by target; failed requests in red below
    (a "failed" lane only when some request failed)."""
    f = result.figures
    ids = list(result.target_ids)
    end_s = _timeline_end(f)
    plot_w, plot_h, top = WIDTH - LEFT - 20, 150, 10

    def x_of(t: float) -> float:
        return LEFT + plot_w * t / end_s

    parts = [open_svg(top + plot_h + 60, "traffic share over time")]
    parts.append(
        f'<text x="4" y="{top + 10}" font-size="11">attempts</text>'
        f'<text x="4" y="{top + 24}" font-size="11">share</text>'
    )
    for bucket in f.buckets:
        total = sum(bucket.attempts.values())
        x = x_of(bucket.start_s)
        w = max(1.0, x_of(bucket.start_s + f.bucket_s) - x - 1)
        y = float(top + plot_h)
        for target in ids:
            n = bucket.attempts.get(target, 0)
            if not n or not total:
                continue
            h = plot_h * n / total
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
                f'fill="{_colour(ids, target)}"><title>{escaped(target)}: {n}/{total} attempts '
                f"at {bucket.start_s:g}s</title></rect>"
            )
        if bucket.failed:
            parts.append(
                f'<rect x="{x:.1f}" y="{top + plot_h + 3}" width="{w:.1f}" height="6" '
                f'fill="#d62728"><title>{bucket.failed}/{bucket.requests} requests failed '
                f"(sent at {bucket.start_s:g}s)</title></rect>"
            )
    if any(bucket.failed for bucket in f.buckets):
        parts.append(
            f'<text x="4" y="{top + plot_h + 10}" font-size="10" fill="#d62728">failed</text>'
        )
    parts.append(_axis(LEFT, LEFT + plot_w, top + plot_h + 12, end_s))
    legend, _ = legend_row([(t, _colour(ids, t)) for t in ids], float(LEFT), top + plot_h + 36, 20)
    parts.append(legend)
    parts.append("</svg>")
    return "".join(parts)


def conditions_svg(result: ScenarioResult) -> str:
    """One band per target, coloured by its condition (or non-Active state) over time."""
    f = result.figures
    ids = list(result.target_ids)
    end_s = max(f.clock_s, 1e-9)
    plot_w, row_h = WIDTH - LEFT - 20, 18
    height = 10 + row_h * len(ids) + 50

    def x_of(t: float) -> float:
        return LEFT + plot_w * min(t, end_s) / end_s

    parts = [open_svg(height, "target condition over time")]
    samples = list(f.conditions) or [(0.0, {t: "Healthy" for t in ids})]
    for row, target in enumerate(ids):
        y = 10 + row * row_h
        parts.append(f'<text x="4" y="{y + 12}" font-size="11">{escaped(target)}</text>')
        for index, (at, states) in enumerate(samples):
            until = samples[index + 1][0] if index + 1 < len(samples) else end_s
            state = states.get(target, "Healthy")
            x0, x1 = x_of(at), x_of(until)
            if x1 <= x0:
                continue
            parts.append(
                f'<rect x="{x0:.1f}" y="{y}" width="{x1 - x0:.1f}" height="{row_h - 4}" '
                f'fill="{CONDITION_COLOURS.get(state, "#cccccc")}"><title>{escaped(target)}: '
                f"{escaped(state)} {at:g}-{until:g}s</title></rect>"
            )
        for t in f.transitions:
            if t.target_id == target and t.kind == "breaker":
                x = x_of(t.at)
                parts.append(
                    f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + row_h - 4}" '
                    f'stroke="#000" stroke-width="1.5"><title>breaker {escaped(t.state)} at '
                    f"{t.at:.2f}s {escaped(t.note)}</title></line>"
                )
    axis_y = 10 + row_h * len(ids)
    parts.append(_axis(LEFT, LEFT + plot_w, axis_y, end_s))
    seen = sorted({s for _, states in samples for s in states.values()} | {"Healthy"})
    entries = [(state, CONDITION_COLOURS.get(state, "#cccccc")) for state in seen]
    legend, legend_x = legend_row(entries, float(LEFT), axis_y + 24, 24)
    parts.append(legend)
    parts.append(
        f'<text x="{legend_x}" y="{axis_y + 33}" font-size="11">| black tick: breaker '
        "transition</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def latency_svg(f: Figures, *, label: str = "latency") -> str:
    """p50 and p99 latency of each bucket's answered requests (by send time), on a
    millisecond axis with round ticks and gridlines both ways."""
    points = [(b.start_s + f.bucket_s / 2, b.latency_p50_ms, b.latency_p99_ms) for b in f.buckets]
    values = [v for _, a, b in points for v in (a, b) if v is not None]
    ticks = nice_ticks(max(values) if values else 1.0)
    top_ms = ticks[-1]
    end_s = _timeline_end(f)
    plot_w, plot_h, top = WIDTH - LEFT - 20, 120, 10

    def x_of(t: float) -> float:
        return LEFT + plot_w * t / end_s

    def y_of(ms: float) -> float:
        return top + plot_h - plot_h * ms / top_ms

    parts = [open_svg(top + plot_h + 40, f"{escaped(label)} over time")]
    parts.append(
        f'<text x="4" y="{top + plot_h / 2}" font-size="11">{escaped(label)}</text>'
        f'<text x="4" y="{top + plot_h / 2 + 13}" font-size="10" fill="#666">ms</text>'
    )
    parts.append(value_axis(ticks, x0=LEFT, x1=LEFT + plot_w, y_of=y_of, unit="ms"))
    parts.append(_axis(LEFT, LEFT + plot_w, top + plot_h, end_s, grid_top=top))
    for index, colour, name in ((1, "#4e79a7", "p50"), (2, "#e15759", "p99")):
        coords = []
        for point in points:
            value = point[index]
            if value is not None:
                coords.append(f"{x_of(point[0]):.1f},{y_of(value):.1f}")
        if coords:
            parts.append(
                f'<polyline points="{" ".join(coords)}" fill="none" stroke="{colour}" '
                f'stroke-width="1.5"><title>{name}</title></polyline>'
            )
    parts.append(
        f'<text x="{LEFT}" y="{top + plot_h + 34}" font-size="11" fill="#4e79a7">p50</text>'
        f'<text x="{LEFT + 40}" y="{top + plot_h + 34}" font-size="11" fill="#e15759">p99</text>'
    )
    parts.append("</svg>")
    return "".join(parts)
