"""Writing a run's JSON file and HTML page."""

from __future__ import annotations

import json
from pathlib import Path

from bench.report.as_json import to_json
from bench.report.page import to_html
from bench.report.run import RunReport


def write_outputs(report: RunReport, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.html`` into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stem}.json"
    html_path = out_dir / f"{stem}.html"
    json_path.write_text(json.dumps(to_json(report), indent=1) + "\n", encoding="utf-8")
    html_path.write_text(to_html(report), encoding="utf-8")
    return json_path, html_path
