"""HTTP/1.1 for a client, without I/O: response heads and bodies in.

This is the sans-IO half of oswitch's HTTP/1.1 client; :mod:`oswitch.transport.pool`
is the trio half that owns the sockets and drives it. Nothing here reads, writes,
waits or imports trio or httpx: bytes go in, values come out, and a response that
breaks HTTP/1.1 raises :class:`RemoteProtocolError`.

- Request heads are built in :mod:`oswitch.transport.request_head`, which refuses a
  header that would break one (:class:`LocalProtocolError`).
- :class:`HeadParser` takes the final response head off the front of a connection's
  bytes, skipping interim 1xx heads, and says how its body is framed (:class:`Framing`).
- :func:`decoder_for` gives that framing's body decoder: chunked (extensions ignored,
  trailers parsed), Content-Length, or the connection's close. Each call to
  ``decode`` hands back every body byte the buffer holds, joined, so one network read
  costs one call.

Responses are read as RFC 9112 says and as h11 reads them: ``tests/test_wire_differential.py``
feeds a corpus of valid and broken responses to this module, to the pool's own read
loop and to h11, split at every byte boundary, and requires the same events or the
same refusal. The cases where oswitch differs from h11 on purpose are listed there,
each with its reason. In short, it also accepts a bare LF ending a chunked framing
line, whitespace before a chunk extension, HTTP/1.0 keep-alive and framing fields in
trailers (not interpreted); it refuses HTTP versions other than 1.x, chunk sizes past
:data:`MAX_CHUNK_SIZE_DIGITS` hex digits and chunk size lines past
:data:`MAX_LINE_BYTES`; and it does not reuse a connection whose response carried both
Transfer-Encoding and Content-Length.
"""

from __future__ import annotations

import re
from typing import NoReturn, Protocol

from oswitch.core.immutable import immutable

# A head (status line and fields) or a trailer section, blank line included.
MAX_HEAD_BYTES = 64 * 1024
# A chunk size line, extensions included.
MAX_LINE_BYTES = 8 * 1024
# 16 hex digits count 2**64 bytes: a chunk size past that cannot be real.
MAX_CHUNK_SIZE_DIGITS = 16
# As h11: 20 decimal digits are a billion terabytes.
MAX_CONTENT_LENGTH_DIGITS = 20


class ProtocolError(Exception):
    """Bytes that are not HTTP/1.1 (the message never echoes a header value)."""


class RemoteProtocolError(ProtocolError):
    """The server's bytes break HTTP/1.1."""


class LocalProtocolError(ProtocolError):
    """The request asked for cannot be written as HTTP/1.1."""


# ---- field names ------------------------------------------------------------------------

_TOKEN = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_HEX = b"0123456789abcdefABCDEF"


def is_token(name: bytes) -> bool:
    """Whether ``name`` is an RFC 9110 token (a valid field name)."""
    return bool(name) and not name.translate(None, _TOKEN)


# ---- response heads ---------------------------------------------------------------------

# A field section ends at its first blank line; a bare LF may end a line (RFC 9112 §2.2).
_BLANK_LINE = re.compile(rb"\n\r?\n")
# Bytes no field value may hold (h11's field-value rule): they would end the line or are
# whitespace a parser may split on. The request side refuses them too.
NOT_IN_FIELD_VALUE = b"\x00\x0b\x0c\r\n"
# The bytes of that rule that no field section holds anywhere: CR and LF end its lines
# (a CR outside a line's end is counted by _section_end, not searched for).
_NOT_IN_FIELDS = re.compile(
    b"[" + re.escape(bytes(sorted(set(NOT_IN_FIELD_VALUE) - set(b"\r\n")))) + b"]"
)
_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] ([0-9]{3})(?: (.*))?", re.DOTALL)
# The usual head, matched whole in one pass: a status line and fields (a token, a colon,
# a value), every line ending in CRLF, no byte that the general path would refuse or
# that needs its care (a bare LF, a folded line, a stray CR). Anything else, and every
# malformed head, takes the general path, which decides. Every quantifier is possessive
# (it never gives a byte back), so a hostile head costs one pass: a lazy value before
# optional blanks backtracked over a run of blanks once per byte of it (10 s for 64 KiB).
_VALUE_BYTES = b"[^" + re.escape(NOT_IN_FIELD_VALUE) + b"]"
_VALUE_WORD = b"[^ \t" + re.escape(NOT_IN_FIELD_VALUE) + b"]"  # between a value's blanks
_NAME_BYTES = b"[" + re.escape(_TOKEN) + b"]"
_COMMON_HEAD = re.compile(
    rb"HTTP/1\.[0-9] ([0-9]{3})(?: (%s*+))?\r\n((?:%s++:%s*+\r\n)*+)"
    % (_VALUE_BYTES, _NAME_BYTES, _VALUE_BYTES)
)
# A field, its value without the blanks around it (as ``strip(b" \t")`` leaves it).
_COMMON_FIELD = re.compile(
    rb"(%s++):[ \t]*+((?:[ \t]*+%s++)*+)[ \t]*+\r\n" % (_NAME_BYTES, _VALUE_WORD)
)


