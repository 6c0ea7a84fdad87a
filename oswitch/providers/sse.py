"""Server-sent events, parsed from bytes as they arrive (sans-IO).

A small parser of our own rather than httpx-sse: that library is correct but walks
every event through five async generator layers, which cost more per event than
the rest of oswitch's streaming path together. Here one network read is split
into all the events it completes, in one synchronous call. Follows the event
stream format of the HTML standard: ``field: value`` lines, ``data`` lines joined
by newlines, comments (``:``) ignored, events dispatched at a blank line. Lines end
with LF or CRLF (a lone CR, allowed by the standard, is not used by any LLM API).
"""

from __future__ import annotations

import attrs


@attrs.frozen
class SSEEvent:
    """One dispatched event: its ``event`` name ("" when none was given) and ``data``."""

    event: str
    data: str


class SSEParser:
    """Feed bytes in any pieces; get back the events they complete."""

    def __init__(self) -> None:
        self._partial = b""  # an incomplete last line
        self._data: list[str] = []
        self._event = ""
        self._has_fields = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse ``chunk`` (any split, even inside a UTF-8 character); return the
        events it completes, in order. Never raises."""
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        events: list[SSEEvent] = []
        for raw in lines:
            event = self._line(raw[:-1] if raw.endswith(b"\r") else raw)
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[SSEEvent]:
        """The body ended: dispatch what is pending, even without its final blank line
        (servers that end on ``data: [DONE]\\n`` are common enough to be lenient)."""
        events = []
        if self._partial:
            line, self._partial = self._partial, b""
            event = self._line(line[:-1] if line.endswith(b"\r") else line)
            if event is not None:
                events.append(event)
        event = self._line(b"")
        if event is not None:
            events.append(event)
        return events

    def _line(self, line: bytes) -> SSEEvent | None:
        if not line:
            if not self._has_fields:
                return None
            event = SSEEvent(event=self._event, data="\n".join(self._data))
            self._data = []
            self._event = ""
            self._has_fields = False
            return event if event.data or event.event else None
        if line.startswith(b":"):
            return None  # a comment, e.g. a keep-alive ping
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        text = value.decode("utf-8", errors="replace")
        if name == b"data":
            self._data.append(text)
            self._has_fields = True
        elif name == b"event":
            self._event = text
            self._has_fields = True
        # id and retry are not used by oswitch; unknown fields are ignored (the standard).
        return None
