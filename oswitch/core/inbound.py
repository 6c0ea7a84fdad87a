"""A request that arrived in another shape than OpenAI's keeps its original beside the
internal (OpenAI-shaped) form: the internal form routes it and goes to targets of other
protocols; a target that speaks the original's protocol sends the original.

The original travels inside the internal request dict under :data:`ORIGINAL_KEY`, as an
:class:`OriginalRequest` value: a Python object, which no JSON body can contain, so a
caller of the chat endpoint cannot forge one. Adapters strip the key before sending.

Pure: no trio, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

ORIGINAL_KEY = "oswitch_original"
"""The internal request's key for its :class:`OriginalRequest`."""


@attrs.frozen(kw_only=True)
class OriginalRequest:
    """The request as its caller sent it.

    ``api``: its protocol ("anthropic"). ``body``: the parsed body, unchanged (unknown
    fields included). ``headers``: the caller's headers that travel to a target of the
    same protocol (lower-case names). ``base_messages``: how many messages the internal
    form had when translated: a resume appends its turns after them, and only those are
    added to the original. ``untranslatable``: what the internal form could not carry,
    as ``path: reason`` lines; a target of another protocol refuses the request with
    them (a 400), never sending it with something silently missing.
    """

    api: str
    body: Mapping[str, Any]
    headers: Mapping[str, str]
    base_messages: int
    untranslatable: tuple[str, ...] = ()


def original_of(request: Mapping[str, Any], api: str | None = None) -> OriginalRequest | None:
    """The request's original (of protocol ``api``, when given), or None."""
    original = request.get(ORIGINAL_KEY)
    if not isinstance(original, OriginalRequest):
        return None
    if api is not None and original.api != api:
        return None
    return original


NATIVE_KEY = "oswitch_native"
"""Where a reply or chunk decoded for a request whose original is in the target's own
protocol keeps what the OpenAI form has no place for (an Anthropic reply's own
payload, a message's id and usage, the exact stop reason); only such requests get it."""

RAW_BLOCK_KEY = "anthropic_block"
"""A chunk delta's key for a content block the OpenAI shape has no form for (a server
tool's use and result, and any block type added later), as the Anthropic target sent
its ``content_block_start`` (native decoding only)."""

RAW_DELTA_KEY = "anthropic_delta"
"""A chunk delta's key for a delta of such a block, or one of a type the OpenAI shape has
no form for (``citations_delta``), as sent (native decoding only)."""

RAW_STOP_KEY = "anthropic_block_stop"
"""A chunk delta's key marking the end of the Anthropic target's current content block
(its ``content_block_stop``; native decoding only), so blocks end where it ended them."""
