"""Differential tests: oswitch's HTTP/1.1 reading and writing against h11's.

A corpus of valid and broken responses goes, split at every byte boundary, one byte
at a time and at hypothesis-chosen points, to three readers: the sans-IO wire module
driven directly, the pool's own read loop (``Connection.read_head`` and ``_Body``
over a scripted stream, no sockets), and h11 as a client that has sent a POST. All
three must give the same events (status, reason, headers, body, trailers, whether the
connection may be reused, the bytes left after the response) or all must refuse.
Where oswitch differs from h11 on purpose, ``DIFFERENCES`` names the case and says why.
Request heads are checked the other way round: what the wire module writes, h11 as a
server reads back as sent, and what one refuses the other refuses.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import h11
import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from oswitch.transport import request_head, wire
from oswitch.transport.connection import Connection
from oswitch.transport.pool import _Body

# ---- the corpus ---------------------------------------------------------------------------


def head(*lines: bytes, status: bytes = b"HTTP/1.1 200 OK") -> bytes:
    return b"".join(line + b"\r\n" for line in (status, *lines)) + b"\r\n"


CHUNKED = b"transfer-encoding: chunked"


@attrs.frozen
class Case:
    """A response on the wire, and whether h11 (hence RFC 9112 as h11 reads it) accepts it."""

    id: str
    raw: bytes
    accepted: bool
    large: bool = False  # too long to split at every boundary


CORPUS = [
    # -- valid ---------------------------------------------------------------------------
    Case(
        "length",
        head(b"Content-Type: application/json", b"Content-Length: 11") + b'{"ok":true}',
        True,
    ),
    Case("length-zero", head(b"content-length: 0"), True),
    Case("length-leading-zero", head(b"content-length: 02") + b"ab", True),
    Case("length-repeated", head(b"content-length: 2", b"Content-Length: 2") + b"ab", True),
    Case("length-list-same", head(b"content-length: 2, 2") + b"ab", True),
    Case("length-then-more-bytes", head(b"content-length: 2") + b"abHTTP/1.1 200 OK\r\n", True),
    Case("chunked", head(CHUNKED) + b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", True),
    Case("chunked-upper-hex", head(CHUNKED) + b"A\r\n0123456789\r\n0\r\n\r\n", True),
    Case("chunked-coding-case", head(b"Transfer-Encoding: Chunked") + b"1\r\nx\r\n0\r\n\r\n", True),
    Case(
        "chunked-extensions",
        head(CHUNKED) + b'5;name=value;q="a;b"\r\nhello\r\n0;last\r\n\r\n',
        True,
    ),
    Case("chunked-ows-after-size", head(CHUNKED) + b"5 \t\r\nhello\r\n0\r\n\r\n", True),
    Case(
        "chunked-trailers",
        head(CHUNKED) + b"2\r\nab\r\n0\r\nX-Trailer: 1\r\nX-Other:  two \r\n\r\n",
        True,
    ),
    Case("chunked-trailers-bare-lf", head(CHUNKED) + b"2\r\nab\r\n0\r\nx-t: 1\n\n", True),
    Case("chunked-then-more-bytes", head(CHUNKED) + b"2\r\nab\r\n0\r\n\r\nNEXT", True),
    Case("chunked-empty", head(CHUNKED) + b"0\r\n\r\n", True),
    Case("until-close", head(b"content-type: text/plain") + b"all of this\r\n\r\nuntil EOF", True),
    Case("http10-until-close", b"HTTP/1.0 200 OK\r\n\r\nbye", True),
    Case("http10-length", head(b"content-length: 2", status=b"HTTP/1.0 200 OK") + b"ab", True),
    Case("http12-reads-as-11", head(b"content-length: 2", status=b"HTTP/1.2 200 OK") + b"ab", True),
    Case("connection-close", head(b"content-length: 2", b"Connection: close") + b"ab", True),
    Case(
        "connection-close-in-list",
        head(b"content-length: 2", b"connection: x, Close") + b"ab",
        True,
    ),
    Case("204", head(status=b"HTTP/1.1 204 No Content"), True),
    Case("204-then-bytes", head(status=b"HTTP/1.1 204 No Content") + b"junk", True),
    Case("304-with-length", head(b"content-length: 10", status=b"HTTP/1.1 304 Not Modified"), True),
    Case(
        "100-continue",
        head(status=b"HTTP/1.1 100 Continue") + head(b"content-length: 1") + b"x",
        True,
    ),
    Case(
        "103-then-100",
        head(b"link: </a>", status=b"HTTP/1.1 103 Early Hints")
        + head(status=b"HTTP/1.1 100 Continue")
        + head(b"content-length: 1")
        + b"x",
        True,
    ),
    Case("bare-lf-head", b"HTTP/1.1 200 OK\ncontent-length: 6\n\nab\r\n\r\n", True),
    Case("bare-lf-then-crlf-blank-line", b"HTTP/1.1 200 OK\ncontent-length: 2\n\r\nab", True),
    Case("obs-fold", head(b"x-folded: a", b"  b", b"\tc", b"content-length: 0"), True),
    Case("obs-fold-keeps-inner-space", head(b"x: a \t", b" b", b"content-length: 0"), True),
    Case("obs-fold-empty-continuation", head(b"x: a", b" ", b"content-length: 0"), True),
    Case("no-reason", head(b"content-length: 0", status=b"HTTP/1.1 200"), True),
    Case("empty-reason", head(b"content-length: 0", status=b"HTTP/1.1 200 "), True),
    Case("reason-with-spaces", head(b"content-length: 0", status=b"HTTP/1.1 200  Very\tOK "), True),
    Case("status-999", head(b"content-length: 0", status=b"HTTP/1.1 999 Odd"), True),
    Case("value-obs-text", head(b"x: caf\xe9", b"content-length: 0"), True),
    Case("value-other-controls", head(b"x: a\x01\x7fb", b"content-length: 0"), True),
    Case("value-no-space", head(b"x:y", b"content-length:0"), True),
    Case("value-empty", head(b"x:", b"content-length: 0"), True),
    Case(
        "head-40k", head(b"x-big: " + b"v" * 40_000, b"content-length: 1") + b"z", True, large=True
    ),
    # -- broken --------------------------------------------------------------------------
    Case("nothing", b"", False),
    Case("cut-status-line", b"HTTP/1.1 200 O", False),
    Case("cut-head", b"HTTP/1.1 200 OK\r\ncontent-le", False),
    Case("status-http2", head(status=b"HTTP/2 200 OK"), False),
    Case("status-lowercase", head(status=b"http/1.1 200 OK"), False),
    Case("status-two-digits", head(status=b"HTTP/1.1 20 OK"), False),
    Case("status-under-100", head(status=b"HTTP/1.1 099 Hmm"), False),
    Case("status-letters", head(status=b"HTTP/1.1 2x0 OK"), False),
    Case("status-tab", head(status=b"HTTP/1.1\t200 OK"), False),
    Case("status-two-spaces", head(status=b"HTTP/1.1  200 OK"), False),
    Case("status-nul-in-reason", head(status=b"HTTP/1.1 200 O\x00K"), False),
    Case("leading-blank-line", b"\r\n" + head(b"content-length: 0"), False),
    Case("header-no-colon", head(b"no colon here"), False),
    Case("header-space-before-colon", head(b"x : y"), False),
    Case("header-empty-name", head(b": y"), False),
    Case("header-bad-name", head(b"x(y): z"), False),
    Case("fold-at-start", head(b" x: y"), False),
    Case("value-nul", head(b"x: a\x00b", b"content-length: 0"), False),
    Case("value-cr", head(b"x: a\rb", b"content-length: 0"), False),
    Case("value-vt", head(b"x: a\x0bb", b"content-length: 0"), False),
    Case("value-ff", head(b"x: a\x0cb", b"content-length: 0"), False),
    Case("cr-cr-lf", head(b"x: a\r", b"content-length: 0"), False),
    Case("length-negative", head(b"content-length: -1"), False),
    Case("length-plus", head(b"content-length: +2") + b"ab", False),
    Case("length-hex", head(b"content-length: 0x2") + b"ab", False),
    Case("length-not-a-number", head(b"content-length: abc"), False),
    Case("length-empty", head(b"content-length:"), False),
    Case("length-conflicting-list", head(b"content-length: 2, 3") + b"abc", False),
    Case(
        "length-conflicting-fields",
        head(b"content-length: 2", b"content-length: 3") + b"abc",
        False,
    ),
    Case("length-02-and-2", head(b"content-length: 02", b"content-length: 2") + b"ab", False),
    Case("length-21-digits", head(b"content-length: " + b"1" * 21), False),
    Case("length-bad-on-204", head(b"content-length: x", status=b"HTTP/1.1 204 No Content"), False),
    Case("length-cut", head(b"content-length: 10") + b"short", False),
    Case("coding-gzip", head(b"transfer-encoding: gzip") + b"x", False),
    Case("coding-gzip-chunked", head(b"transfer-encoding: gzip, chunked") + b"0\r\n\r\n", False),
    Case("coding-chunked-twice", head(CHUNKED, CHUNKED) + b"0\r\n\r\n", False),
    Case("coding-identity", head(b"transfer-encoding: identity") + b"x", False),
    Case(
        "switching-protocols",
        head(b"upgrade: h2c", status=b"HTTP/1.1 101 Switching Protocols"),
        False,
    ),
    Case("interim-then-eof", head(status=b"HTTP/1.1 100 Continue"), False),
    Case(
        "interim-bad-header", head(b"no colon", status=b"HTTP/1.1 103 Early Hints") + head(), False
    ),
    Case("chunked-cut-in-data", head(CHUNKED) + b"5\r\nhello\r\n3\r\nwor", False),
    Case("chunked-cut-before-last", head(CHUNKED) + b"5\r\nhello\r\n", False),
    Case("chunked-cut-in-trailers", head(CHUNKED) + b"0\r\nx-t: 1\r\n", False),
    Case("chunked-no-crlf-after-data", head(CHUNKED) + b"5\r\nhelloXX0\r\n\r\n", False),
    Case("chunked-cr-only-after-data", head(CHUNKED) + b"5\r\nhello\r0\r\n\r\n", False),
    Case("chunked-not-hex", head(CHUNKED) + b"zz\r\n", False),
    Case("chunked-0x-prefix", head(CHUNKED) + b"0x5\r\nhello\r\n0\r\n\r\n", False),
    Case("chunked-negative", head(CHUNKED) + b"-5\r\nhello\r\n0\r\n\r\n", False),
    Case("chunked-empty-size", head(CHUNKED) + b"\r\nhello\r\n0\r\n\r\n", False),
    Case("chunked-space-before-size", head(CHUNKED) + b" 5\r\nhello\r\n0\r\n\r\n", False),
    Case("chunked-cr-cr-lf-size", head(CHUNKED) + b"5\r\r\nhello\r\n0\r\n\r\n", False),
    Case("chunked-size-past-eof", head(CHUNKED) + b"FFFFFFFFFFFFFFFFFFFF\r\nabc", False),
    Case("chunked-trailer-no-colon", head(CHUNKED) + b"0\r\nnot a field\r\n\r\n", False),
    Case("chunked-trailer-nul", head(CHUNKED) + b"0\r\nx: a\x00\r\n\r\n", False),
    Case("chunked-trailer-stray-cr", head(CHUNKED) + b"0\r\n\rx: 1\r\n\r\n", False),
    Case("head-over-64k", head(b"x-big: " + b"v" * 70_000), False, large=True),
    Case(
        "trailers-over-64k",
        head(CHUNKED) + b"0\r\n" + b"".join(b"x-%d: %s\r\n" % (i, b"v" * 1000) for i in range(70)),
        False,
        large=True,
    ),
    # -- where oswitch differs from h11 on purpose (see DIFFERENCES) ----------------------
    Case(
        "http10-keep-alive",
        head(b"content-length: 2", b"connection: keep-alive", status=b"HTTP/1.0 200 OK") + b"ab",
        True,
    ),
    Case("chunked-and-length", head(b"content-length: 5", CHUNKED) + b"2\r\nab\r\n0\r\n\r\n", True),
    Case("status-http20", head(status=b"HTTP/2.0 200 OK") + b"ab", True),
    Case("status-http09", head(b"content-length: 0", status=b"HTTP/0.9 200 OK"), True),
    Case("chunked-bare-lf-size-line", head(CHUNKED) + b"5\nhello\r\n0\r\n\r\n", False),
    Case("chunked-bare-lf-after-data", head(CHUNKED) + b"5\r\nhello\n0\r\n\r\n", False),
    Case("chunked-bare-lf-last-chunk", head(CHUNKED) + b"2\r\nab\r\n0\n\r\n", False),
    Case("chunked-space-before-extension", head(CHUNKED) + b"5 ;a=b\r\nhello\r\n0\r\n\r\n", False),
    Case("chunked-trailer-framing-field", head(CHUNKED) + b"0\r\ncontent-length: x\r\n\r\n", False),
    Case("chunked-17-hex-digits", head(CHUNKED) + b"00000000000000005\r\nhello\r\n0\r\n\r\n", True),
    Case(
        "chunked-10k-extension",
        head(CHUNKED) + b"5;" + b"e" * 10_000 + b"\r\nhello\r\n0\r\n\r\n",
        True,
        large=True,
    ),
]

# case id -> (how oswitch differs, why). "lenient": oswitch reads what h11 refuses;
# "stricter": oswitch refuses what h11 reads; "no-reuse" / "reuse": the same events, but
# oswitch does not / does keep the connection for another request.
DIFFERENCES = {
    "http10-keep-alive": (
        "reuse",
        "RFC 9112 §9.3 lets a client honour HTTP/1.0 keep-alive; h11 never reuses 1.0",
    ),
    "chunked-and-length": (
        "no-reuse",
        "both framings at once may be response splitting (RFC 9112 §6.3): read by "
        "Transfer-Encoding as h11 does, but never trust the connection afterwards",
    ),
    "status-http20": (
        "stricter",
        "another major version is not HTTP/1.x framing; h11 reads any d.d version",
    ),
    "status-http09": ("stricter", "HTTP/0.9 has no status line; a server sending one is broken"),
    "chunked-bare-lf-size-line": (
        "lenient",
        "a bare LF ends a line in heads (RFC 9112 §2.2, as h11 also reads them); "
        "oswitch reads chunked framing lines the same way",
    ),
    "chunked-bare-lf-after-data": ("lenient", "as for size lines: a bare LF ends the line"),
    "chunked-bare-lf-last-chunk": ("lenient", "as for size lines: a bare LF ends the line"),
    "chunked-space-before-extension": (
        "lenient",
        "RFC 9112 §7.1.1 allows whitespace (BWS) before ';'; h11 refuses it",
    ),
    "chunked-trailer-framing-field": (
        "lenient",
        "framing fields in trailers are not used for framing (RFC 9110 §6.5.1); oswitch "
        "parses trailer lines but does not interpret them, h11 validates Content-Length there",
    ),
    "chunked-17-hex-digits": (
        "stricter",
        f"a chunk size past {wire.MAX_CHUNK_SIZE_DIGITS} hex digits (2**64 bytes) cannot "
        "be real; h11 allows 20 digits",
    ),
    "chunked-10k-extension": (
        "stricter",
        f"a chunk size line is bounded at {wire.MAX_LINE_BYTES} bytes; h11 bounds it only "
        "by its buffer limit",
    ),
}


# ---- three readers -----------------------------------------------------------------------


@attrs.frozen
class Read:
    """Everything a reader made of a response: the final head, body, trailers, whether
    the connection may carry another request, and the bytes left after the response."""

    status: int
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    trailers: tuple[tuple[bytes, bytes], ...]
    keep_alive: bool
    leftover: bytes


REFUSED = "refused"
Outcome = Read | str


def as_h11_reports(fields: Sequence[tuple[bytes, bytes]]) -> tuple[tuple[bytes, bytes], ...]:
    """Fields as h11 reports them: names lower-cased, Content-Length given once (its
    single value), Transfer-Encoding lower-cased."""
    out: list[tuple[bytes, bytes]] = []
    seen_length = False
    for name, value in fields:
        name = name.lower()
        if name == b"content-length":
            if seen_length:
                continue
            seen_length = True
            value = value.split(b",")[0].strip()
        elif name == b"transfer-encoding":
            value = value.lower()
        out.append((name, value))
    return tuple(out)


def h11_read(pieces: Sequence[bytes]) -> Outcome:
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=wire.MAX_HEAD_BYTES)
    request = h11.Request(
        method="POST",
        target="/v1/chat/completions",
        headers=[("host", "x"), ("content-length", "2")],
    )
    conn.send(request)
    conn.send(h11.Data(data=b"{}"))
    conn.send(h11.EndOfMessage())
    response: h11.Response | None = None
    body = bytearray()
    try:
        for index, piece in enumerate([*pieces, b""]):
            conn.receive_data(piece)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    break
                if isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert response is not None
                    unread, closed = conn.trailing_data
                    return Read(
                        status=response.status_code,
                        reason=bytes(response.reason),
                        headers=tuple((n, bytes(v)) for n, v in response.headers),
                        body=bytes(body),
                        trailers=tuple((n, bytes(v)) for n, v in event.headers),
                        keep_alive=conn.their_state is h11.DONE and not closed,
                        leftover=unread + b"".join(pieces[index + 1 :]),
                    )
    except h11.RemoteProtocolError:
        return REFUSED
    raise AssertionError("h11 neither ended the response nor refused it")


def wire_read(pieces: Sequence[bytes]) -> Outcome:
    """The wire module driven directly, as the pool drives it, without I/O."""
    parser = wire.HeadParser(b"POST")
    buffer = b""
    found: wire.Head | None = None
    decoder: wire.BodyDecoder = wire.NoBody()
    body: list[bytes] = []
    try:
        for index, piece in enumerate([*pieces, b""]):
            if not piece:  # the connection closed
                if found is None:
                    parser.end_of_stream(buffer)
                decoder.end_of_stream()
                leftover = b""
                break
            buffer += piece
            if found is None:
                found, buffer = parser.parse(buffer)
                if found is None:
                    continue
                decoder = wire.decoder_for(found.framing)
                if found.framing.kind == "none":
                    leftover = buffer + b"".join(pieces[index + 1 :])
                    break
            data, buffer, done = decoder.decode(buffer)
            body.append(data)
            if done:
                leftover = buffer + b"".join(pieces[index + 1 :])
                break
    except wire.RemoteProtocolError:
        return REFUSED
    assert found is not None
    return Read(
        status=found.status,
        reason=found.reason,
        headers=as_h11_reports(found.headers),
        body=b"".join(body),
        trailers=as_h11_reports(getattr(decoder, "trailers", [])),
        keep_alive=found.framing.keep_alive,
        leftover=leftover,
    )


class ScriptedStream:
    """Hands out the given reads, then end of stream."""

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self.pieces = list(pieces)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return self.pieces.pop(0) if self.pieces else b""


class EndingsPool:
    """Stands in for HTTP1Pool: records how the body ended."""

    def __init__(self) -> None:
        self.ended: list[str] = []

    def give_back(self, connection: object, origin: object, *, reusable: bool) -> None:
        self.ended.append("reused" if reusable else "closed")

    def discard(self, connection: object) -> None:
        self.ended.append("discarded")


async def pool_read(pieces: Sequence[bytes]) -> Outcome:
    """The pool's own read loop over scripted reads."""
    stream = ScriptedStream(pieces)
    connection = Connection(stream, None)  # type: ignore[arg-type]
    endings = EndingsPool()
    try:
        found = await connection.read_head(b"POST")
        reply = _Body(endings, connection, ("http", "h", 80), found.framing)  # type: ignore[arg-type]
        body = b"".join([piece async for piece in reply])
    except httpx.RemoteProtocolError:
        assert endings.ended in ([], ["discarded"])
        return REFUSED
    assert endings.ended in (["reused"], ["closed"])
    return Read(
        status=found.status,
        reason=found.reason,
        headers=as_h11_reports(found.headers),
        body=body,
        trailers=as_h11_reports(getattr(reply._decoder, "trailers", [])),
        keep_alive=endings.ended == ["reused"],
        leftover=connection.buffer + b"".join(stream.pieces),
    )


