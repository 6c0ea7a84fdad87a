"""HTTP/1.1 for the sidecar's server side, without I/O: request heads and bodies in,
response heads and body framing out.

This is the sans-IO half of the sidecar's own HTTP/1.1 server;
:mod:`oswitch.sidecar.connection` is the trio half that owns a client's socket and
drives it. Nothing here reads, writes, waits or imports trio: bytes go in, values come
out, and bytes that break HTTP/1.1 raise :class:`BadRequest`, which carries the status
to answer with and a message naming what is wrong (never echoing a header's value).

- :func:`find_head_end` finds where a request head ends in a connection's buffer.
- :func:`parse_request_head` turns a complete head into a :class:`RequestHead`: the
  request line, the fields (names lower-cased, as ASGI hands them on), and how the body
  is framed.
- :class:`ChunkedBody` decodes a ``Transfer-Encoding: chunked`` request body.
- :func:`response_head` builds a response's head and says how its body is framed.

Requests are read as RFC 9112 says, stricter than h11 where a lenient reading is a known
smuggling vector: lines end with CRLF (a bare LF is refused), an obsolete folded line is
refused (400, §5.2), a field name may not be followed by whitespace (§5.1), only one
``chunked`` Transfer-Encoding is understood (501 otherwise), Content-Length values must
all agree, and HTTP/1.1 needs exactly one Host. ``tests/test_h1_differential.py`` feeds a
corpus of valid and broken requests to this module and to h11 and requires the same
reading or a refusal by both, except for the cases listed there.
"""

from __future__ import annotations

import re
import secrets
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, NoReturn
from urllib.parse import unquote

from oswitch.core.immutable import immutable
from oswitch.core.json_codec import encode

# A request head (request line and fields), its blank line included.
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 128
# A chunk size line of a request body, extensions included; and its trailer section.
MAX_CHUNK_LINE_BYTES = 4 * 1024
MAX_TRAILER_BYTES = 16 * 1024
# 16 hex digits count 2**64 bytes: a chunk size past that cannot be real.
MAX_CHUNK_SIZE_DIGITS = 16
# As h11: 20 decimal digits are a billion terabytes.
MAX_CONTENT_LENGTH_DIGITS = 20

_METHOD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_FIELD_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A field value: visible bytes, obs-text, spaces and tabs (RFC 9110 §5.5).
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_HEX = re.compile(rb"[0-9A-Fa-f]+")
# A byte no field line may hold: controls other than HTAB. In a line split off the head
# at its CRLFs, a CR or LF is a bare one.
_LINE_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# The same but CR and LF, for a whole head: its CRs and LFs are counted instead (a
# pattern looking around every byte for a bare one cost more than the rest of a parse).
_HEAD_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Response field names the app wrote before, checked once (apps write the same few).
_WRITTEN_NAMES: set[bytes] = set()
_FRAMING_FIELDS = frozenset(
    (b"host", b"content-length", b"transfer-encoding", b"connection", b"expect", b"upgrade")
)
# Field names seen before, as sent -> lower-cased (clients send the same few names).
MAX_KEPT_NAMES = 512
_NAMES: dict[bytes, bytes] = {}
# Request lines read before (clients send the same few: POST /v1/chat/completions), each
# kept only once it was read and found valid. A line with a query string rarely repeats
# and is never kept, so ids in query strings cannot fill the table.
MAX_KEPT_REQUEST_LINES = 256
MAX_KEPT_LINE_BYTES = 256
_REQUEST_LINES: dict[bytes, tuple[str, bytes, str]] = {}


class BadRequest(Exception):
    """Bytes that are not an HTTP/1.1 request this server serves: answer ``status``
    (400, 413 for a body past a limit, 431, 501 or 505) with ``message`` and close."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@immutable(kw_only=True)
class RequestHead:
    """A request head as ASGI wants it: ``headers`` with lower-cased names, in order.

    ``body`` is ``"none"``, ``"length"`` (``length`` bytes) or ``"chunked"``;
    ``keep_alive`` whether the client lets the connection carry another request;
    ``expect_continue`` whether it waits for ``100 Continue`` before sending its body;
    ``upgrade`` the protocol it asks to switch to (lower-cased), else ``b""``.
    """

    method: str
    target: bytes
    http_version: str
    headers: list[tuple[bytes, bytes]]
    body: str
    length: int = 0
    keep_alive: bool = True
    expect_continue: bool = False
    upgrade: bytes = b""

    @property
    def path(self) -> bytes:
        """The target's path, without its query."""
        return self.target.partition(b"?")[0]

    @property
    def query(self) -> bytes:
        return self.target.partition(b"?")[2]