@immutable
class Framing:
    """How a response body ends: ``chunked``, ``length`` bytes, at ``close``, or ``none``;
    and whether the connection may carry another request afterwards."""

    kind: str
    length: int = 0
    keep_alive: bool = True


@immutable(kw_only=True)
class Head:
    """A final response head; ``headers`` keep their order and the names' case."""

    status: int
    reason: bytes
    http_version: bytes
    headers: list[tuple[bytes, bytes]]
    framing: Framing


class HeadParser:
    """Takes the final response head off the front of a connection's bytes.

    Interim 1xx heads are dropped (101 Switching Protocols is refused: oswitch never
    asks to upgrade). A head may not exceed :data:`MAX_HEAD_BYTES`, however its bytes
    arrive; each buffer passed in extends the previous one.
    """

    __slots__ = ("_method", "_scanned")

    def __init__(self, method: bytes) -> None:
        self._method = method
        self._scanned = 0  # where to resume looking for the blank line

    def parse(self, buffer: bytes) -> tuple[Head | None, bytes]:
        """``(head, rest)`` once the final head is in, else ``(None, buffer)`` with any
        interim heads taken off. Raises :class:`RemoteProtocolError`."""
        if not self._scanned and (common := _common_head(self._method, buffer)) is not None:
            return common
        return self._parse_by_lines(buffer)

    def _parse_by_lines(self, buffer: bytes) -> tuple[Head | None, bytes]:
        """:meth:`parse` for any head: interim ones, bare LFs, folded lines, heads cut
        across reads, and every refusal."""
        while True:
            end = _section_end(buffer, self._scanned, "head")
            if end < 0:
                self._scanned = max(0, len(buffer) - 2)
                return None, buffer
            lines, buffer = _lines(buffer[:end]), buffer[end:]
            self._scanned = 0
            status, reason, http_version = _status_line(lines[0])
            headers = header_fields(lines[1:], "header")
            if status >= 200:
                return _final_head(self._method, status, reason, http_version, headers), buffer
            if status == 101:
                raise RemoteProtocolError("unexpected 101 Switching Protocols")
            # 100 Continue, 103 Early Hints: the real head follows

    @staticmethod
    def end_of_stream(buffer: bytes) -> NoReturn:
        """The connection closed before the final head was complete (``buffer`` is what
        came of it): raises :class:`RemoteProtocolError`."""
        raise RemoteProtocolError(
            "server disconnected in the middle of the response head"
            if buffer
            else "server disconnected without sending a response"
        )


def _common_head(method: bytes, buffer: bytes) -> tuple[Head, bytes] | None:
    """A final head of the usual shape at the front of ``buffer``, read in one pass,
    with the rest; None when there is none (incomplete, interim, unusual or malformed:
    :meth:`HeadParser.parse` reads those line by line)."""
    end = buffer.find(b"\r\n\r\n") + 2  # past the last field's CRLF
    if end < 2 or end + 2 > MAX_HEAD_BYTES:
        return None
    match = _COMMON_HEAD.fullmatch(buffer, 0, end)
    if match is None or (status := int(match[1])) < 200:
        return None
    headers = _COMMON_FIELD.findall(buffer, match.start(3), end)
    head = _final_head(method, status, match[2] or b"", buffer[:8], headers)
    return head, buffer[end + 2 :]


def _final_head(
    method: bytes,
    status: int,
    reason: bytes,
    http_version: bytes,
    headers: list[tuple[bytes, bytes]],
) -> Head:
    """The final head of a response to ``method``, its body's framing decided."""
    framing = framing_of(method, status, http_version, headers)
    return Head(
        status=status, reason=reason, http_version=http_version, headers=headers, framing=framing
    )


def _section_end(buffer: bytes, start: int, what: str) -> int:
    """Where the field section at the front of ``buffer`` ends (past its blank line),
    or -1 while it is incomplete. Raises past :data:`MAX_HEAD_BYTES` or on a byte no
    field may hold."""
    match = _BLANK_LINE.search(buffer, start)
    end = -1 if match is None else match.end()
    if (len(buffer) if end < 0 else end) > MAX_HEAD_BYTES:
        raise RemoteProtocolError(f"response {what} over {MAX_HEAD_BYTES} bytes")
    if end >= 0 and (
        _NOT_IN_FIELDS.search(buffer, 0, end)
        # A CR not ending a line: counted, not searched for (a pattern looking ahead
        # of every byte cost more than the rest of the head's parse).
        or buffer.count(b"\r", 0, end) != buffer.count(b"\r\n", 0, end)
    ):
        raise RemoteProtocolError(f"control character in the response {what}")
    return end


