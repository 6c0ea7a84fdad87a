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

What an upstream sends is bounded: a line of at most :data:`MAX_LINE_BYTES` and an
event of at most :data:`MAX_EVENT_BYTES` of data; past either the parser refuses
the stream (:class:`SSELimitExceeded`). Parsing is linear in the bytes fed: each
read is searched for line ends once, and a line that spans reads is held as a
growing buffer joined once when it ends, never searched again.
"""

from __future__ import annotations

from typing import NamedTuple

import attrs

# The largest single events real providers send are far smaller: a token or a few
# of text (OpenAI-style chunks are ~200 bytes), an Anthropic tool-use
# ``input_json_delta`` or thinking ``signature_delta`` (a few KiB), a redacted
# thinking or web-search result block (tens to a few hundred KiB), a whole answer
# sent as one chunk by a server that does not stream incrementally (128k output
# tokens are ~0.5 MiB of text, ~1.5 MiB JSON-escaped), or one inline base64 image
# (~2-3 MiB for a 1024x1024 PNG). 4 MiB leaves room for each; a line spans at most
# one event, so it has the same bound.
MAX_LINE_BYTES = 4 * 1024 * 1024
"""The longest line accepted (its field name included, its line end not)."""
MAX_EVENT_BYTES = 4 * 1024 * 1024
"""The most data one event may carry (its ``data`` values joined by newlines)."""


class SSEEvent(NamedTuple):
    """One dispatched event: its ``event`` name ("" when none was given) and ``data``."""

    event: str
    data: str


# A NamedTuple's own __new__ is Python code: building the tuple directly skips a call.
_new_event = tuple.__new__


class SSELimitExceeded(ValueError):
    """The stream passed a bound (a line or an event too big): it is refused.

    ``events`` are the events completed before the bound was passed by the same
    :meth:`SSEParser.feed` call, in order (events completed by earlier calls were
    returned by them), so that every event before the fault is delivered whatever
    the split of the bytes. The message says which bound, e.g.
    ``line over 4194304 bytes``; it never quotes the stream.
    """

    def __init__(self, message: str, events: list[SSEEvent]) -> None:
        super().__init__(message)
        self.events = events


@attrs.frozen(kw_only=True)
class SSEStatistics:
    """What one parser has done: ``bytes_fed`` in, and ``bytes_handled``, the bytes
    it searched for line ends or copied into buffers. ``bytes_handled`` stays within
    a small multiple of ``bytes_fed`` however the input is split (linear parsing)."""

    bytes_fed: int
    bytes_handled: int


class SSEParser:
    """Feed bytes in any pieces; get back the events they complete.

    ``max_line_bytes`` and ``max_event_bytes`` default to :data:`MAX_LINE_BYTES` and
    :data:`MAX_EVENT_BYTES`; what the parser holds between calls is at most their sum.
    """

    __slots__ = (
        "_data",
        "_data_size",
        "_event",
        "_fed",
        "_handled",
        "_has_fields",
        "_max_event",
        "_max_line",
        "_partial",
        "_refusal",
    )

    def __init__(
        self, *, max_line_bytes: int = MAX_LINE_BYTES, max_event_bytes: int = MAX_EVENT_BYTES
    ) -> None:
        self._max_line = max_line_bytes
        self._max_event = max_event_bytes
        self._partial = bytearray()  # an incomplete last line
        self._data: list[bytes] = []
        self._data_size = 0  # len(b"\n".join(self._data))
        self._event = ""
        self._has_fields = False
        self._refusal: str | None = None
        self._fed = 0
        self._handled = 0

    def statistics(self) -> SSEStatistics:
        return SSEStatistics(bytes_fed=self._fed, bytes_handled=self._handled)

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse ``chunk`` (any split, even inside a UTF-8 character); return the
        events it completes, in order.

        Raises SSELimitExceeded when a line or an event passes its bound (carrying
        the events completed before it), and again, with no events, on every later
        call: a refused stream stays refused.
        """
        if self._refusal is not None:
            raise SSELimitExceeded(self._refusal, [])
        self._fed += len(chunk)
        events: list[SSEEvent] = []
        partial = self._partial
        if partial:
            # A line spans reads: search only the new bytes, and join the line once.
            end = chunk.find(b"\n")
            if end < 0:
                self._handled += 2 * len(chunk)  # searched, then appended
                partial += chunk
                # +1: the line's CR may have arrived without its LF.
                if len(partial) > self._max_line + 1:
                    self._refuse(f"line over {self._max_line} bytes", events)
                return events
            partial += chunk[:end]
            # searched up to the LF, appended, the whole line copied out, the rest split
            self._handled += 2 * end + 1 + len(partial) + len(chunk) - end - 1
            first = bytes(partial)
            self._partial = bytearray()
            lines = chunk[end + 1 :].split(b"\n")
            lines[0:0] = (first,)
        else:
            self._handled += len(chunk)  # split: searched once
            lines = chunk.split(b"\n")
        last = lines.pop()
        max_line = self._max_line
        max_event = self._max_event
        # The event being built lives in locals while the lines are walked (written
        # back before any other method looks at it): the common line costs no call.
        data = self._data
        data_size = self._data_size
        has_fields = self._has_fields
        # Comparing slices, not startswith/endswith: those parse their arguments the
        # old way, which costs more than the rest of a line's handling.
        for line in lines:
            if line[-1:] == b"\r":
                line = line[:-1]
            if len(line) > max_line:
                self._refuse(f"line over {max_line} bytes", events)
            if line[:5] == b"data:":
                value = line[6:] if line[5:6] == b" " else line[5:]
                data_size += len(value) + 1 if data else len(value)
                if data_size > max_event:
                    self._refuse(f"event data over {max_event} bytes", events)
                data.append(value)
                has_fields = True
            elif not line:
                if has_fields:
                    joined = data[0] if len(data) == 1 else b"\n".join(data)
                    text = joined.decode("utf-8", errors="replace")
                    name = self._event
                    if text or name:
                        events.append(_new_event(SSEEvent, (name, text)))
                    self._event = ""
                    data = []
                    data_size = 0
                    has_fields = False
            elif line[:1] != b":":  # a comment, e.g. a keep-alive ping
                self._data, self._data_size, self._has_fields = data, data_size, has_fields
                self._field(line, events)
                data, data_size, has_fields = self._data, self._data_size, self._has_fields
        self._data, self._data_size, self._has_fields = data, data_size, has_fields
        if last:
            if len(last) > max_line + 1:
                self._refuse(f"line over {max_line} bytes", events)
            self._handled += len(last)  # copied into the buffer
            self._partial = bytearray(last)
        return events

    def close(self) -> list[SSEEvent]:
        """The body ended: dispatch what is pending, even without its final blank line
        (servers that end on ``data: [DONE]\\n`` are common enough to be lenient).
        Raises SSELimitExceeded as :meth:`feed` does."""
        # End the unfinished line, then the event: a blank line does both.
        return self.feed(b"\n\n" if self._partial else b"\n")

    def _refuse(self, reason: str, events: list[SSEEvent]) -> None:
        self._refusal = reason
        # What was pending is dropped: a refused stream holds no memory.
        self._partial = bytearray()
        self._data = []
        raise SSELimitExceeded(reason, events)

    def _add_data(self, value: bytes, events: list[SSEEvent]) -> None:
        self._data_size += len(value) + (1 if self._data else 0)
        if self._data_size > self._max_event:
            self._refuse(f"event data over {self._max_event} bytes", events)
        self._data.append(value)
        self._has_fields = True

    def _dispatch(self) -> SSEEvent | None:
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        event = SSEEvent(self._event, data.decode("utf-8", errors="replace"))
        self._data = []
        self._data_size = 0
        self._event = ""
        self._has_fields = False
        return event if event.data or event.event else None

    def _field(self, line: bytes, events: list[SSEEvent]) -> None:
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":  # "data" with no colon: an empty data line
            self._add_data(value, events)
        elif name == b"event":
            self._event = value.decode("utf-8", errors="replace")
            self._has_fields = True
        # id and retry are not used by oswitch; unknown fields are ignored (the standard).
