"""Differential tests: the sidecar server's HTTP/1.1 request reading against h11's.

A corpus of valid and broken request heads goes to the sans-IO ``oswitch.sidecar.h1``
and to h11 as a server. Both must read the same method, target, version, header names
and body framing, or both must refuse. Where oswitch differs from h11 on purpose,
``DIFFERENCES`` names the case and says why (always stricter: a lenient reading of a
request is how smuggling starts). Chunked request bodies are decoded split at every byte
boundary and at hypothesis-chosen points, against h11's ``Data`` events.
"""

from __future__ import annotations

from typing import Any

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oswitch.sidecar import h1


def request(*lines: bytes, line: bytes = b"GET /v1/models HTTP/1.1") -> bytes:
    return b"".join(part + b"\r\n" for part in (line, *lines)) + b"\r\n"


HOST = b"Host: 127.0.0.1:8787"
POST = b"POST /v1/chat/completions HTTP/1.1"

CORPUS: dict[str, bytes] = {
    "get": request(HOST),
    "query": request(HOST, line=b"GET /v1/models?limit=1&x=%20 HTTP/1.1"),
    "post-length": request(
        HOST, b"Content-Type: application/json", b"Content-Length: 17", line=POST
    ),
    "length-zero": request(HOST, b"Content-Length: 0", line=POST),
    "length-leading-zero": request(HOST, b"Content-Length: 007", line=POST),
    "length-repeated": request(HOST, b"Content-Length: 5", b"content-length: 5", line=POST),
    "length-list-same": request(HOST, b"Content-Length: 5, 5", line=POST),
    "chunked": request(HOST, b"Transfer-Encoding: chunked", line=POST),
    "chunked-upper": request(HOST, b"Transfer-Encoding: CHUNKED", line=POST),
    "both-framings": request(HOST, b"Content-Length: 5", b"Transfer-Encoding: chunked", line=POST),
    "http10": request(line=b"GET / HTTP/1.0"),
    "http10-keep-alive": request(b"Connection: keep-alive", line=b"GET / HTTP/1.0"),
    "close": request(HOST, b"Connection: close"),
    "expect": request(HOST, b"Expect: 100-continue", b"Content-Length: 3", line=POST),
    "upgrade": request(HOST, b"Connection: Upgrade", b"Upgrade: websocket"),
    "obs-text-value": request(HOST, b"X-Name: caf\xe9"),
    "tabs-in-value": request(HOST, b"X-Name: \ta\tb \t"),
    "empty-value": request(HOST, b"X-Empty:"),
    "empty-host": request(b"Host:"),
    "asterisk": request(HOST, line=b"OPTIONS * HTTP/1.1"),
    "absolute-form": request(HOST, line=b"GET http://127.0.0.1/v1/models HTTP/1.1"),
    "many-methods": request(HOST, line=b"PROPFIND / HTTP/1.1"),
    # -- broken ---------------------------------------------------------------------------
    "te-gzip": request(HOST, b"Transfer-Encoding: gzip, chunked", line=POST),
    "te-twice": request(
        HOST, b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked", line=POST
    ),
    "te-identity": request(HOST, b"Transfer-Encoding: identity", line=POST),
    "length-differs": request(HOST, b"Content-Length: 5", b"Content-Length: 6", line=POST),
    "length-list-differs": request(HOST, b"Content-Length: 5, 6", line=POST),
    "length-negative": request(HOST, b"Content-Length: -5", line=POST),
    "length-plus": request(HOST, b"Content-Length: +5", line=POST),
    "length-hex": request(HOST, b"Content-Length: 0x5", line=POST),
    "length-empty": request(HOST, b"Content-Length:", line=POST),
    "length-huge": request(HOST, b"Content-Length: 123456789012345678901", line=POST),
    "no-host": request(),
    "two-hosts": request(HOST, b"Host: other"),
    "space-before-colon": request(b"Host : 127.0.0.1"),
    "empty-name": request(HOST, b": value"),
    "no-colon": request(HOST, b"no colon here"),
    # The same name just seen with a colon (names seen before are kept, lower-cased).
    "no-colon-seen-name": request(HOST, b"X-Seen: 1", b"X-Seen"),
    "bad-name": request(HOST, b"x(y): 1"),
    "nul-in-value": request(HOST, b"X: a\x00b"),
    "cr-in-value": request(HOST, b"X: a\rb"),
    "cr-ending-value": request(HOST, b"X: a\r"),
    "cr-in-name": request(HOST, b"X\r: a"),
    "cr-in-host": request(b"Host: 127.0.0.1\r:8787"),
    "cr-in-target": request(HOST, line=b"GET /a\rb HTTP/1.1"),
    "lowercase-version": request(HOST, line=b"GET / http/1.1"),
    "no-version": request(HOST, line=b"GET /"),
    "double-space": request(HOST, line=b"GET  / HTTP/1.1"),
    "space-in-target": request(HOST, line=b"GET /a b HTTP/1.1"),
    "control-in-target": request(HOST, line=b"GET /a\x01b HTTP/1.1"),
    "non-ascii-target": request(HOST, line=b"GET /caf\xe9 HTTP/1.1"),
    "bad-method": request(HOST, line=b"G(T / HTTP/1.1"),
    "leading-blank-line": b"\r\n" + request(HOST),
}

