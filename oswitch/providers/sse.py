"""Server-sent events, parsed from bytes as they arrive (sans-IO).

A small parser of our own rather than httpx-sse: that library is correct but walks
every event through five async generator layers, which cost more per event than
the rest of oswitch's streaming path together. Here one network read is split
into all the events it completes, in one synchronous call. Follows the event
stream format of the HTML standard: ``field: value`` lines, ``data`` lines joined
by newlines, comments (``:``) ignored, events dispatched at a blank line. Lines end
with LF or CRLF (a lone CR, allowed by the standard, is not used by any LLM API).

This runs once per network read of every stream, so the common line (``data: …``)
is handled inline, and data stays bytes until its event is dispatched.
"""

from __future__ import annotations

from typing import NamedTuple


class SSEEvent(NamedTuple):
    """One dispatched event: its ``event`` name ("" when none was given) and ``data``."""

    event: str
    data: str


class SSEParser:
    """Feed bytes in any pieces; get back the events they complete."""

    __slots__ = ("_data", "_event", "_has_fields", "_partial")

    def __init__(self) -> None:
        self._partial = b""  # an incomplete last line
        self._data: list[bytes] = []
        self._event = ""
        self._has_fields = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse ``chunk`` (any split, even inside a UTF-8 character); return the
        events it completes, in order. Never raises."""
        lines = (self._partial + chunk if self._partial else chunk).split(b"\n")
        self._partial = lines.pop()
        events: list[SSEEvent] = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if line.startswith(b"data:"):
                self._data.append(line[6:] if line.startswith(b"data: ") else line[5:])
                self._has_fields = True
            elif not line:
                if self._has_fields:
                    event = self._dispatch()
                    if event is not None:
                        events.append(event)
            elif not line.startswith(b":"):  # a comment, e.g. a keep-alive ping
                self._field(line)
        return events

    def close(self) -> list[SSEEvent]:
        """The body ended: dispatch what is pending, even without its final blank line
        (servers that end on ``data: [DONE]\\n`` are common enough to be lenient)."""
        # End the unfinished line, then the event: a blank line does both.
        return self.feed(b"\n\n" if self._partial else b"\n")

    def _dispatch(self) -> SSEEvent | None:
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        event = SSEEvent(self._event, data.decode("utf-8", errors="replace"))
        self._data = []
        self._event = ""
        self._has_fields = False
        return event if event.data or event.event else None

    def _field(self, line: bytes) -> None:
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":  # "data" with no colon: an empty data line
            self._data.append(value)
            self._has_fields = True
        elif name == b"event":
            self._event = value.decode("utf-8", errors="replace")
            self._has_fields = True
        # id and retry are not used by oswitch; unknown fields are ignored (the standard).