_ASGI = {"version": "3.0", "spec_version": "2.3"}


def asgi_scope(
    head: RequestHead,
    kind: str,
    client: tuple[str, int] | None,
    server: tuple[str, int] | None,
    extensions: dict[str, Any],
) -> dict[str, Any]:
    """The ASGI connection scope of the request ``head``, ``kind`` "http" or "websocket",
    from ``client`` to ``server`` (host and port each), with the server's ``extensions``."""
    path = head.path
    return {
        "type": kind,
        "asgi": _ASGI,
        "http_version": head.http_version,
        "method": head.method,
        "scheme": "http" if kind == "http" else "ws",
        "path": unquote(path.decode("latin-1")),
        "raw_path": path,
        "query_string": head.query,
        "root_path": "",
        "headers": head.headers,
        "client": client,
        "server": server,
        "extensions": extensions,
    }


def content_length(headers: list[tuple[bytes, bytes]]) -> int:
    """The Content-Length among an app's response ``headers`` (0 without one)."""
    for name, value in headers:
        if name.lower() == b"content-length":
            return int(value)
    return 0


def find_head_end(buffer: bytes | bytearray, start: int = 0) -> int:
    """Where the head at the front of ``buffer`` ends (past its blank line), or -1 while
    it is incomplete; searching from ``start`` (a previous call's ``len(buffer) - 3``).
    Raises :class:`BadRequest` (431) past :data:`MAX_HEAD_BYTES`, and (400) for a head
    whose lines end with a bare LF."""
    end = buffer.find(b"\r\n\r\n", start)
    if end >= 0:
        end += 4
        if end > MAX_HEAD_BYTES:
            raise BadRequest(f"request head over {MAX_HEAD_BYTES} bytes", 431)
        return end
    if len(buffer) > MAX_HEAD_BYTES:
        raise BadRequest(f"request head over {MAX_HEAD_BYTES} bytes", 431)
    if buffer.find(b"\n\n", max(0, start - 1)) >= 0 or buffer.find(b"\n\r\n", start) >= 0:
        raise BadRequest("request head lines must end with CRLF, not a bare LF")
    return -1


def parse_request_head(head: bytes) -> RequestHead:
    """The request in ``head`` (as :func:`find_head_end` delimited it, blank line
    included). Raises :class:`BadRequest` naming what is wrong."""
    lines = head[:-4].split(b"\r\n")
    method, target, version = _request_line(lines[0])
    if len(lines) - 1 > MAX_HEADERS:
        raise BadRequest(f"more than {MAX_HEADERS} header fields", 431)
    # Every CR and LF is one of the head's CRLFs: the lines' separators and the two at
    # its end (a bare one in the request line failed it above).
    crlfs = len(lines) + 1
    if (
        _HEAD_CONTROL.search(head, len(lines[0]), len(head) - 4)
        or head.count(b"\r") != crlfs
        or head.count(b"\n") != crlfs
    ):
        _refuse_fields(lines)
    headers: list[tuple[bytes, bytes]] = []
    framing: list[tuple[bytes, bytes]] = []  # the fields the server itself reads
    names = _NAMES
    for line in lines[1:]:
        raw_name, colon, value = line.partition(b":")
        name = names.get(raw_name) if colon else None  # a line without one is no field
        if name is None:
            if not colon or not _FIELD_NAME.fullmatch(raw_name):
                number = lines.index(line, 1)  # the first such line: those before it parsed
                if line[:1] in (b" ", b"\t"):
                    raise BadRequest(f"header line {number} is folded (obsolete line folding)")
                raise BadRequest(f"header line {number} is not a 'name: value' field")
            name = raw_name.lower()
            if len(names) < MAX_KEPT_NAMES:
                names[raw_name] = name
        value = value.strip(b" \t")
        headers.append((name, value))
        if name in _FRAMING_FIELDS:
            framing.append((name, value))
    hosts = 0
    lengths: set[bytes] = set()
    codings: list[bytes] = []
    connection: list[bytes] = []
    expect = b""
    upgrade = b""
    for name, value in framing:
        if name == b"host":
            hosts += 1
        elif name == b"content-length":
            lengths.update(_list_items(value))
        elif name == b"transfer-encoding":
            codings.extend(item.lower() for item in _list_items(value))
        elif name == b"connection":
            connection.extend(item.lower() for item in _list_items(value))
        elif name == b"expect":
            expect = value.lower()
        elif name == b"upgrade":
            upgrade = value.lower()
    if version == "1.1" and hosts != 1:
        raise BadRequest(
            "HTTP/1.1 needs exactly one Host header" if hosts else "missing Host header"
        )
    body, length = _body_framing(lengths, codings)
    keep_alive = b"close" not in connection if version == "1.1" else b"keep-alive" in connection
    return RequestHead(
        method=method,
        target=target,
        http_version=version,
        headers=headers,
        body=body,
        length=length,
        keep_alive=keep_alive,
        expect_continue=version == "1.1" and expect == b"100-continue",
        upgrade=upgrade if b"upgrade" in connection else b"",
    )


