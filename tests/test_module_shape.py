"""The package's shape: no module too long to hold in mind (past ~500 lines a module
holds more than one job: split it). The import graph has its own test,
tests/test_import_graph.py."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "oswitch"
MAX_MODULE_LINES = 500


def test_every_module_is_under_500_lines() -> None:
    """Every module in oswitch/ is under 500 lines, so one person can hold it in mind."""
    lengths = {
        path.relative_to(PACKAGE.parent).as_posix(): len(path.read_text().splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    long = {name: lines for name, lines in lengths.items() if lines >= MAX_MODULE_LINES}
    assert long == {}
