"""Stream resume: asking the next target to continue, and sewing the seam.

Pure: the engine hands in the caller's confirmed text and the continuation's
text as it arrives; this module decides what the caller gets next.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CONTINUE_INSTRUCTION = (
    "Your previous answer was cut off. Continue it exactly where it stopped: do not "
    "repeat any of it, do not add a preamble, and do not comment on the interruption."
)

# A continuation is watched for repeated text against at most this many trailing
# characters of the confirmed answer (besides a full restart from the beginning).
OVERLAP_WINDOW = 400
# Shorter accidental matches between the tail and the continuation are kept.
MIN_OVERLAP = 6


def continuation_request(
    request: Mapping[str, Any], confirmed: str, *, prefill: bool
) -> dict[str, Any]:
    """The request that asks another target to finish ``confirmed``.

    ``prefill``: the confirmed text is the final assistant turn, which the model
    continues (trailing whitespace stripped: Anthropic refuses it there). Otherwise
    it is an assistant turn followed by a user instruction to continue.
    """
    messages = list(request.get("messages") or ())
    continued = dict(request)
    if prefill:
        continued["messages"] = [*messages, {"role": "assistant", "content": confirmed.rstrip()}]
    else:
        continued["messages"] = [
            *messages,
            {"role": "assistant", "content": confirmed},
            {"role": "user", "content": CONTINUE_INSTRUCTION},
        ]
    return continued


class SeamReconciler:
    """Drops what a continuation repeats of the text the caller already has.

    Feed the continuation's text as it arrives; ``feed`` returns what may be
    passed on now. While the continuation could still be repeating the confirmed
    text — from its very start (a restart) or from somewhere in its last
    ``OVERLAP_WINDOW`` characters — its text is held back. Once that is decided,
    the repeated part (the whole answer again, or the longest repeated tail of at
    least ``MIN_OVERLAP`` characters) is dropped and the rest flows through.
    ``finish`` flushes at the end of the stream.
    """

    def __init__(self, confirmed: str) -> None:
        self._confirmed = confirmed
        self._held = ""
        self._decided = False
        self.dropped = 0  # how many continuation characters were repeats

    def _could_repeat(self, held: str) -> bool:
        confirmed = self._confirmed
        if confirmed.startswith(held):
            return True  # maybe the whole answer again
        window_start = max(0, len(confirmed) - OVERLAP_WINDOW)
        position = confirmed.find(held, window_start)
        return position != -1

    def _decide(self) -> str:
        self._decided = True
        held, confirmed = self._held, self._confirmed
        self._held = ""
        if held.startswith(confirmed) and confirmed:
            self.dropped = len(confirmed)
            return held[len(confirmed) :]
        longest = 0
        for size in range(min(len(held), len(confirmed), OVERLAP_WINDOW), MIN_OVERLAP - 1, -1):
            if confirmed.endswith(held[:size]) and held[:size].strip():
                longest = size
                break
        if longest:
            self.dropped = longest
            return held[longest:]
        if confirmed[-1:].isspace() and held[:1].isspace():
            # The prefill lost the confirmed text's trailing space; don't double it.
            stripped = held.lstrip()
            self.dropped = len(held) - len(stripped)
            return stripped
        return held

    def feed(self, text: str) -> str:
        """Take continuation text; return the part that may go to the caller now."""
        if self._decided:
            return text
        if not self._confirmed:
            self._decided = True
            return text
        self._held += text
        if self._could_repeat(self._held):
            return ""
        return self._decide()

    def finish(self) -> str:
        """The continuation ended: release whatever is still held back."""
        if self._decided:
            return ""
        # A restart would have repeated the whole answer before ending; text that only
        # matches its beginning may be new, and text is never thrown away on a guess.
        return self._decide()
