"""The SSE parser: events out of bytes, however the bytes are split."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from oswitch.providers.sse import SSEEvent, SSEParser


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
