"""A one-line live progress display on stderr (no dependency needed).

On a terminal the line is redrawn in place at most ten times a second; when
stderr is not a terminal (CI logs, tests) it prints one plain line per stage.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Draws ``label [#####.....] done/total note`` on ``stream``."""

    def __init__(self, stream: TextIO | None = None, *, interval_s: float = 0.1) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._live = self._stream.isatty()
        self._interval_s = interval_s
        self._last_draw = 0.0
        self._label: str | None = None
        self._width = 0

    def update(self, label: str, *, done: int, total: int, note: str = "") -> None:
        """Report ``done`` of ``total`` for ``label`` (drawn only when due)."""
        if label != self._label:
            self.finish()
            self._label = label
            if not self._live:
                self._stream.write(f"[bench] {label} ...\n")
                self._stream.flush()
        if not self._live:
            return
        now = time.perf_counter()
        if now - self._last_draw < self._interval_s and done < total:
            return
        self._last_draw = now
        fraction = min(1.0, done / total) if total else 1.0
        bar = "#" * round(fraction * 24)
        line = f"{label:<18} [{bar:<24}] {done:>7}/{total:<7} {note}"
        self._stream.write("\r" + line.ljust(self._width))
        self._width = len(line)
        self._stream.flush()

    def say(self, message: str) -> None:
        """Print a whole line (ending any live line first)."""
        self.finish()
        self._stream.write(message + "\n")
        self._stream.flush()

    def finish(self) -> None:
        """End the live line, if one is drawn."""
        if self._live and self._width:
            self._stream.write("\n")
            self._stream.flush()
        self._width = 0
        self._label = None
