"""A streamed answer's script: what to say, in which pieces, and which fault to act out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs


@attrs.frozen(kw_only=True)
class StreamScript:
    """The options of one :func:`oswitch.testing.stream` behaviour (see its docstring)."""

    text: str
    api: str
    words_per_chunk: int
    chunk_latency: float
    cut_after: int | None
    reset_after: int | None
    stall_after: int | None
    malformed_at: int | None
    error_after: int | None
    error_type: str
    no_terminator: bool
    repeat: str
    tool_call: Mapping[str, str] | None
    split_bytes: int
    ping_every: int | None
    model: str | None


def _message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def continuation_of(body: Mapping[str, Any]) -> tuple[str, bool] | None:
    """If ``body`` asks to continue a cut answer: ``(confirmed text, prefilled)``.

    Understands both forms oswitch sends (assistant prefill, or an assistant turn
    plus an instruction), in OpenAI and Anthropic message shapes.
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, dict):
        return None
    if last.get("role") == "assistant":
        return _message_text(last), True
    if (
        len(messages) >= 2
        and isinstance(messages[-2], dict)
        and messages[-2].get("role") == "assistant"
        and "Continue it exactly" in _message_text(last)
    ):
        return _message_text(messages[-2]), False
    return None


def answer_for(script: StreamScript, body: Mapping[str, Any]) -> str:
    """The text to stream for ``body``: all of it, or the rest after a confirmed part
    (repeating some or all of it as ``script.repeat`` says)."""
    continued = continuation_of(body)
    if continued is None:
        return script.text
    confirmed, _ = continued
    start = len(confirmed)
    if script.repeat == "all":
        return script.text
    if script.repeat.startswith("tail:"):
        start = max(0, start - int(script.repeat[5:]))
    return script.text[start:]


def pieces(text: str, words_per_chunk: int) -> list[str]:
    """``text`` cut into chunks of ``words_per_chunk`` words, each keeping its trailing space."""
    words = text.split(" ")
    out: list[str] = []
    for start in range(0, len(words), words_per_chunk):
        piece = " ".join(words[start : start + words_per_chunk])
        if start + words_per_chunk < len(words):
            piece += " "
        out.append(piece)
    return [p for p in out if p]
