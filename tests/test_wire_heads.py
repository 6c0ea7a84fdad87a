"""The wire module's one-pass read of a usual response head against its line-by-line read.

``tests/test_wire_differential.py`` holds both to h11's verdicts over a corpus; here
random heads, built from the bytes that decide between the two paths (bare LFs, stray
CRs, folded lines, control bytes, odd statuses), check that whenever the one-pass read
answers, it answers exactly as the line-by-line read does.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import example, given, settings

from oswitch.transport import wire

NAMES = [b"content-type", b"Content-Length", b"x-request-id", b"connection", b"x a", b"", b"a:b"]
VALUES = [b"application/json", b"565", b" padded \t", b"", b"keep-alive", b"close", b"a\x00b"]
VALUES += [b"a\rb", b"a\x0bb", b"\tlead", b"trail ", b"12, 12", b"chunked", b"x:y"]
ENDS = [b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n"]
STATUS_LINES = [b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK", b"HTTP/1.1 204", b"HTTP/1.1 200 "]
STATUS_LINES += [b"HTTP/1.1 100 Continue", b"HTTP/1.1 101 Switching", b"HTTP/2.0 200 OK"]
STATUS_LINES += [b"HTTP/1.1 099 Low", b"HTTP/1.1 2000 OK", b"HTTP/1.1 503 Busy\x00"]
STATUS_LINES += [b" HTTP/1.1 200"]

_line = st.tuples(st.sampled_from(NAMES), st.sampled_from([b":", b": ", b":\t", b" : "]))
_field = st.tuples(_line, st.sampled_from(VALUES), st.sampled_from(ENDS)).map(
    lambda f: f[0][0] + f[0][1] + f[1] + f[2]
)
_folded = st.sampled_from([b" more\r\n", b"\tmore\r\n"])
_head = st.tuples(
    st.sampled_from(STATUS_LINES),
    st.sampled_from(ENDS),
    st.lists(st.one_of(_field, _field, _folded), max_size=6),
    st.sampled_from(ENDS),
    st.sampled_from([b"", b"body", b"HTTP/1.1 200 OK\r\n\r\n"]),
).map(lambda h: h[0] + h[1] + b"".join(h[2]) + h[3] + h[4])


def _by_lines(method: bytes, buffer: bytes) -> object:
    try:
        return wire.HeadParser(method)._parse_by_lines(buffer)
    except wire.RemoteProtocolError as exc:
        return ("refused", str(exc))


def _one_pass(method: bytes, buffer: bytes) -> object:
    try:
        return wire._common_head(method, buffer)
    except wire.RemoteProtocolError as exc:
        return ("refused", str(exc))


def _agrees_with_the_line_by_line_read(method: bytes, head: bytes) -> None:
    """Fails unless the one-pass read leaves ``head`` to the general path or reads it
    exactly as the line-by-line read does."""
    one_pass = _one_pass(method, head)
    if one_pass is not None:
        assert one_pass == _by_lines(method, head)


@settings(max_examples=1000, deadline=None)
@given(head=_head, method=st.sampled_from([b"POST", b"HEAD"]))
@example(head=b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi", method=b"POST")
@example(head=b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", method=b"POST")
@example(head=b"HTTP/1.1 200 OK\r\n\r\n", method=b"POST")
@example(head=b"HTTP/1.1 200 OK\r\na: b\n\r\nc: d\r\n\r\n", method=b"POST")
def test_a_head_read_in_one_pass_reads_as_line_by_line(head: bytes, method: bytes) -> None:
    """Whenever the one-pass read takes a head, its head, framing, rest or refusal are
    the line-by-line read's."""
    _agrees_with_the_line_by_line_read(method, head)


def test_a_usual_provider_head_takes_the_one_pass_read() -> None:
    """A provider's head of many plain fields, CRLF lines and a body behind it is read in
    one pass, every field trimmed and in order."""
    fields = [(b"Date", b"Thu, 03 Dec 2026 10:00:00 GMT"), (b"Content-Type", b"text/event-stream")]
    fields += [(b"Transfer-Encoding", b"chunked"), (b"openai-processing-ms", b"212")]
    fields += [(b"x-ratelimit-remaining-requests", b"9999"), (b"cf-ray", b"8c1f-SJC")]
    raw = b"HTTP/1.1 200 OK\r\n" + b"".join(n + b":  " + v + b" \r\n" for n, v in fields)
    raw += b"\r\n5\r\nhello\r\n"
    taken = wire._common_head(b"POST", raw)
    assert taken is not None
    head, rest = taken
    assert (head.status, head.reason, head.http_version) == (200, b"OK", b"HTTP/1.1")
    assert head.headers == fields
    assert head.framing == wire.Framing("chunked", keep_alive=True)
    assert rest == b"5\r\nhello\r\n"
    assert wire.HeadParser(b"POST").parse(raw) == taken


