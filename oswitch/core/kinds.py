"""Naming what kind of value was given, for error messages that never show the value."""

from __future__ import annotations

from collections.abc import Mapping

from oswitch.core.secret import Secret


def kind_of(
    value: object,
    *,
    mapping: str = "a mapping",
    sequence: str = "a list",
    integer: str = "an integer",
) -> str:
    """``"an integer"``, ``"a string"``, ``"null"``… for ``value``; containers are named
    ``mapping`` / ``sequence`` and whole numbers ``integer`` (config files say
    mapping/list/integer, JSON replies object/array/number). Never the value itself:
    it may be a key or a token."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return integer
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str | Secret):
        return "a string"
    if isinstance(value, Mapping):
        return mapping
    if isinstance(value, list | tuple):
        return sequence
    return type(value).__name__
