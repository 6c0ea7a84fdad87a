"""No import circle inside ``oswitch/``: every import counts (module level, under
``TYPE_CHECKING`` and inside functions), read from the source with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "oswitch"


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package is its ``__init__``)."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The oswitch modules ``name`` imports. ``from pkg import x`` is ``pkg.x`` when that
    is a module, else ``pkg`` itself; importing a package counts as its ``__init__``."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in modules else base)
    return {t for t in targets if t in modules and t != name}


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (its modules in order, the first repeated at the end), or None."""
    ON_PATH, DONE = 1, 2
    mark: dict[str, int] = {}
    for start in sorted(graph):
        if start in mark:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        mark[start] = ON_PATH
        while stack:
            following = next(stack[-1], None)
            if following is None:
                stack.pop()
                mark[path.pop()] = DONE
            elif mark.get(following) == ON_PATH:
                return [*path[path.index(following) :], following]
            elif following not in mark:
                mark[following] = ON_PATH
                path.append(following)
                stack.append(iter(sorted(graph[following])))
    return None


def test_the_cycle_finder_reports_a_circle() -> None:
    """The finder is not blind: a three-module circle is reported in order."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _find_cycle(graph) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Imports under TYPE_CHECKING, inside functions and relative ones are edges too;
    ``from pkg import module`` names the module, ``from pkg import name`` the package."""
    source = tmp_path / "a.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from oswitch.b import B\n"
        "def f():\n    import oswitch.c\n"
        "from . import d\n"
        "from oswitch.pkg import thing\n"
    )
    modules = {
        n: tmp_path for n in ("oswitch", "oswitch.b", "oswitch.c", "oswitch.d", "oswitch.pkg")
    }
    found = _imports("oswitch.a", source, modules)
    assert found == {"oswitch.b", "oswitch.c", "oswitch.d", "oswitch.pkg"}


def test_oswitch_has_no_import_circle() -> None:
    """No module of oswitch imports, directly or through others, itself."""
    cycle = _find_cycle(_import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])
