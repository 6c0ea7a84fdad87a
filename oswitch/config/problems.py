"""Config problems: where one is (a path into the document), how it reads, and the
problems one parse collects.

A leaf: the structure hooks, the opencode.json reader and the entry points all
import it, and it imports none of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

from oswitch.core.kinds import kind_of
from oswitch.errors import ConfigError

PathSeg: TypeAlias = str | int
ConfigPath: TypeAlias = tuple[PathSeg, ...]  # keys and list indexes from the document's root

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def render_path(path: ConfigPath) -> str:
    """``path`` as the JSONPath-like text errors show: ``$.targets[0]["odd key"]``."""
    out = ["$"]
    for seg in path:
        if isinstance(seg, int):
            out.append(f"[{seg}]")
        elif _PLAIN_KEY.fullmatch(seg):
            out.append(f".{seg}")
        else:
            out.append(f"[{json.dumps(seg)}]")
    return "".join(out)


def show(value: object) -> str:
    """Render a scalar as the user wrote it (JSON spelling); containers by kind.

    Never call this on a value that may be a secret."""
    if value is None or isinstance(value, bool | int | float | str):
        text = json.dumps(value) if not isinstance(value, float) else repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return kind_of(value)


class Invalid(ValueError):
    """One problem: ``reason`` at ``at``. Raised from a structure hook, ``at`` is
    relative to where cattrs caught it, unless ``absolute`` (problems found in an
    opencode.json provider entry, which lies outside oswitch's own section)."""

    def __init__(self, reason: str, at: ConfigPath = (), *, absolute: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.at = at
        self.absolute = absolute


class PreparedTable(dict[str, Any]):
    """A raw table as prepared for structuring (a target filled in from its
    opencode.json provider entry), carrying the problems found preparing it.

    Its structure hook reports them after the table's own problems, so every problem
    keeps its place in document order; whatever the hook never reached is taken by
    the caller afterwards. Each problem is taken once.
    """

    def __init__(self, table: Mapping[str, Any], problems: Iterable[Invalid] = ()) -> None:
        super().__init__(table)
        self._problems = list(problems)

    def take_problems(self) -> list[Invalid]:
        """The problems not yet reported (none on a second call)."""
        taken, self._problems = self._problems, []
        return taken


class Problems:
    """The collector of one parse: ``(path, reason)`` pairs in the order reported."""

    def __init__(self) -> None:
        self._found: list[tuple[ConfigPath, str]] = []

    def add(self, path: ConfigPath, reason: str) -> None:
        self._found.append((path, reason))

    def __bool__(self) -> bool:
        return bool(self._found)

    def error(self, *, source: str | None = None) -> ConfigError:
        """A ConfigError listing every problem, its path rendered; ``source`` (a file
        name) is added to it as a note."""
        error = ConfigError([(render_path(path), reason) for path, reason in self._found])
        if source is not None:
            error.add_note(f"in {source}")
        return error