def _lines(section: bytes) -> list[bytes]:
    """A field section's lines, line ends and the closing blank line removed."""
    lines = [line.rstrip(b"\r") for line in section.split(b"\n")]
    del lines[-2:]
    return lines


def _status_line(line: bytes) -> tuple[int, bytes, bytes]:
    match = _STATUS_LINE.fullmatch(line)
    if match is None or int(match[1]) < 100:
        raise RemoteProtocolError(f"malformed status line {line[:80]!r}")
    return int(match[1]), match[2] or b"", line[:8]


def header_fields(lines: list[bytes], what: str) -> list[tuple[bytes, bytes]]:
    """Field lines as ``(name, value)``; an obsolete folded line joins the previous value
    with one space, as h11 does. Raises :class:`RemoteProtocolError` on a malformed line."""
    fields: list[tuple[bytes, bytes]] = []
    raw = b""  # the latest field's value as sent, before trimming
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:  # obsolete line folding
            raw += b" " + line.lstrip(b" \t")
            fields[-1] = (fields[-1][0], raw.strip(b" \t"))
            continue
        name, colon, raw = line.partition(b":")
        if not colon or not is_token(name):
            raise RemoteProtocolError(f"malformed response {what} line {line[:80]!r}")
        fields.append((name, raw.strip(b" \t")))
    return fields


def framing_of(
    method: bytes, status: int, http_version: bytes, headers: list[tuple[bytes, bytes]]
) -> Framing:
    """How the body of a final response to ``method`` is framed (RFC 9112 §6.3).

    Raises :class:`RemoteProtocolError` for a Transfer-Encoding other than a single
    ``chunked`` (oswitch decodes no other coding) or an invalid Content-Length.
    """
    chunked = False
    length: bytes | None = None
    connection = b""
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            if chunked or value.lower() != b"chunked":
                raise RemoteProtocolError("unsupported Transfer-Encoding in the response")
            chunked = True
        elif lowered == b"content-length":
            values = {part.strip(b" \t") for part in value.split(b",")}
            found = values.pop()
            if (
                values
                or not found.isdigit()
                or len(found) > MAX_CONTENT_LENGTH_DIGITS
                or (length is not None and found != length)
            ):
                raise RemoteProtocolError("invalid Content-Length in the response")
            length = found
        elif lowered == b"connection":
            connection += b"," + value.lower()
    tokens = {token.strip(b" \t") for token in connection.split(b",")} if connection else ()
    if http_version == b"HTTP/1.0":
        # HTTP/1.0 keep-alive is honoured (RFC 9112 §9.3), never with a transfer coding
        # (§6.1: the framing is faulty).
        keep_alive = b"keep-alive" in tokens and not chunked
    else:
        keep_alive = b"close" not in tokens
    if method == b"HEAD" or status in (204, 304):
        return Framing("none", keep_alive=keep_alive)
    if chunked:
        # Both framings at once may be an attempt at response splitting (§6.3): read
        # it by Transfer-Encoding, then close the connection.
        return Framing("chunked", keep_alive=keep_alive and length is None)
    if length is not None:
        size = int(length)
        return Framing("length" if size else "none", length=size, keep_alive=keep_alive)
    return Framing("close", keep_alive=False)


# ---- response bodies --------------------------------------------------------------------


class BodyDecoder(Protocol):
    """Turns a framed body's bytes into the body's bytes."""

    def decode(self, buffer: bytes) -> tuple[bytes, bytes, bool]:
        """``(data, rest, done)``: every body byte ``buffer`` holds, the bytes to keep
        for the next call (after the body once ``done``), and whether the body ended.
        Raises :class:`RemoteProtocolError`."""
        ...

    def end_of_stream(self) -> None:
        """The connection closed: return if that ends the body, else raise
        :class:`RemoteProtocolError`."""
        ...


def decoder_for(framing: Framing) -> BodyDecoder:
    """A fresh decoder for a body framed as ``framing``."""
    if framing.kind == "chunked":
        return ChunkedDecoder()
    if framing.kind == "length":
        return LengthDecoder(framing.length)
    if framing.kind == "close":
        return CloseDecoder()
    return NoBody()


class NoBody:
    """A response without a body: it ends before its first byte."""

    __slots__ = ()

    def decode(self, buffer: bytes) -> tuple[bytes, bytes, bool]:
        return b"", buffer, True

    def end_of_stream(self) -> None:
        return None


class CloseDecoder:
    """A body that ends when the server closes the connection."""

    __slots__ = ()

    def decode(self, buffer: bytes) -> tuple[bytes, bytes, bool]:
        return buffer, b"", False

    def end_of_stream(self) -> None:
        return None