# Where oswitch refuses what h11 accepts, and why; the status oswitch answers.
DIFFERENCES: dict[str, tuple[int, str]] = {
    "http20": (505, "only HTTP/1.0 and 1.1 are served; h11 reads any HTTP/x.y head"),
    "http12": (505, "as above"),
    "obs-fold": (400, "RFC 9112 §5.2 lets a server refuse obsolete folding; h11 unfolds"),
    "bare-lf": (400, "a bare LF line end is a smuggling vector; h11 accepts it"),
    "mixed-lf": (400, "as above, inside a head that ends with CRLF"),
    "del-in-value": (400, "DEL is no field-vchar (RFC 9110 §5.5); h11 lets it through"),
}
CORPUS.update(
    {
        "http20": request(HOST, line=b"GET / HTTP/2.0"),
        "http12": request(HOST, line=b"GET / HTTP/1.2"),
        "obs-fold": request(HOST, b"X-Folded: a", b" b"),
        "bare-lf": b"GET / HTTP/1.1\nHost: a\n\n",
        "mixed-lf": b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
        "del-in-value": request(HOST, b"X: a\x7fb"),
    }
)


def ours(raw: bytes) -> tuple[Any, ...]:
    try:
        end = h1.find_head_end(raw)
        assert end == len(raw), "the head ends where the corpus says"
        head = h1.parse_request_head(raw[:end])
    except h1.BadRequest as refused:
        return ("refused", refused.status)
    names = tuple(name for name, _ in head.headers)
    return ("read", head.method, head.target, head.http_version, names, head.body, head.length)


