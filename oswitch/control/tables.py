"""The tables, timelines and event lines ``oswitch ctl`` prints: pure formatting of
the control protocol's JSON replies (target views, traces, events) into text. No I/O (the
clock only, for an event's time received); nothing here raises."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def _seconds(value: object) -> str:
    return f"{value:.3f}s" if isinstance(value, int | float) else "-"


def _count(value: object) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else "-"


def _known(value: object) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else "?"


def _last_error(view: Mapping[str, Any]) -> str:
    error, ago = view.get("last_error"), view.get("last_error_ago_s")
    if not error:
        return "-"
    return f"{error} {ago:.0f}s ago" if isinstance(ago, int | float) else str(error)


def format_headroom(view: Mapping[str, Any]) -> str:
    """A target's headroom as its provider reports it (``tok 900/10000 req 5/100``,
    remaining over limit), else what is left of its configured token budget."""
    limits = view.get("provider_limits")
    parts = []
    if isinstance(limits, Mapping):
        for dimension, short in (
            ("tokens", "tok"),
            ("input_tokens", "in"),
            ("output_tokens", "out"),
            ("requests", "req"),
        ):
            window = limits.get(dimension)
            if isinstance(window, Mapping):
                parts.append(
                    f"{short} {_known(window.get('remaining'))}/{_known(window.get('limit'))}"
                )
    available = view.get("token_budget_available")
    if not parts and isinstance(available, int | float):
        parts.append(f"budget {max(0, int(available))}")
    return " ".join(parts) or "-"


def _shows_tokens(views: Sequence[Mapping[str, Any]]) -> bool:
    return any(
        view.get("provider_limits") or view.get("token_budget_available") is not None
        for view in views
    )


def format_targets(views: Sequence[Mapping[str, Any]], *, tokens: bool | None = None) -> list[str]:
    """The ``list-targets`` table: one row per target, with its attempts, successes,
    latency (moving average) and latest error class beside its state. With ``tokens``
    (by default: when some target has a token budget or reported limits) it adds
    tokens per minute and headroom, and cost when some target has a price. Raises
    nothing."""
    if tokens is None:
        tokens = _shows_tokens(views)
    priced = tokens and any(view.get("cost") is not None for view in views)
    rows = []
    for view in views:
        cooldown = view.get("cooldown_remaining_s")
        health = view.get("health")
        latency = view.get("latency_ms")
        rows.append(
            [
                str(view.get("target_id")),
                str(view.get("state")),
                str(view.get("condition")),
                str(view.get("breaker_state")),
                f"{health:.2f}" if isinstance(health, int | float) else "-",
                f"{view.get('in_flight')}/{view.get('concurrency_limit')}",
                f"{cooldown:.1f}s" if isinstance(cooldown, int | float) else "-",
                _count(view.get("attempts")),
                _count(view.get("successes")),
                f"{latency:.0f}ms" if isinstance(latency, int | float) else "-",
                _last_error(view),
            ]
        )
        if tokens:
            rows[-1] += [_count(view.get("tokens_per_minute")), format_headroom(view)]
        if priced:
            cost = view.get("cost")
            rows[-1].append(f"{cost:.4f}" if isinstance(cost, int | float) else "-")
    header = [
        "TARGET",
        "STATE",
        "CONDITION",
        "BREAKER",
        "HEALTH",
        "IN-FLIGHT",
        "COOLDOWN",
        "ATTEMPTS",
        "OK",
        "LATENCY",
        "LAST-ERROR",
    ]
    if tokens:
        header += ["TOKENS/MIN", "HEADROOM"]
    if priced:
        header.append("COST")
    if any(isinstance(view.get("fleet"), Mapping) for view in views):
        header.append("FLEET")
        for row, view in zip(rows, views, strict=True):
            row.append(_fleet_cell(view.get("fleet")))
    return _table(header, rows)


def _deadline_cell(deadline: object) -> str:
    if not isinstance(deadline, Mapping):
        return "-"
    seconds, source = deadline.get("seconds"), deadline.get("source")
    text = f"{seconds:.3f}s" if isinstance(seconds, int | float) else "-"
    return f"{text} {source}" if source else text


def format_deadlines(views: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ``list-targets --deadlines`` table: one row per target and model it has
    served, each deadline with its source (learned, floor, cap, cold_start,
    override) and the observations it rests on. Raises nothing."""
    rows = []
    for view in views:
        deadlines = view.get("deadlines")
        for entry in deadlines if isinstance(deadlines, list) else ():
            if not isinstance(entry, Mapping):
                continue
            first = entry.get("first_token")
            seen = first.get("observations") if isinstance(first, Mapping) else None
            rows.append(
                [
                    str(view.get("target_id")),
                    str(entry.get("model")),
                    _deadline_cell(first),
                    _deadline_cell(entry.get("chunk_gap")),
                    _deadline_cell(entry.get("response_headers")),
                    str(seen) if isinstance(seen, int) else "-",
                ]
            )
    header = ["TARGET", "MODEL", "FIRST-TOKEN", "CHUNK-GAP", "RESPONSE", "SEEN"]
    return _table(header, rows)


