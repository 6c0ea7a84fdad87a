"""Inline SVG charts of the overhead benchmark: CPU and latency per cell, routing cost.

The cells are drawn as small multiples, one panel per (streamed or not, concurrency),
each with its own value axis: CPU per request spans two orders of magnitude between
concurrency 1 and 256, and one shared axis would flatten the cells that matter most.
Every panel marks the bare httpx cell's value with a dashed baseline across it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bench.overhead_result import ALL_VARIANTS, Cell, OverheadResult
from bench.report.svg import WIDTH, escaped, legend_row, nice_ticks, open_svg, value_axis
from bench.report.targets import ROUTING_RATIO_TARGET

BASELINE = "httpx"
VARIANT_COLOURS = {
    "httpx": "#9d9d9d",
    "embedded": "#4e79a7",
    "embedded-httpx": "#a0cbe8",
    "sidecar": "#f28e2b",
    "aiohttp": "#59a14f",
    "sidecar-own": "#e15759",
}
BASELINE_COLOUR = "#333333"
ROW_LABEL_W = 64
PANEL_AXIS_W = 44
PANEL_H = 150
PANEL_PLOT_H = 100
# A white outline keeps a label legible where it crosses a line.
HALO = 'stroke="#fff" stroke-width="3" paint-order="stroke"'


def short_number(value: float) -> str:
    """``value`` in at most four characters or so: 0.83, 8.13, 176, 1.4k, 71k."""
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def mode_name(streamed: bool) -> str:
    """How the report names a cell's mode: ``stream`` or ``plain``."""
    return "stream" if streamed else "plain"


def _variants(result: OverheadResult) -> list[str]:
    present = {cell.variant for cell in result.cells}
    known = [v for v in ALL_VARIANTS if v in present]
    return known + sorted(present - set(known))


def _grid(result: OverheadResult) -> tuple[list[bool], list[int]]:
    modes = sorted({cell.streamed for cell in result.cells})
    concurrencies = sorted({cell.concurrency for cell in result.cells})
    return modes, concurrencies