def test_heads_the_one_pass_read_leaves_to_the_line_by_line_read() -> None:
    """An interim head, a bare LF, a folded line, a stray CR and an incomplete head are
    not taken in one pass; the parser still reads each as before."""
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"
    assert wire._common_head(b"POST", interim) is None
    assert wire._common_head(b"POST", b"HTTP/1.1 200 OK\nx: y\n\n") is None
    assert wire._common_head(b"POST", b"HTTP/1.1 200 OK\r\nx: y\r\n z\r\n\r\n") is None
    assert wire._common_head(b"POST", b"HTTP/1.1 200 OK\r\nx: a\rb\r\n\r\n") is None
    assert wire._common_head(b"POST", b"HTTP/1.1 200 OK\r\nx: y\r\n") is None
    head, rest = wire.HeadParser(b"POST").parse(b"HTTP/1.1 200 OK\r\nx: y\r\n z\r\n\r\n")
    assert head is not None and head.headers == [(b"x", b"y z")] and rest == b""


USUAL = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-request-id:  abc \t\r\n"
    b"content-length: 2\r\nconnection: keep-alive\r\n\r\n{}"
)
BYTES = b" \t\r\n\x00\x0b\x0c\x7f\x80:;,aZ09"


@st.composite
def _near_usual(draw: st.DrawFn) -> bytes:
    """The usual head with one to three bytes replaced, dropped or added."""
    head = bytearray(USUAL)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(head) - 1))
        byte = draw(st.sampled_from(BYTES))
        change = draw(st.sampled_from(["replace", "insert", "delete"]))
        if change == "replace":
            head[at] = byte
        elif change == "insert":
            head.insert(at, byte)
        else:
            del head[at]
    return bytes(head)


@settings(max_examples=1000, deadline=None)
@given(head=_near_usual(), method=st.sampled_from([b"POST", b"HEAD"]))
@example(head=b"HTTP/1.1 200\tOK\r\nx: y\r\n\r\n", method=b"POST")
@example(head=b"http/1.1 200 OK\r\nx: y\r\n\r\n", method=b"POST")
@example(head=b"HTTP/1.1 200 OK\r\nx: a\x0cb\r\n\r\n", method=b"POST")
@example(head=b"HTTP/1.1 200 OK\r\nx: a\x0c\r\n\r\n", method=b"POST")
def test_a_head_one_byte_off_the_usual_reads_as_line_by_line(head: bytes, method: bytes) -> None:
    """A usual head with a byte or three changed (most still take the one-pass read)
    reads as the line-by-line read reads it, or is left to it."""
    _agrees_with_the_line_by_line_read(method, head)


def _head_of(size: int) -> bytes:
    """A usual head of exactly ``size`` bytes, blank line included."""
    start, end = b"HTTP/1.1 200 OK\r\nx: ", b"\r\n\r\n"
    return start + b"v" * (size - len(start) - len(end)) + end


def test_the_head_size_limit_is_the_same_on_both_paths() -> None:
    """A head of MAX_HEAD_BYTES is read in one pass; one byte more is left to the
    line-by-line read, which refuses it."""
    at_limit, past_limit = _head_of(wire.MAX_HEAD_BYTES), _head_of(wire.MAX_HEAD_BYTES + 1)
    taken = wire._common_head(b"POST", at_limit + b"body")
    assert taken is not None and taken[1] == b"body"
    assert taken == _by_lines(b"POST", at_limit + b"body")
    assert wire._common_head(b"POST", past_limit) is None
    assert _by_lines(b"POST", past_limit) == (
        "refused",
        f"response head over {wire.MAX_HEAD_BYTES} bytes",
    )


def test_a_value_of_long_blank_runs_is_read_whole() -> None:
    """A value holding a 64 KiB run of blanks is read, and trimmed, as the line-by-line
    read does it. The first one-pass field pattern (a lazy value before optional blanks)
    backtracked over such a run for every byte of it: 10 s for this head, with trio's
    loop blocked. This pins the answer; the possessive quantifiers of the patterns (they
    never give a byte back) are what keep the read linear."""
    start, end = b"HTTP/1.1 200 OK\r\nx: a", b"b \t \r\n\r\n"
    run = b" \t" * ((wire.MAX_HEAD_BYTES - len(start) - len(end)) // 2)
    head = start + run + end
    taken = wire._common_head(b"POST", head)
    assert taken is not None and taken[0].headers == [(b"x", b"a" + run + b"b")]
    assert taken == _by_lines(b"POST", head)
