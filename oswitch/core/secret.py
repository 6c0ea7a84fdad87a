"""A string type for credentials whose repr and str never reveal the value."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

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


MIN_SECRET_CHARS = 4
"""Values shorter than this are never scrubbed (they would match everywhere), and a
cut-off key is redacted once this much of its beginning shows."""

CUT_MARK = "…"


def scrub(text: str, secrets: Iterable[Secret]) -> str:
    """Return ``text`` with every secret value replaced by ``***``, and a key's
    beginning at the very end of ``text`` (or just before a final ``…``) too: text
    cut short elsewhere may end inside a key."""
    values = [value for value in map(Secret.reveal, secrets) if len(value) >= MIN_SECRET_CHARS]
    for value in values:
        if value in text:
            text = text.replace(value, "***")
    if text.endswith(CUT_MARK):
        return _redact_cut_key(text[: -len(CUT_MARK)], values) + CUT_MARK
    return _redact_cut_key(text, values)


def scrub_and_cut(text: str, secrets: Iterable[Secret], *, limit: int) -> str:
    """``text`` scrubbed of every secret, then cut to at most ``limit`` characters
    (the last one ``…`` when cut), with a key's beginning at the cut redacted.

    Scrubbing first means a key straddling the cut is replaced whole before the cut
    could leave its first characters behind. Only the first ``limit`` + (longest key)
    characters are scrubbed: every key that reaches into the part kept lies within
    them, and the cost stays bounded however long ``text`` is.
    """
    secrets = tuple(secrets)
    if len(text) <= limit:
        return scrub(text, secrets)
    longest = max((len(secret.reveal()) for secret in secrets), default=0)
    scrubbed = scrub(text[: limit + longest], secrets)
    if len(scrubbed) <= limit and len(text) <= limit + longest:
        return scrubbed  # the keys replaced made it short enough: nothing is cut
    return scrub(scrubbed[: limit - len(CUT_MARK)], secrets) + CUT_MARK


def _redact_cut_key(text: str, values: list[str]) -> str:
    """``text`` with a trailing fragment that begins one of ``values`` (at least
    MIN_SECRET_CHARS of it) replaced by ``***``."""
    for value in values:
        # A whole value was scrubbed already: look for a beginning shorter than it.
        window_start = max(0, len(text) - len(value) + 1)
        head = value[:MIN_SECRET_CHARS]
        at = text.find(head, window_start)
        while at >= 0:
            if value.startswith(text[at:]):
                text = text[:at] + "***"
                break
            at = text.find(head, at + 1)
    return text