# ---- splitting and comparing -------------------------------------------------------------


def splits(case: Case) -> Iterator[list[bytes]]:
    """The response whole, cut at every byte boundary, and one byte per read; a large one
    in reads of a few KiB (h11 enforces its size limit only on an incomplete buffer)."""
    raw = case.raw
    if case.large:
        for size in (1000, 4096):
            yield [raw[i : i + size] for i in range(0, len(raw), size)]
        return
    yield [raw] if raw else []
    for cut in range(1, len(raw)):
        yield [raw[:cut], raw[cut:]]
    yield [raw[i : i + 1] for i in range(len(raw))]


def check(case: Case, pieces: list[bytes], pool_outcome: Outcome) -> None:
    """The three readers agree, up to the case's listed difference from h11."""
    theirs, ours = h11_read(pieces), wire_read(pieces)
    where = f"{case.id} split as {[len(p) for p in pieces]}"
    assert pool_outcome == ours, where
    assert (theirs != REFUSED) is case.accepted, f"{where}: h11 gave {theirs}"
    kind = DIFFERENCES.get(case.id, ("same", ""))[0]
    if kind == "same":
        assert ours == theirs, where
    elif kind == "lenient":
        assert ours != REFUSED and theirs == REFUSED, where
    elif kind == "stricter":
        assert ours == REFUSED and theirs != REFUSED, where
    else:
        assert isinstance(ours, Read) and isinstance(theirs, Read), where
        assert ours.keep_alive is (kind == "reuse"), where
        assert attrs.evolve(ours, keep_alive=theirs.keep_alive) == theirs, where


