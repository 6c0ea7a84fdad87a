"""The ``chat.completion.chunk`` dicts a stream's relay writes or rewrites itself: a
piece of text of its own (what seam reconciliation let through), the finish chunk a
provider left out, a chunk with its text replaced, a continuation's chunk without its
role. Pure: the chunks a provider sent are copied, never changed in place."""

from __future__ import annotations

import copy
from typing import Any


def with_text(chunk: dict[str, Any], text: str) -> dict[str, Any]:
    """``chunk`` with its first choice's content replaced by ``text``."""
    chunk = copy.copy(chunk)
    choices = [dict(choice) for choice in chunk["choices"]]
    delta = dict(choices[0].get("delta") or {})
    delta["content"] = text
    choices[0]["delta"] = delta
    chunk["choices"] = choices
    return chunk


def without_role(chunk: dict[str, Any]) -> dict[str, Any]:
    """``chunk`` without its first delta's ``role`` (a continuation's opening chunk:
    the caller was told the role at the start of the answer); itself if it has none."""
    choices = chunk.get("choices") or []
    delta = choices[0].get("delta") if choices else None
    if not (isinstance(delta, dict) and "role" in delta):
        return chunk
    delta = dict(delta)
    delta.pop("role")
    chunk = copy.copy(chunk)
    chunk["choices"] = [dict(choices[0], delta=delta), *choices[1:]]
    return chunk


def text_chunk(chunk_id: str | None, model: str, text: str) -> dict[str, Any]:
    """A chunk of oswitch's own carrying ``text`` (held back at a seam, then released)."""
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "model": model,
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }


def finish_chunk(chunk_id: str | None, model: str, summary: dict[str, Any]) -> dict[str, Any]:
    """The finish chunk (``stop``, with the reply's ``"oswitch"`` summary) for a stream
    that ended with ``[DONE]`` and no finish chunk of its own."""
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "oswitch": summary,
    }