def theirs(raw: bytes) -> tuple[Any, ...]:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(raw)
    try:
        event = connection.next_event()
    except h11.RemoteProtocolError as refused:
        return ("refused", refused.error_status_hint)
    assert isinstance(event, h11.Request)
    names = tuple(dict.fromkeys(name for name, _ in event.headers))
    codings = [value for name, value in event.headers if name == b"transfer-encoding"]
    lengths = [int(value) for name, value in event.headers if name == b"content-length"]
    if codings:
        body, length = "chunked", 0
    elif lengths and lengths[0]:
        body, length = "length", lengths[0]
    else:
        body, length = "none", 0
    return (
        "read",
        event.method.decode(),
        event.target,
        event.http_version.decode(),
        names,
        body,
        length,
    )


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_requests_read_as_h11_reads_them(case: str) -> None:
    """Each request head is read as h11 reads it (method, target, version, header names,
    body framing), or refused by both; the listed differences are refused by oswitch
    alone, with the stated status."""
    raw = CORPUS[case]
    found, reference = ours(raw), theirs(raw)
    if case in DIFFERENCES:
        assert found == ("refused", DIFFERENCES[case][0])
        assert reference[0] == "read"
        return
    if reference[0] == "refused":
        assert found[0] == "refused", f"h11 refuses {case}, oswitch read {found}"
        return
    # Repeated header names are kept by oswitch as sent; h11 merges Content-Length.
    assert found[0] == "read", f"h11 reads {case}, oswitch refused it with {found[1]}"
    assert found[1:4] == reference[1:4]
    assert tuple(dict.fromkeys(found[4])) == reference[4]
    assert found[5:] == reference[5:]


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        # Controls h11 refuses too (it lets \x01-\x1f and DEL through; oswitch does not).
        st.lists(st.sampled_from([b"a", b" ", b"\t", b"\r", b"\x00", b"\x0b", b"\x0c"])).map(
            b"".join
        ),
        min_size=1,
        max_size=4,
    )
)
def test_control_bytes_anywhere_in_values_are_refused_as_h11_refuses_them(
    values: list[bytes],
) -> None:
    """A head whose values hold CRs (bare, doubled, last before the line's end), NUL, VT
    or FF at any place is read or refused as h11 reads or refuses it."""
    raw = request(HOST, *(b"X-%d: %s" % (number, value) for number, value in enumerate(values)))
    found, reference = ours(raw), theirs(raw)
    assert found[0] == reference[0], (raw, found, reference)


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (
            request(HOST, b"Transfer-Encoding: gzip", line=POST),
            501,
            "only Transfer-Encoding: chunked is supported",
        ),
        (request(HOST, line=b"GET / HTTP/3.0"), 505, "only HTTP/1.0 and HTTP/1.1 are served here"),
        (request(), 400, "missing Host header"),
        (request(HOST, b"Host: b"), 400, "HTTP/1.1 needs exactly one Host header"),
        (
            request(HOST, b"X-Folded: a", b" b"),
            400,
            "header line 3 is folded (obsolete line folding)",
        ),
        (request(HOST, b"X: a\x00b"), 400, "header 'X' holds a control character"),
        (request(HOST, b"X\xff: \x01"), 400, "header 'X\\\\xff' holds a control character"),
        (request(HOST, b"X-Seen: 1", b"X-Seen"), 400, "header line 3 is not a 'name: value' field"),
        (request(HOST, b"Content-Length: 1, 2", line=POST), 400, "Content-Length values disagree"),
        (
            request(HOST, b"Content-Length: -1", line=POST),
            400,
            "Content-Length is not a number of bytes",
        ),
        (request(HOST, line=b"GET /a b HTTP/1.1"), 400, "malformed request line"),
        (
            request(HOST, *[b"X-Many: 1"] * h1.MAX_HEADERS),
            431,
            f"more than {h1.MAX_HEADERS} header fields",
        ),
    ],
)
def test_refusals_name_what_is_wrong(raw: bytes, status: int, message: str) -> None:
    """Each refusal carries its status and a message naming the fault (never a value)."""
    with pytest.raises(h1.BadRequest) as refused:
        h1.parse_request_head(raw[: h1.find_head_end(raw)])
    assert (refused.value.status, refused.value.message) == (status, message)