async def pool_reads(all_pieces: list[list[bytes]]) -> list[Outcome]:
    return [await pool_read(pieces) for pieces in all_pieces]


@pytest.mark.parametrize("case", CORPUS, ids=[case.id for case in CORPUS])
def test_every_split_of_every_response_reads_as_h11_reads_it(case: Case) -> None:
    """Each corpus response, whole, cut at every byte boundary or fed a byte at a time,
    gives the same events or the same refusal in the wire module, the pool's read loop
    and h11, except the listed deliberate differences."""
    all_pieces = list(splits(case))
    for pieces, outcome in zip(all_pieces, trio.run(pool_reads, all_pieces), strict=True):
        check(case, pieces, outcome)


@settings(max_examples=300, deadline=None)
@given(
    case=st.sampled_from([case for case in CORPUS if not case.large]),
    cuts=st.lists(st.integers(1, 400), max_size=12),
)
def test_random_splits_read_as_h11_reads_them(case: Case, cuts: list[int]) -> None:
    """Cut into random reads, a corpus response still reads as h11 reads it."""
    points = sorted({c for c in cuts if c < len(case.raw)})
    pieces = [case.raw[a:b] for a, b in zip([0, *points], [*points, len(case.raw)], strict=True)]
    pieces = [p for p in pieces if p]
    check(case, pieces, trio.run(pool_read, pieces))