def _list_items(value: bytes) -> list[bytes]:
    """The items of a comma-separated field value, trimmed (nearly always just one)."""
    if b"," not in value:
        return [value]
    return [part.strip(b" \t") for part in value.split(b",")]


def _refuse_fields(lines: list[bytes]) -> NoReturn:
    """Name the first field line holding a byte no field may hold, and refuse it."""
    for line in lines[1:]:
        if _LINE_CONTROL.search(line) or not _FIELD_VALUE.fullmatch(line.partition(b":")[2]):
            raise BadRequest(f"header {_shown(line.partition(b':')[0])} holds a control character")
    raise BadRequest("a header line holds a control character")


def _request_line(line: bytes) -> tuple[str, bytes, str]:
    known = _REQUEST_LINES.get(line)
    if known is not None:
        return known
    parts = line.split(b" ")
    if len(parts) != 3 or not _METHOD.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        raise BadRequest("malformed request line")
    version = parts[2]
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if re.fullmatch(rb"HTTP/[0-9](\.[0-9])?", version):
            raise BadRequest("only HTTP/1.0 and HTTP/1.1 are served here", 505)
        raise BadRequest("malformed request line")
    read = parts[0].decode("ascii"), parts[1], version[5:].decode("ascii")
    if (
        len(_REQUEST_LINES) < MAX_KEPT_REQUEST_LINES
        and len(line) <= MAX_KEPT_LINE_BYTES
        and b"?" not in parts[1]
    ):
        _REQUEST_LINES[line] = read
    return read


def _body_framing(lengths: set[bytes], codings: list[bytes]) -> tuple[str, int]:
    if codings:
        if codings != [b"chunked"]:
            raise BadRequest("only Transfer-Encoding: chunked is supported", 501)
        return "chunked", 0
    if not lengths:
        return "none", 0
    found = lengths.pop()
    if lengths:
        raise BadRequest("Content-Length values disagree")
    if not found.isdigit() or len(found) > MAX_CONTENT_LENGTH_DIGITS:
        raise BadRequest("Content-Length is not a number of bytes")
    size = int(found)
    return ("length", size) if size else ("none", 0)


def _shown(name: bytes) -> str:
    """A field name for a message, bounded; a byte no token holds is shown escaped (a
    name on a refused line was never checked)."""
    return repr(name[:40].decode("ascii", "backslashreplace"))


class ChunkedBody:
    """Decodes a ``Transfer-Encoding: chunked`` request body. Chunk extensions are
    ignored and the trailer section is read and dropped; each line ends with CRLF."""

    __slots__ = ("_after_data", "_remaining", "_trailing", "done")

    def __init__(self) -> None:
        self._remaining = 0  # data bytes of the current chunk still due
        self._after_data = False  # the CRLF closing a chunk's data is still due
        self._trailing = False  # past the last chunk: trailer lines are due
        self.done = False

    def decode(self, buffer: bytearray) -> bytes:
        """Take every body byte ``buffer`` holds off its front and return them; what is
        left in ``buffer`` is an incomplete framing line or the bytes after the body
        (once :attr:`done`). Raises :class:`BadRequest`."""
        pieces: list[bytes] = []
        while buffer and not self.done:
            if self._remaining:
                taken = bytes(buffer[: self._remaining])
                del buffer[: self._remaining]
                self._remaining -= len(taken)
                self._after_data = not self._remaining
                pieces.append(taken)
                continue
            if self._after_data:
                if buffer[:2] != b"\r\n"[: len(buffer)]:
                    raise BadRequest("chunked body: chunk data not followed by CRLF")
                if len(buffer) < 2:
                    break
                del buffer[:2]
                self._after_data = False
                continue
            end = buffer.find(b"\r\n")
            if end < 0:
                limit = MAX_TRAILER_BYTES if self._trailing else MAX_CHUNK_LINE_BYTES
                if len(buffer) > limit:
                    raise BadRequest("chunked body: framing line too long")
                break
            line = bytes(buffer[:end])
            del buffer[: end + 2]
            if self._trailing:
                self.done = not line
            else:
                self._remaining = _chunk_size(line)
                self._trailing = not self._remaining
        return b"".join(pieces)


