"""Clipping the strings oswitch keeps: what a client chose must not set what it costs.

Model names and request ids come from callers; provider messages and notes from
upstreams. Whatever of them the runtime keeps (traces, cooldown tables, caches) or
writes (audit events, error messages) goes through :func:`clip` first, so one
request with a 4 MB model name costs a few hundred bytes, not 4 MB per copy.

Two forms: :func:`clip` for what is kept (a key must stay distinct), and
:func:`shorten` for a caller's string echoed back in an error (a person reads it).

A clipped string keeps its head, says how much was cut and ends with a digest of
the whole, so two long names that share a head stay distinct as keys, and clipping
is idempotent (a clipped string fits, so it is returned as it is). The digest is
Python's string hash: computed once per string object and cached by CPython, so a
long name looked up again and again is hashed once; it is the same for the life of
the process (not across processes, which nothing here needs).
"""

from __future__ import annotations

# Longest model name, request id or target id kept whole. Real model names are under
# 100 characters (``accounts/fireworks/models/llama-v3p1-405b-instruct`` is 50).
MAX_NAME_CHARS = 256
# Longest note or message kept whole (a provider's message is cut to this as well).
MAX_TEXT_CHARS = 1000

_DIGEST_MASK = (1 << 64) - 1


def clip(text: str, limit: int = MAX_NAME_CHARS) -> str:
    """``text`` if it has at most ``limit`` characters, else a string of exactly
    ``limit`` characters: its head, ``…[+N chars #digest]``. Never raises (lone
    surrogates included); O(1) for strings that fit."""
    if len(text) <= limit:
        return text
    digest = f"{hash(text) & _DIGEST_MASK:016x}"
    tail = f"…[+{len(text)} chars #{digest}]"
    head = max(0, limit - len(tail))
    return (text[:head] + tail)[:limit]


# Longest caller's string echoed whole in an error message.
ECHO_CHARS = 64


def shorten(text: str, limit: int = ECHO_CHARS) -> str:
    """``text`` cut to ``limit`` characters for an error message, saying how long it was
    when it is cut: ``'mmm…… (4000000 characters)'``. Never raises."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"