def test_a_request_line_read_before_reads_the_same_and_a_refused_one_is_refused_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Request lines are kept once read (clients repeat the same few): a kept line reads
    as it did, a refused line is never kept (refused again, with the same message), a
    line with a query string is read but not kept, and no more than
    MAX_KEPT_REQUEST_LINES are kept, however many a client invents."""
    monkeypatch.setattr(h1, "_REQUEST_LINES", {})
    head = request(HOST)[: h1.find_head_end(request(HOST))]
    first = h1.parse_request_head(head)
    assert h1.parse_request_head(head) == first
    assert len(h1._REQUEST_LINES) == 1
    for _ in range(2):
        queried = h1.parse_request_head(b"GET /v1/models?id=7 HTTP/1.1\r\n" + HOST + b"\r\n\r\n")
        assert queried.target == b"/v1/models?id=7"
    assert len(h1._REQUEST_LINES) == 1
    bad = b"POST /a b HTTP/1.1\r\n" + HOST + b"\r\n\r\n"
    for _ in range(2):
        with pytest.raises(h1.BadRequest, match="malformed request line"):
            h1.parse_request_head(bad)
    for number in range(2 * h1.MAX_KEPT_REQUEST_LINES):
        line = b"GET /path%d HTTP/1.1\r\n" % number
        assert h1.parse_request_head(line + HOST + b"\r\n\r\n").target == b"/path%d" % number
    assert len(h1._REQUEST_LINES) == h1.MAX_KEPT_REQUEST_LINES


def test_a_head_past_the_limit_is_431_however_it_arrives() -> None:
    """A head longer than MAX_HEAD_BYTES is refused 431 whether or not its end came."""
    long_field = b"X-Long: " + b"a" * h1.MAX_HEAD_BYTES
    whole = request(HOST, long_field)
    for buffer in (whole, whole[: h1.MAX_HEAD_BYTES + 1]):
        with pytest.raises(h1.BadRequest) as refused:
            h1.find_head_end(buffer)
        assert refused.value.status == 431
    assert h1.find_head_end(whole[:100]) == -1


def test_the_head_end_is_found_wherever_reads_split_it() -> None:
    """Searching again from ``len(buffer) - 3`` after each read finds the same end."""
    raw = request(HOST, b"Content-Length: 2", line=POST) + b"{}"
    want = len(raw) - 2
    for split in range(1, len(raw)):
        first = raw[:split]
        end = h1.find_head_end(first)
        if end < 0:
            end = h1.find_head_end(raw, max(0, len(first) - 3))
        assert end == want, split


# ---- chunked request bodies ----------------------------------------------------------------

CHUNKED_HEAD = request(HOST, b"Transfer-Encoding: chunked", line=POST)
BODIES = {
    "plain": b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    "extensions": b"5;name=value\r\nhello\r\n0;last\r\n\r\n",
    "upper-hex": b"A\r\n0123456789\r\n0\r\n\r\n",
    "trailers": b"2\r\nok\r\n0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n",
    "size-whitespace": b"2 \r\nok\r\n0\r\n\r\n",
    "pipelined": b"2\r\nok\r\n0\r\n\r\nGET / HTTP/1.1\r\n",
}


def decoded_by_h11(raw: bytes) -> bytes:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(CHUNKED_HEAD + raw)
    assert isinstance(connection.next_event(), h11.Request)
    data = b""
    while True:
        event = connection.next_event()
        if isinstance(event, h11.Data):
            data += event.data
        elif isinstance(event, h11.EndOfMessage):
            return data
        else:
            raise AssertionError(event)


def decode_in_pieces(raw: bytes, cuts: list[int]) -> tuple[bytes, bytes]:
    """(body, what is left after it) fed to ChunkedBody in pieces cut at ``cuts``."""
    decoder = h1.ChunkedBody()
    buffer = bytearray()
    body = b""
    for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        buffer += raw[start:end]
        body += decoder.decode(buffer)
    assert decoder.done
    return body, bytes(buffer)


@pytest.mark.parametrize("case", sorted(BODIES))
def test_chunked_bodies_decode_as_h11_at_every_split(case: str) -> None:
    """A chunked body gives h11's data, and leaves the bytes after it, however it is split."""
    raw = BODIES[case]
    expected = decoded_by_h11(raw)
    rest = b"GET / HTTP/1.1\r\n" if case == "pipelined" else b""
    for split in range(len(raw) + 1):
        assert decode_in_pieces(raw, [split]) == (expected, rest), split
    assert decode_in_pieces(raw, list(range(1, len(raw)))) == (expected, rest)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_chunked_bodies_decode_at_any_cuts(data: st.DataObject) -> None:
    """Any body in any number of chunks, cut anywhere, decodes to itself."""
    pieces = data.draw(st.lists(st.binary(min_size=1, max_size=40), max_size=6))
    raw = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(raw) - 1)), max_size=8)))
    assert decode_in_pieces(raw, cuts) == (b"".join(pieces), b"")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"zz\r\n", "chunked body: malformed chunk size line"),
        (b"-1\r\n", "chunked body: malformed chunk size line"),
        (b"\r\n", "chunked body: malformed chunk size line"),
        (b"1" * 17 + b"\r\n", "chunked body: malformed chunk size line"),
        (b"2\r\nokXX", "chunked body: chunk data not followed by CRLF"),
        (b"1" * (h1.MAX_CHUNK_LINE_BYTES + 1), "chunked body: framing line too long"),
        (b"0\r\n" + b"X: " + b"a" * h1.MAX_TRAILER_BYTES, "chunked body: framing line too long"),
    ],
)
def test_broken_chunked_bodies_are_refused(raw: bytes, message: str) -> None:
    """Malformed or unbounded chunk framing is refused 400 with what is wrong."""
    with pytest.raises(h1.BadRequest) as refused:
        h1.ChunkedBody().decode(bytearray(raw))
    assert (refused.value.status, refused.value.message) == (400, message)