def _chunk_size(line: bytes) -> int:
    digits = line.partition(b";")[0].rstrip(b" \t")
    if len(digits) > MAX_CHUNK_SIZE_DIGITS or not _HEX.fullmatch(digits):
        raise BadRequest("chunked body: malformed chunk size line")
    return int(digits, 16)


# ---- responses ---------------------------------------------------------------------------

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_date_second = -1
_date_field = b""


def date_field() -> bytes:
    """``date: <IMF-fixdate>\\r\\n`` for the current second (formatted once a second)."""
    global _date_second, _date_field
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_field = b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
    return _date_field


@immutable
class ResponseFraming:
    """How a response body goes out: ``"length"`` (as the app's Content-Length said),
    ``"chunked"``, ``"close"`` (HTTP/1.0 without a length: the body ends with the
    connection) or ``"none"`` (HEAD, 1xx, 204, 304); and whether the connection is kept."""

    kind: str
    keep_alive: bool


def response_head(
    status: int,
    headers: list[tuple[bytes, bytes]],
    request: RequestHead,
    *,
    keep_alive: bool,
) -> tuple[bytes, ResponseFraming]:
    """The head of a response to ``request`` with the app's ``status`` and ``headers``
    (a ``date`` field added, and ``transfer-encoding: chunked`` when the app gave no
    Content-Length on HTTP/1.1), and how its body is framed. ``keep_alive`` is the
    server's own wish (false while shutting down or after an unread body); the
    connection is kept only if the request and the app's headers allow it too.
    Raises ValueError for a header that would break the head."""
    has_length = False
    close = not keep_alive or not request.keep_alive
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"")), date_field()]
    values: list[bytes] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            has_length = True
        elif _written_by_the_server(lowered, value):
            close = close or lowered == b"connection"  # written once, below
            continue
        if type(name) is not bytes or name not in _WRITTEN_NAMES:
            if not _FIELD_NAME.fullmatch(name):
                _refuse_header(headers)
            if type(name) is bytes and len(_WRITTEN_NAMES) < MAX_KEPT_NAMES:
                _WRITTEN_NAMES.add(name)
        values.append(value)
        parts += (name, b": ", value, b"\r\n")
    # Which bytes a value may hold is a rule per byte: the values are checked together.
    if not _FIELD_VALUE.fullmatch(b"".join(values)):
        _refuse_header(headers)
    no_body = request.method == "HEAD" or status in (204, 304) or status < 200
    if no_body or has_length:
        kind = "none" if no_body else "length"
    elif request.http_version == "1.1":
        kind = "chunked"
        parts.append(b"transfer-encoding: chunked\r\n")
    else:
        kind, close = "close", True
    if close:
        parts.append(b"connection: close\r\n")
    elif request.http_version == "1.0":
        parts.append(b"connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts), ResponseFraming(kind, keep_alive=not close)


def _written_by_the_server(lowered: bytes, value: bytes) -> bool:
    """Whether an app's header (``lowered``: its name lower-cased) is one the server
    decides and writes itself, dropping the app's: Transfer-Encoding, Date and
    ``Connection: close``."""
    if lowered == b"connection":
        return b"close" in value.lower()
    return lowered in (b"transfer-encoding", b"date")


def _refuse_header(headers: list[tuple[bytes, bytes]]) -> NoReturn:
    """Name the first header, in order, that would break the head, and refuse it (those
    the server writes itself are dropped, never refused)."""
    for name, value in headers:
        if _written_by_the_server(name.lower(), value):
            continue
        if not _FIELD_NAME.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise ValueError(f"response header {name[:40]!r} cannot be written")
    raise ValueError("a response header cannot be written")


_PLACEHOLDER = RequestHead(method="GET", target=b"/", http_version="1.1", headers=[], body="none")


def refusal(bad: BadRequest, request: RequestHead | None) -> bytes:
    """The whole response refusing ``request`` (None: its head could not be read) for
    ``bad``: its status, an OpenAI-shaped error naming the problem (code
    ``bad_http_request``, or ``server_error`` for a 5xx), a fresh
    ``x-oswitch-request-id`` and ``connection: close``."""
    client_fault = bad.status < 500
    body = encode(
        {
            "error": {
                "message": bad.message,
                "type": "invalid_request_error" if client_fault else "server_error",
                "param": None,
                "code": "bad_http_request" if client_fault else "server_error",
            }
        }
    )
    request = request or _PLACEHOLDER
    head, _ = response_head(
        bad.status,
        [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"x-oswitch-request-id", f"req_{secrets.token_hex(10)}".encode()),
        ],
        request,
        keep_alive=False,
    )
    return head if request.method == "HEAD" else head + body
