"""A string type for credentials whose repr and str never reveal the value."""

from __future__ import annotations

import hmac

import attrs


@attrs.frozen(repr=False, eq=False)
class Secret:
    """An API key or token. ``reveal()`` is the only way to read it.

    ``repr`` and ``str`` are redacted so that a secret logged, traced or put in an
    error by mistake shows as ``Secret('***')``. Equality is constant-time.
    """

    _value: str = attrs.field(alias="value")

    def reveal(self) -> str:
        """Return the secret value; call only where it is sent upstream or compared."""
        return self._value

    def matches(self, candidate: str) -> bool:
        """Compare with ``candidate`` in constant time."""
        return hmac.compare_digest(self._value.encode(), candidate.encode())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return self.matches(other._value)

    def __hash__(self) -> int:
        return hash(("oswitch.Secret", self._value))

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


def scrub(text: str, secrets: list[Secret] | tuple[Secret, ...]) -> str:
    """Return ``text`` with every non-empty secret value replaced by ``***``."""
    for secret in secrets:
        value = secret.reveal()
        if len(value) >= 4 and value in text:
            text = text.replace(value, "***")
    return text