# ---- response heads -------------------------------------------------------------------------


def head_of(raw: bytes) -> h1.RequestHead:
    return h1.parse_request_head(raw[: h1.find_head_end(raw)])


@pytest.mark.parametrize(
    ("raw", "headers", "kind", "keep"),
    [
        (request(HOST), [(b"content-length", b"2")], "length", True),
        (request(HOST), [], "chunked", True),
        (request(HOST, b"Connection: close"), [(b"content-length", b"2")], "length", False),
        (request(HOST), [(b"content-length", b"2"), (b"connection", b"close")], "length", False),
        (request(line=b"GET / HTTP/1.0"), [], "close", False),
        (
            request(b"Connection: keep-alive", line=b"GET / HTTP/1.0"),
            [(b"content-length", b"2")],
            "length",
            True,
        ),
        (request(HOST, line=b"HEAD / HTTP/1.1"), [(b"content-length", b"2")], "none", True),
    ],
)
def test_response_heads_are_read_back_by_h11(
    raw: bytes, headers: list[tuple[bytes, bytes]], kind: str, keep: bool
) -> None:
    """What response_head writes, h11 as a client reads back: the status, the app's
    headers, a date, the framing it chose and whether the connection is kept."""
    request_head = head_of(raw)
    written, framing = h1.response_head(200, headers, request_head, keep_alive=True)
    assert (framing.kind, framing.keep_alive) == (kind, keep)
    client = h11.Connection(h11.CLIENT)
    method = request_head.method.encode()
    client.send(h11.Request(method=method, target=b"/", headers=[(b"host", b"a")]))
    client.send(h11.EndOfMessage())
    client.receive_data(written + (b"ok" if kind in ("length", "close") else b""))
    response = client.next_event()
    assert isinstance(response, h11.Response)
    assert response.status_code == 200
    names = [name for name, _ in response.headers]
    assert b"date" in names
    for name, value in headers:
        assert (name, value) in response.headers
    if kind == "chunked":
        assert (b"transfer-encoding", b"chunked") in response.headers
    assert ((b"connection", b"close") in response.headers) is (not keep)


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x-bad", b"a\r\nx-injected: 1")],
        [(b"content-type", b"text/plain"), (b"x-bad", b"a\x00"), (b"x-ok", b"fine")],
        [(b"x-ok", b"fine"), (b"x-bad", b"\n")],
        [(b"x bad", b"fine")],
    ],
)
def test_a_response_header_that_would_break_the_head_is_refused(
    headers: list[tuple[bytes, bytes]],
) -> None:
    """A header value with CR, LF or NUL, or a name that is no token, is never written
    (no response splitting by the app), and the refusal names that header."""
    bad = next(name for name, _ in headers if name.startswith(b"x") and name != b"x-ok")
    with pytest.raises(ValueError) as refused:
        h1.response_head(200, headers, head_of(request(HOST)), keep_alive=True)
    assert str(refused.value) == f"response header {bad!r} cannot be written"


def test_a_refusal_names_the_first_header_that_would_break_the_head() -> None:
    """With several headers that cannot be written, the first of them is named,
    whether its value or its name is what is wrong."""
    head = head_of(request(HOST))
    for headers, first in (
        ([(b"x-first", b"bad\x00"), (b"bad name", b"fine")], b"x-first"),
        ([(b"bad name", b"fine"), (b"x-second", b"bad\x00")], b"bad name"),
    ):
        with pytest.raises(ValueError) as refused:
            h1.response_head(200, headers, head, keep_alive=True)
        assert str(refused.value) == f"response header {first!r} cannot be written"


def test_a_bytearray_header_name_is_written() -> None:
    """A header name an app gives as a bytearray is checked and written as bytes are."""
    written, _ = h1.response_head(
        200, [(bytearray(b"x-a"), b"1")], head_of(request(HOST)), keep_alive=True
    )
    assert b"\r\nx-a: 1\r\n" in written