def test_every_listed_difference_is_in_the_corpus() -> None:
    """Each deliberate difference names a corpus case (a stale entry would hide nothing)."""
    assert set(DIFFERENCES) <= {case.id for case in CORPUS}


def test_the_corpus_reads_as_expected() -> None:
    """A few absolute answers, so that agreement with h11 cannot hide a shared mistake."""
    by_id = {case.id: case for case in CORPUS}
    chunked = wire_read([by_id["chunked-trailers"].raw])
    assert isinstance(chunked, Read)
    assert (chunked.body, chunked.trailers) == (b"ab", ((b"x-trailer", b"1"), (b"x-other", b"two")))
    folded = wire_read([by_id["obs-fold-keeps-inner-space"].raw])
    assert isinstance(folded, Read) and folded.headers[0] == (b"x", b"a \t b")
    interim = wire_read([by_id["103-then-100"].raw])
    assert isinstance(interim, Read) and (interim.status, interim.body) == (200, b"x")
    lenient = wire_read([by_id["chunked-bare-lf-size-line"].raw])
    assert isinstance(lenient, Read) and (lenient.body, lenient.keep_alive) == (b"hello", True)
    assert wire_read([by_id["chunked-and-length"].raw]) == Read(
        status=200,
        reason=b"OK",
        headers=((b"content-length", b"5"), (b"transfer-encoding", b"chunked")),
        body=b"ab",
        trailers=(),
        keep_alive=False,
        leftover=b"",
    )