class LengthDecoder:
    """A body of ``Content-Length`` bytes."""

    __slots__ = ("_remaining",)

    def __init__(self, length: int) -> None:
        self._remaining = length

    def decode(self, buffer: bytes) -> tuple[bytes, bytes, bool]:
        remaining = self._remaining
        if len(buffer) < remaining:
            self._remaining = remaining - len(buffer)
            return buffer, b"", False
        self._remaining = 0
        return buffer[:remaining], buffer[remaining:], True

    def end_of_stream(self) -> None:
        raise RemoteProtocolError(
            f"server closed the connection {self._remaining} bytes before the end of "
            "the response body"
        )


class ChunkedDecoder:
    """A ``Transfer-Encoding: chunked`` body. Chunk extensions are ignored; the trailer
    fields are in :attr:`trailers` once the body is done."""

    __slots__ = ("_after_chunk", "_remaining", "_scanned", "_trailing", "trailers")

    def __init__(self) -> None:
        self._remaining = 0  # data bytes of the current chunk still due
        self._after_chunk = False  # the line end closing a chunk's data is still due
        self._trailing = False  # past the last chunk: the trailer section is due
        self._scanned = 0  # where to resume looking for the trailers' blank line
        self.trailers: list[tuple[bytes, bytes]] = []

    def decode(self, buffer: bytes) -> tuple[bytes, bytes, bool]:
        # Walks the buffer by position and slices each piece once: a read that holds a
        # whole stream (every event of it) is not copied again per chunk.
        pieces: list[bytes] = []
        pos = 0
        size = len(buffer)
        while pos < size:
            remaining = self._remaining
            if remaining:
                end = pos + remaining
                if size < end:
                    pieces.append(buffer[pos:] if pos else buffer)
                    self._remaining = end - size
                    pos = size
                    break
                pieces.append(buffer[pos:end])
                pos = end
                self._remaining = 0
                self._after_chunk = True
            elif self._after_chunk:
                # Slices, not startswith: its argument parsing costs more.
                ending = buffer[pos : pos + 2]
                if ending == b"\r\n":
                    pos += 2
                elif ending[:1] == b"\n":
                    pos += 1
                elif ending == b"\r":  # the last byte of the buffer
                    break  # the LF is in the next read
                else:
                    raise RemoteProtocolError("chunk data not followed by CRLF")
                self._after_chunk = False
            elif self._trailing:
                done, rest = self._trailer_section(buffer[pos:] if pos else buffer)
                return b"".join(pieces), rest, done
            else:
                whole = _plain_chunk_head(buffer, pos)
                if whole is not None:
                    # The common chunk: a bare hex size, CRLF, its data and CRLF, all in
                    # this buffer. One match stands for the size line's checks below.
                    start = whole.end()
                    end = start + int(whole[1], 16)
                    if end > start and buffer[end : end + 2] == b"\r\n":
                        pieces.append(buffer[start:end])
                        pos = end + 2
                        continue
                newline = buffer.find(b"\n", pos)
                if newline - pos > MAX_LINE_BYTES or (newline < 0 and size - pos > MAX_LINE_BYTES):
                    raise RemoteProtocolError("chunk size line too long")
                if newline < 0:
                    break
                self._remaining = _chunk_size(buffer[pos:newline])
                self._trailing = not self._remaining
                pos = newline + 1
        rest = buffer[pos:] if pos else buffer
        return (pieces[0] if len(pieces) == 1 else b"".join(pieces)), rest, False

    def _trailer_section(self, buffer: bytes) -> tuple[bool, bytes]:
        if buffer[:1] == b"\n":
            return True, buffer[1:]
        if buffer[:2] == b"\r\n":
            return True, buffer[2:]
        end = -1 if buffer == b"\r" else _section_end(buffer, self._scanned, "trailers")
        if end < 0:
            self._scanned = max(0, len(buffer) - 2)
            return False, buffer
        self.trailers = header_fields(_lines(buffer[:end]), "trailer")
        return True, buffer[end:]

    def end_of_stream(self) -> None:
        raise RemoteProtocolError("server closed the connection before the end of the chunked body")


# A chunk size line with nothing but its size (no extension, no whitespace).
_plain_chunk_head = re.compile(rb"([0-9a-fA-F]{1,16})\r\n").match


def _chunk_size(line: bytes) -> int:
    """The size on a chunk size line (extensions ignored; whitespace allowed before
    them, RFC 9112 §7.1.1)."""
    digits = line.removesuffix(b"\r").partition(b";")[0].rstrip(b" \t")
    if not digits or len(digits) > MAX_CHUNK_SIZE_DIGITS or digits.translate(None, _HEX):
        raise RemoteProtocolError(f"malformed chunk size line {line[:40]!r}")
    return int(digits, 16)
