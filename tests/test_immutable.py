"""oswitch.core.immutable: records that the type checker holds frozen and that build as
cheaply as plain slotted attrs classes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import attrs
import pytest
from mypy import api as mypy_api

from oswitch.core.immutable import immutable
from oswitch.runtime.messages import AttemptOutcome, OutcomeKind
from oswitch.transport.wire import Framing


@immutable(kw_only=True)
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()


def test_a_record_is_a_keyword_only_slotted_attrs_class_that_hashes_by_value() -> None:
    """Equal records are equal and hash equal (as frozen attrs ones do), evolve makes a
    changed copy, fields are keyword-only and there is no instance dict."""
    point = Point(x=1, tags=("a",))
    assert attrs.has(Point)
    assert point == Point(x=1, tags=("a",)) and hash(point) == hash(Point(x=1, tags=("a",)))
    assert attrs.evolve(point, y=2) == Point(x=1, y=2, tags=("a",))
    assert not hasattr(point, "__dict__")
    with pytest.raises(TypeError):
        Point(1)  # type: ignore[misc]


def test_the_engines_records_are_built_with_it() -> None:
    """The hot path's records are plain slotted classes at run time: no ``__setattr__``
    of their own, which is what made a frozen ``__init__`` cost a call per field."""
    for record in (AttemptOutcome, Framing):
        assert attrs.has(record)
        assert record.__setattr__ is object.__setattr__
    outcome = AttemptOutcome(kind=OutcomeKind.OK, target_id="a", served_model="m", started_at=0)
    assert attrs.evolve(outcome, note="x").note == "x"


def test_mypy_refuses_an_assignment_to_a_field(tmp_path: Path) -> None:
    """To ``mypy --strict`` (which CI runs over oswitch) a record is frozen: assigning a
    field is an error; reading it and evolving it are not."""
    source = tmp_path / "uses_a_record.py"
    source.write_text(
        textwrap.dedent(
            """
            import attrs
            from oswitch.core.immutable import immutable

            @immutable(kw_only=True)
            class Point:
                x: int

            def move(point: Point) -> Point:
                point.x = 2
                return attrs.evolve(point, x=point.x + 1)
            """
        )
    )
    # Run from the project's root, it reuses the cache that CI's own mypy run leaves.
    out, _, status = mypy_api.run(["--strict", str(source)])
    assert status == 1, out
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors) == 1, out
    assert 'uses_a_record.py:10: error: Property "x" defined in "Point" is read-only' in errors[0]