def _fleet_cell(fleet: object) -> str:
    """A target's fleet-wide state: the shared breaker, an operator's state or a block,
    and which replica made the last change (``store down`` while it is unreachable)."""
    if not isinstance(fleet, Mapping):
        return "-"
    parts = [str(fleet.get("breaker") or "closed")]
    parts += [str(fleet[key]) for key in ("op", "blocked") if fleet.get(key)]
    if fleet.get("set_by"):
        parts.append(f"{fleet.get('change')} by {fleet.get('set_by')}")
    if fleet.get("store_degraded"):
        parts.append("store down")
    return ", ".join(parts)


def format_trace(trace: Mapping[str, Any]) -> list[str]:
    """A request trace as a timeline: one line per attempt, offset from the
    request's start. Raises nothing."""
    start = trace.get("started_at")
    start = start if isinstance(start, int | float) else 0.0
    served = trace.get("served_by")
    summary = [
        f"request {trace.get('request_id')}",
        f"model {trace.get('model')}",
        f"outcome {trace.get('outcome')}",
    ]
    if served:
        summary.append(f"served by {served} ({trace.get('served_model')})")
    if trace.get("error_class"):
        summary.append(f"class {trace.get('error_class')}")
    summary.append(f"total {_seconds(trace.get('duration_s'))}")
    summary.append(f"queued {_seconds(trace.get('queue_wait_s'))}")
    rows = []
    for attempt in trace.get("attempts", ()):
        began = attempt.get("started_at")
        offset = f"+{began - start:.3f}s" if isinstance(began, int | float) else "-"
        details = []
        if attempt.get("status") is not None:
            details.append(f"status {attempt['status']}")
        if attempt.get("retry_after") is not None:
            details.append(f"retry after {attempt['retry_after']:g}s")
        if attempt.get("hedge"):
            details.append("hedge")
        if attempt.get("note"):
            details.append(str(attempt["note"]))
        if attempt.get("deadline"):
            details.append(f"deadline {attempt['deadline']}")
        rows.append(
            [
                offset,
                str(attempt.get("target_id")),
                str(attempt.get("model")),
                _seconds(attempt.get("duration_s")),
                str(attempt.get("error_class") or "ok"),
                str(attempt.get("decision")),
                "; ".join(details),
            ]
        )
    header = ["AT", "TARGET", "MODEL", "TOOK", "CLASS", "DECISION", "DETAIL"]
    lines = ["  ".join(summary)]
    if rows:
        lines += ["  " + line for line in _table(header, rows)]
    else:
        lines.append("  (no attempts)")
    return lines


def _field(value: object) -> str:
    # Quote text with spaces so that each key=value pair stays one token.
    text = str(value)
    return (
        json.dumps(text)
        if not isinstance(value, int | float) and re.search(r'[\s"=]', text)
        else text
    )


def format_event(event: Mapping[str, Any], *, received: float | None = None) -> str:
    """One event as a line: local time received, topic, name, then its fields as
    ``key=value``. Raises nothing."""
    stamp = time.localtime(received if received is not None else time.time())
    millis = int(((received or time.time()) % 1) * 1000)
    fields = event.get("fields")
    pairs = (
        " ".join(
            f"{key}={_field(value)}" for key, value in fields.items() if value not in (None, "")
        )
        if isinstance(fields, Mapping)
        else ""
    )
    head = f"{time.strftime('%H:%M:%S', stamp)}.{millis:03d} {event.get('topic') or '-'}"
    return f"{head} {event.get('event')} {pairs}".rstrip()


def view_line(view: Mapping[str, Any]) -> str:
    """One target's state after a command (pause, resume, drain, ...) as a line."""
    return (
        f"{view.get('target_id')}: state {view.get('state')}, "
        f"condition {view.get('condition')}, in flight {view.get('in_flight')}"
    )