def _panels_svg(
    result: OverheadResult,
    *,
    label: str,
    unit: str,
    value: Callable[[Cell], float | None],
    whisker: Callable[[Cell], float | None] | None,
    bar_text: Callable[[Cell], str],
    title: Callable[[Cell], str],
    baseline_name: str,
) -> str:
    """One panel per mode and concurrency: a bar per variant (``value``), an optional
    whisker above it, the baseline cell's value as a dashed line across the panel."""
    modes, concurrencies = _grid(result)
    variants = _variants(result)
    if not modes or not concurrencies:
        return ""
    panel_w = (WIDTH - ROW_LABEL_W - 10) / len(concurrencies)
    legend_y = 24 + PANEL_H * len(modes) + 8
    parts = [open_svg(legend_y + 24, escaped(label))]
    for row, streamed in enumerate(modes):
        top = 24 + row * PANEL_H
        parts.append(
            f'<text x="4" y="{top + PANEL_PLOT_H / 2 + 18}" font-size="11">'
            f"{mode_name(streamed)}</text>"
        )
        for col, concurrency in enumerate(concurrencies):
            cells = [result.cell(v, streamed, concurrency) for v in variants]
            present = [c for c in cells if c is not None]
            if not present:
                continue
            x0 = ROW_LABEL_W + col * panel_w + PANEL_AXIS_W
            x1 = ROW_LABEL_W + (col + 1) * panel_w - 8
            plot_top = top + 22
            plot_bottom = plot_top + PANEL_PLOT_H
            highest = [
                v
                for c in present
                for v in (value(c), whisker(c) if whisker else None)
                if v is not None
            ]
            ticks = nice_ticks(max(highest) if highest else 1.0, count=3)
            scale_top = ticks[-1]

            def y_of(v: float, bottom: float = plot_bottom, span: float = scale_top) -> float:
                return bottom - PANEL_PLOT_H * v / span

            parts.append(
                f'<text x="{(x0 + x1) / 2:.1f}" y="{top + 12}" font-size="11" '
                f'text-anchor="middle">concurrency {concurrency}</text>'
            )
            parts.append(value_axis(ticks, x0=x0, x1=x1, y_of=y_of, unit=unit))
            parts.append(
                f'<line x1="{x0}" y1="{plot_bottom}" x2="{x1}" y2="{plot_bottom}" stroke="#999"/>'
            )
            # The baseline goes first, so that bars and their labels sit on top.
            base = result.cell(BASELINE, streamed, concurrency)
            base_value = None if base is None else value(base)
            if base_value is not None:
                y = y_of(base_value)
                parts.append(
                    f'<line class="baseline" data-mode="{mode_name(streamed)}" '
                    f'data-concurrency="{concurrency}" x1="{x0}" y1="{y:.1f}" x2="{x1}" '
                    f'y2="{y:.1f}" stroke="{BASELINE_COLOUR}" stroke-dasharray="4 3">'
                    f"<title>{escaped(baseline_name)}: {base_value:g} {escaped(unit)}</title>"
                    "</line>"
                )
            slot = (x1 - x0) / len(variants)
            bar_w = min(34.0, slot * 0.7)
            for index, (variant, cell) in enumerate(zip(variants, cells, strict=True)):
                if cell is None:
                    continue
                v = value(cell)
                if v is None:
                    continue
                bx = x0 + slot * index + (slot - bar_w) / 2
                by = y_of(v)
                fill = VARIANT_COLOURS.get(variant, "#777")
                parts.append(
                    f'<rect class="cell" data-variant="{escaped(variant)}" '
                    f'data-mode="{mode_name(streamed)}" data-concurrency="{concurrency}" '
                    f'x="{bx:.1f}" y="{by:.1f}" width="{bar_w:.1f}" '
                    f'height="{plot_bottom - by:.1f}" fill="{fill}">'
                    f"<title>{escaped(title(cell))}</title></rect>"
                )
                text_y = by
                w = whisker(cell) if whisker else None
                if w is not None and w > v:
                    wy = y_of(w)
                    mid = bx + bar_w / 2
                    parts.append(
                        f'<line class="whisker" x1="{mid:.1f}" y1="{by:.1f}" x2="{mid:.1f}" '
                        f'y2="{wy:.1f}" stroke="#555"/><line x1="{mid - 5:.1f}" y1="{wy:.1f}" '
                        f'x2="{mid + 5:.1f}" y2="{wy:.1f}" stroke="#555"/>'
                    )
                    text_y = wy
                parts.append(
                    f'<text x="{bx + bar_w / 2:.1f}" y="{text_y - 3:.1f}" font-size="9" '
                    f'text-anchor="middle" {HALO}>{escaped(bar_text(cell))}</text>'
                )
    entries = [(v, VARIANT_COLOURS.get(v, "#777")) for v in variants]
    legend, end_x = legend_row(entries, float(ROW_LABEL_W + PANEL_AXIS_W), legend_y, 30)
    parts.append(legend)
    parts.append(
        f'<line x1="{end_x}" y1="{legend_y + 5}" x2="{end_x + 22}" y2="{legend_y + 5}" '
        f'stroke="{BASELINE_COLOUR}" stroke-dasharray="4 3"/>'
        f'<text x="{end_x + 26}" y="{legend_y + 9}" font-size="11">{escaped(baseline_name)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def cpu_svg(result: OverheadResult) -> str:
    """CPU per request of every measured cell, one panel per mode and concurrency,
    each bar labelled with its ratio to bare httpx (the dashed baseline)."""

    def ratio_text(cell: Cell) -> str:
        ratio = result.ratio(cell.variant, cell.streamed, cell.concurrency)
        return "" if ratio is None else f"{ratio:.2f}×"

    def title(cell: Cell) -> str:
        ratio = ratio_text(cell)
        return (
            f"{cell.variant}, {mode_name(cell.streamed)}, concurrency {cell.concurrency}: "
            f"{cell.cpu_ms_per_request:.3f} ms CPU per request"
            + (f" ({ratio} bare httpx)" if ratio else "")
        )

    return _panels_svg(
        result,
        label="CPU per request by mode and concurrency",
        unit="ms",
        value=lambda cell: cell.cpu_ms_per_request,
        whisker=None,
        bar_text=ratio_text,
        title=title,
        baseline_name="bare httpx (baseline)",
    )


def latency_cells_svg(result: OverheadResult) -> str:
    """Latency of every measured cell: a bar to its p50, a whisker to its p99; the
    dashed line is bare httpx's p50."""

    def title(cell: Cell) -> str:
        return (
            f"{cell.variant}, {mode_name(cell.streamed)}, concurrency {cell.concurrency}: "
            f"latency p50 {cell.latency.p50} ms, p99 {cell.latency.p99} ms"
        )

    return _panels_svg(
        result,
        label="latency by mode and concurrency",
        unit="ms",
        value=lambda cell: cell.latency.p50,
        whisker=lambda cell: cell.latency.p99,
        bar_text=lambda cell: "" if cell.latency.p99 is None else short_number(cell.latency.p99),
        title=title,
        baseline_name="bare httpx p50 (baseline)",
    )


def routing_svg(result: OverheadResult) -> str:
    """CPU per request over a null transport by number of targets, with the limit
    (``ROUTING_RATIO_TARGET`` times the 3-target figure) as a dashed red line."""
    cells = list(result.routing)
    if not cells:
        return ""
    left, row_h, top = 150, 22, 10
    plot_w = WIDTH - left - 120
    three = next((c for c in cells if c.targets == 3), None)
    limit = None if three is None else ROUTING_RATIO_TARGET * three.cpu_ms_per_request
    highest = max([c.cpu_ms_per_request for c in cells] + ([limit] if limit else []))
    ticks = nice_ticks(highest, count=5)
    span = ticks[-1]

    def x_of(v: float) -> float:
        return left + plot_w * v / span

    bottom = top + row_h * len(cells)
    parts = [open_svg(bottom + 50, "routing cost by number of targets")]
    for t in ticks:
        x = x_of(t)
        parts.append(
            f'<line class="grid" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" '
            f'stroke="#e6e6e6"/><line class="tick" x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" '
            f'y2="{bottom + 4}" stroke="#999"/><text x="{x:.1f}" y="{bottom + 15}" '
            f'font-size="10" text-anchor="middle">{t:g}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{bottom + 29}" font-size="10" '
        'text-anchor="middle">CPU ms per request (concurrency 1, null transport)</text>'
    )
    for row, cell in enumerate(cells):
        y = top + row * row_h
        name = "bare httpx" if cell.targets == 0 else f"oswitch, {cell.targets:,} targets"
        colour = VARIANT_COLOURS[BASELINE] if cell.targets == 0 else VARIANT_COLOURS["embedded"]
        growth = (
            f" ({cell.cpu_ms_per_request / three.cpu_ms_per_request:.2f}× 3 targets)"
            if three is not None and three.cpu_ms_per_request > 0 and cell.targets
            else ""
        )
        parts.append(
            f'<text x="{left - 6}" y="{y + 14}" font-size="11" text-anchor="end">'
            f"{escaped(name)}</text>"
            f'<rect class="routing" data-targets="{cell.targets}" x="{left}" y="{y + 3}" '
            f'width="{x_of(cell.cpu_ms_per_request) - left:.1f}" height="{row_h - 6}" '
            f'fill="{colour}"><title>{escaped(name)}: {cell.cpu_ms_per_request:.3f} ms per '
            f"request{escaped(growth)}</title></rect>"
            f'<text x="{x_of(cell.cpu_ms_per_request) + 4:.1f}" y="{y + 14}" font-size="10">'
            f"{cell.cpu_ms_per_request:.3f}{escaped(growth)}</text>"
        )
    parts.append(
        f'<line x1="{left}" y1="{bottom}" x2="{left + plot_w}" y2="{bottom}" stroke="#999"/>'
    )
    if limit is not None:
        x = x_of(limit)
        parts.append(
            f'<line class="limit" x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{bottom}" '
            f'stroke="#d62728" stroke-dasharray="4 3"><title>limit: {ROUTING_RATIO_TARGET:g}× '
            f"the 3-target cost ({limit:.3f} ms)</title></line>"
            f'<text x="{left}" y="{bottom + 44}" font-size="10" fill="#d62728">dashed red: '
            f"the limit, {ROUTING_RATIO_TARGET:g}× the cost at 3 targets</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def overhead_charts(result: OverheadResult) -> Sequence[tuple[str, str]]:
    """The overhead section's charts as (heading, svg) pairs, in page order."""
    return [
        ("CPU per request (bars: each variant; dashed: bare httpx)", cpu_svg(result)),
        ("Latency (bars: p50; whiskers and labels: p99 ms)", latency_cells_svg(result)),
        ("Routing cost by number of targets", routing_svg(result)),
    ]