# ---- request heads -----------------------------------------------------------------------

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
names = (
    st.text(TOKEN_CHARS, min_size=1, max_size=12)
    .map(str.encode)
    .filter(lambda n: n.lower() not in (b"host", b"content-length", b"transfer-encoding"))
)
visible = st.sampled_from([bytes([b]) for b in [*range(0x21, 0x7F), *range(0x80, 0x100)]])
inner = st.sampled_from([b" ", b"\t", b"a", b"\x01", b"\x7f"])
# A field value as h11 will send it: empty, or visible bytes at both ends.
values = (
    st.just(b"")
    | visible
    | st.builds(
        lambda first, middle, last: first + b"".join(middle) + last,
        visible,
        st.lists(st.one_of(visible, inner), max_size=20),
        visible,
    )
)
paths = st.text("abcdefXYZ0189-._~/%?=& éü", max_size=30)


def h11_server_reads(raw: bytes) -> list[Any]:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    events = []
    while not events or not isinstance(events[-1], h11.EndOfMessage):
        event = conn.next_event()
        assert event is not h11.NEED_DATA, events
        events.append(event)
    return events


@settings(max_examples=300, deadline=None)
@given(
    fields=st.lists(st.tuples(names, values), max_size=8),
    path=paths,
    body=st.binary(max_size=40),
)
def test_a_request_head_reads_back_in_h11_as_sent(
    fields: list[tuple[bytes, bytes]], path: str, body: bytes
) -> None:
    """What encode_request_head writes, h11 as a server reads as the same method,
    target, fields (Host, user-agent, accept-encoding and Content-Length added) and body."""
    url = httpx.URL("https://api.example.test:8443/v1/" + path)
    raw = request_head.encode_request_head(b"POST", url.raw_path, url.netloc, fields, len(body))
    request, *data, end = h11_server_reads(raw + body)
    assert (request.method, request.target) == (b"POST", url.raw_path)
    given_names = {name.lower() for name, _ in fields}
    expected = [(b"host", url.netloc), *((n.lower(), v) for n, v in fields)]
    if b"user-agent" not in given_names:
        expected.append((b"user-agent", b"oswitch"))
    if b"accept-encoding" not in given_names:
        expected.append((b"accept-encoding", b"identity"))
    expected.append((b"content-length", str(len(body)).encode()))
    assert list(request.headers) == expected
    assert b"".join(bytes(d.data) for d in data) == body
    assert isinstance(end, h11.EndOfMessage)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"x", b"a\r\nx-evil: 1"),
        (b"x", b"a\nb"),
        (b"x", b"a\rb"),
        (b"x", b"a\x00b"),
        (b"x", b"a\x0bb"),
        (b"x", b"a\x0cb"),
        (b"x y", b"sk-value"),
        (b"x:y", b"sk-value"),
        (b"", b"sk-value"),
        (b"x\r\n", b"sk-value"),
    ],
    ids=[
        "crlf",
        "lf",
        "cr",
        "nul",
        "vt",
        "ff",
        "space-in-name",
        "colon-in-name",
        "no-name",
        "crlf-in-name",
    ],
)
def test_a_header_h11_will_not_write_is_refused(name: bytes, value: bytes) -> None:
    """A field h11 refuses to send, encode_request_head refuses too, naming the field
    and never repeating its value."""
    with pytest.raises(h11.LocalProtocolError):
        h11.Connection(h11.CLIENT).send(
            h11.Request(method="POST", target="/", headers=[("host", "x"), (name, value)])
        )
    with pytest.raises(wire.LocalProtocolError) as caught:
        request_head.encode_request_head(b"POST", b"/", b"x", [(name, value)], 0)
    assert value not in str(caught.value).encode()


def test_surrounding_whitespace_in_a_value_is_sent_and_trimmed_by_the_reader() -> None:
    """Deliberate difference: h11 refuses to send a value with leading or trailing SP/HT;
    oswitch sends it, since a reader trims it (RFC 9110 §5.5) and refusing a key with a
    stray trailing space would fail a request the provider accepts."""
    with pytest.raises(h11.LocalProtocolError):
        h11.Connection(h11.CLIENT).send(
            h11.Request(method="POST", target="/", headers=[("host", "x"), ("x", " v\t")])
        )
    raw = request_head.encode_request_head(b"POST", b"/", b"x", [(b"x", b" v\t")], 0)
    request, _ = h11_server_reads(raw)
    assert (b"x", b"v") in list(request.headers)
