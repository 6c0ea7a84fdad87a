"""The SSE parser: events out of bytes, however the bytes are split."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oswitch.providers.sse import (
    MAX_EVENT_BYTES,
    MAX_LINE_BYTES,
    SSEEvent,
    SSELimitExceeded,
    SSEParser,
)


def parse(*pieces: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    events = [event for piece in pieces for event in parser.feed(piece)]
    return events + parser.close()


def test_data_lines_events_comments_and_crlf() -> None:
    """Named events, multi-line data, comments and CRLF line ends parse as the standard says."""
    body = (
        b": keep-alive\r\n\r\n"
        b'event: message_start\r\ndata: {"a": 1}\r\n\r\n'
        b"data: line one\ndata:line two\n\n"
        b"id: 7\nretry: 100\ndata: [DONE]\n\n"
    )
    assert parse(body) == [
        SSEEvent(event="message_start", data='{"a": 1}'),
        SSEEvent(event="", data="line one\nline two"),
        SSEEvent(event="", data="[DONE]"),
    ]


def test_last_event_without_blank_line_is_kept() -> None:
    """A body ending on 'data: [DONE]\\n' (no blank line) still yields that event."""
    assert parse(b"data: x\n\ndata: [DONE]\n") == [SSEEvent("", "x"), SSEEvent("", "[DONE]")]
    assert parse(b"data: x\n\ndata: [DONE]") == [SSEEvent("", "x"), SSEEvent("", "[DONE]")]


def test_a_character_split_across_reads_survives() -> None:
    """A UTF-8 character cut between two reads is decoded whole."""
    data = "data: café ☕\n\n".encode()
    cut = data.index("☕".encode()) + 1
    assert parse(data[:cut], data[cut:]) == [SSEEvent("", "café ☕")]


events_strategy = st.lists(
    st.tuples(
        st.sampled_from(["", "message_start", "content_block_delta", "error"]),
        st.lists(
            st.text(
                alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
                min_size=1,
            ),
            min_size=1,
            max_size=3,
        ),
    ),
    max_size=8,
)


@given(events=events_strategy, cuts=st.lists(st.integers(0, 2000), max_size=12), crlf=st.booleans())
def test_any_split_gives_the_same_events(
    events: list[tuple[str, list[str]]], cuts: list[int], crlf: bool
) -> None:
    """However the body is cut into reads, the same events come out, in order."""
    end = "\r\n" if crlf else "\n"
    body = "".join(
        (f"event: {name}{end}" if name else "")
        + "".join(f"data: {line}{end}" for line in lines)
        + end
        for name, lines in events
    ).encode()
    points = sorted({min(c, len(body)) for c in cuts})
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    expected = [SSEEvent(name, "\n".join(lines)) for name, lines in events]
    assert parse(*pieces) == expected


# ---- bounds: what an upstream may make the parser hold ------------------------------


def test_an_event_that_never_ends_is_refused_at_its_bound() -> None:
    """`data:` lines with no blank line are refused once the event's data passes
    MAX_EVENT_BYTES, instead of growing without end."""
    parser = SSEParser()
    line = b"data: " + b"x" * 1023 + b"\n"  # 1,023 bytes of data, +1 for each join
    fed = 0
    with pytest.raises(SSELimitExceeded) as refused:
        while fed < 2 * MAX_EVENT_BYTES:
            parser.feed(line)
            fed += 1
    assert str(refused.value) == f"event data over {MAX_EVENT_BYTES} bytes"
    assert fed == MAX_EVENT_BYTES // 1024  # the line that passed the bound was refused
    assert refused.value.events == []


def test_an_event_of_exactly_the_bound_is_accepted() -> None:
    """An event carrying exactly MAX_EVENT_BYTES of data, over several lines, is dispatched."""
    parser = SSEParser()
    piece = "y" * 1023
    lines = MAX_EVENT_BYTES // 1024
    # ``lines`` lines of 1,023 bytes, then an empty one: each join adds a newline.
    body = f"data: {piece}\n".encode() * lines + b"data:\n\n"
    (event,) = parser.feed(body)
    assert len(event.data) == MAX_EVENT_BYTES


def test_a_line_of_exactly_the_bound_is_accepted_even_with_its_cr_apart() -> None:
    """A MAX_LINE_BYTES line ending in CRLF passes, also when CR and LF arrive apart."""
    line = b"data: " + b"z" * (MAX_LINE_BYTES - 6)
    expected = [SSEEvent("", "z" * (MAX_LINE_BYTES - 6))]
    assert parse(line + b"\r", b"\n\n") == expected
    assert parse(line[:10], line[10:] + b"\r", b"\n\n") == expected
    with pytest.raises(SSELimitExceeded, match=rf"^line over {MAX_LINE_BYTES} bytes$"):
        parse(line + b"zz", b"\r\n\r\n")


def test_events_before_a_refused_line_are_delivered_and_refusal_sticks() -> None:
    """Events completed before the bound was passed come with the refusal; later feeds
    and close() are refused again, with nothing."""
    parser = SSEParser(max_line_bytes=64)
    with pytest.raises(SSELimitExceeded) as refused:
        parser.feed(b"data: a\n\ndata: b\n\n: " + b"c" * 70 + b"\ndata: d\n\n")
    assert refused.value.events == [SSEEvent("", "a"), SSEEvent("", "b")]
    for again in (lambda: parser.feed(b"data: e\n\n"), parser.close):
        with pytest.raises(SSELimitExceeded, match=r"^line over 64 bytes$") as later:
            again()
        assert later.value.events == []


TEN_MB = 10 * 1024 * 1024


def test_a_10_mb_line_in_4_kb_reads_is_refused_with_linear_work() -> None:
    """A 10 MB line with no newline, in 4 KB reads, is refused at MAX_LINE_BYTES having
    handled each byte a bounded number of times (no re-scanning of the held line)."""
    parser = SSEParser()
    line = b"data: " + b"x" * TEN_MB
    with pytest.raises(SSELimitExceeded, match=rf"^line over {MAX_LINE_BYTES} bytes$"):
        for start in range(0, len(line), 4096):
            parser.feed(line[start : start + 4096])
    stats = parser.statistics()
    assert MAX_LINE_BYTES + 1 < stats.bytes_fed <= MAX_LINE_BYTES + 4096 + 1
    assert stats.bytes_handled <= 2 * stats.bytes_fed


def test_a_10_mb_line_in_1_byte_reads_is_refused_with_linear_work() -> None:
    """Byte-by-byte reads of a 10 MB line cost the same per byte as big reads (the
    quadratic case: each byte used to re-copy and re-scan the whole pending line)."""
    limit = 1024 * 1024  # a smaller bound: a Python call per byte is slow, not the parser
    parser = SSEParser(max_line_bytes=limit)
    feed = parser.feed
    feed(b"data: ")
    with pytest.raises(SSELimitExceeded, match=rf"^line over {limit} bytes$"):
        for piece in itertools.repeat(b"x", TEN_MB):
            feed(piece)
    stats = parser.statistics()
    assert stats.bytes_fed == limit + 2
    assert stats.bytes_handled <= 2 * stats.bytes_fed


@pytest.mark.parametrize("read_size", [4096, 65536])
def test_a_10_mb_event_within_raised_bounds_parses_in_linear_work(read_size: int) -> None:
    """With bounds raised past it, a 10 MB single-line event parses whole, each byte
    searched, buffered and joined once."""
    parser = SSEParser(max_line_bytes=2 * TEN_MB, max_event_bytes=2 * TEN_MB)
    body = b"data: " + b"x" * TEN_MB + b"\n\n"
    events = [
        e for s in range(0, len(body), read_size) for e in parser.feed(body[s : s + read_size])
    ]
    assert [len(event.data) for event in events] == [TEN_MB]
    stats = parser.statistics()
    assert stats.bytes_fed == len(body)
    assert stats.bytes_handled <= 3 * stats.bytes_fed


# Small bounds make hypothesis's streams cross them often.
SMALL_LINE, SMALL_EVENT = 32, 40
tokens = st.sampled_from(
    [
        *(b"data: ", b"data:", b"data", b"event: e", b": c", b"id: 1", b"x", b"xxxxxxx", b" "),
        *(b"\n", b"\r\n", b"\n\n", b"\r", "é".encode(), b"\xc3"),
    ]
)


def outcome(pieces: list[bytes]) -> tuple[list[SSEEvent], str | None]:
    """Every event delivered, and the refusal (or None), for one split of a stream."""
    parser = SSEParser(max_line_bytes=SMALL_LINE, max_event_bytes=SMALL_EVENT)
    events: list[SSEEvent] = []
    try:
        for piece in pieces:
            events += parser.feed(piece)
        events += parser.close()
    except SSELimitExceeded as refused:
        return events + refused.events, str(refused)
    return events, None


@given(stream=st.lists(tokens, max_size=60).map(b"".join), cuts=st.lists(st.integers(0, 400)))
def test_any_split_gives_the_same_events_and_the_same_refusal(
    stream: bytes, cuts: list[int]
) -> None:
    """Whatever the stream (within bounds or past them) and however it is cut, the
    same events come out and the same refusal follows, at the same point."""
    points = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert outcome(pieces) == outcome([stream])
    assert outcome(pieces) == outcome([stream[i : i + 1] for i in range(len(stream))])


@given(
    before=events_strategy,
    overflow=st.sampled_from(
        [b"data: " + b"x" * SMALL_LINE, b": " + b"c" * SMALL_LINE, b"data: xxxxxxxxxx\n" * 5]
    ),
    cuts=st.lists(st.integers(0, 2000), max_size=12),
)
def test_past_the_bounds_is_refused_the_same_whatever_the_split(
    before: list[tuple[str, list[str]]], overflow: bytes, cuts: list[int]
) -> None:
    """Valid events followed by a line or an event past its bound: the valid events,
    then always the same refusal, however the bytes are cut."""
    # Kept within the small bounds: at most 8 bytes of data per line, 3 lines.
    valid = [
        (name, [line.encode()[:8].decode(errors="ignore") or "v" for line in lines])
        for name, lines in before
    ]
    body = (
        "".join(
            (f"event: {name}\n" if name else "")
            + "".join(f"data: {line}\n" for line in lines)
            + "\n"
            for name, lines in valid
        ).encode()
        + overflow
        + b"\n\ndata: after\n\n"
    )
    points = sorted({min(c, len(body)) for c in cuts})
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    events, refusal = outcome(pieces)
    assert events == [SSEEvent(name, "\n".join(lines)) for name, lines in valid]
    assert refusal in (f"line over {SMALL_LINE} bytes", f"event data over {SMALL_EVENT} bytes")
    assert (events, refusal) == outcome([body])
