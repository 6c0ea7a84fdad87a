"""The seam: continuation requests and the reconciler that drops repeated text."""

from __future__ import annotations

import random

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from oswitch.core.resume import (
    CONTINUE_INSTRUCTION,
    MIN_OVERLAP,
    SeamReconciler,
    continuation_request,
)
from oswitch.runtime.switcher import open_switcher
from oswitch.testing import FakeProvider, stream
from support import chat, config, target

WORDS = [f"w{n}" for n in range(200)]


def sew(confirmed: str, continuation: str, pieces: list[int]) -> str:
    """Feed ``continuation`` to a reconciler in pieces of the given sizes."""
    seam = SeamReconciler(confirmed)
    out = ""
    position = 0
    for size in pieces:
        out += seam.feed(continuation[position : position + size])
        position += size
    out += seam.feed(continuation[position:])
    return confirmed + out + seam.finish()


answers = st.lists(st.sampled_from(WORDS), min_size=2, max_size=60, unique=True).map(" ".join)


@given(answer=answers, data=st.data())
def test_any_cut_and_any_repeat_sews_back_the_answer(answer: str, data: st.DataObject) -> None:
    """For any cut point, a continuation that repeats nothing, a tail, or everything
    sews back into exactly the original answer, however it is chunked."""
    cut = data.draw(st.integers(1, len(answer) - 1), label="cut")
    mode = data.draw(st.sampled_from(["none", "tail", "all"]), label="mode")
    if mode == "all":
        continuation = answer
    elif mode == "tail" and cut >= MIN_OVERLAP:
        overlap = data.draw(st.integers(MIN_OVERLAP, min(cut, 300)), label="overlap")
        if overlap > cut or not answer[cut - overlap : cut].strip():
            continuation = answer[cut:]
        else:
            continuation = answer[cut - overlap :]
    else:
        continuation = answer[cut:]
    pieces = data.draw(st.lists(st.integers(1, 9), max_size=40), label="pieces")
    assert sew(answer[:cut], continuation, pieces) == answer


def test_short_accidental_overlap_is_kept() -> None:
    """A continuation that merely starts like the tail (under MIN_OVERLAP) is not trimmed."""
    assert sew("it was the ", "the end.", [3, 5]) == "it was the the end."


def test_prefill_whitespace_is_not_doubled() -> None:
    """After a prefill lost the trailing space, the continuation's leading space is kept once."""
    assert sew("Hello world ", " and more", [1, 8]) == "Hello world and more"


def test_reconciler_releases_a_held_prefix_at_the_end() -> None:
    """Text held back as a possible restart is passed on when the stream ends short of one."""
    seam = SeamReconciler("one two three ")
    assert seam.feed("one") == ""
    assert seam.finish() == "one"


def test_continuation_request_forms() -> None:
    """Prefill puts the confirmed text last as the assistant turn; else an instruction follows."""
    request = chat(text="tell me")
    prefill = continuation_request(request, "Once upon a time ", prefill=True)
    assert prefill["messages"][-1] == {"role": "assistant", "content": "Once upon a time"}
    instruction = continuation_request(request, "Once upon a time ", prefill=False)
    assert instruction["messages"][-2:] == [
        {"role": "assistant", "content": "Once upon a time "},
        {"role": "user", "content": CONTINUE_INSTRUCTION},
    ]
    assert request["messages"] == [{"role": "user", "content": "tell me"}]  # not mutated


@settings(max_examples=40, deadline=None)
@given(
    cut=st.integers(1, 40),
    repeat=st.sampled_from(["none", "tail:7", "tail:25", "all"]),
    split=st.integers(1, 30),
    second_api=st.sampled_from(["openai", "anthropic"]),
)
def test_engine_stream_resume_is_whole_for_any_cut(
    cut: int, repeat: str, split: int, second_api: str
) -> None:
    """Through the whole engine: for any cut point, repeat style and TCP split, the caller's
    text is exactly the answer, and no chunk reaches the caller twice."""
    answer = " ".join(random.Random(cut).sample(WORDS, 41))

    async def main() -> None:
        fake = FakeProvider()
        fake.on("key-a", stream(answer, cut_after=cut, split_bytes=split))
        fake.on("key-b", stream(answer, repeat=repeat, split_bytes=split, api=second_api))
        cfg = config(target("a", operator_priority=1), target("b", api=second_api))
        async with open_switcher(cfg, transport=fake.transport()) as switcher:
            async with switcher.stream(chat()) as chunks:
                received = [c async for c in chunks]
        texts = [c["choices"][0]["delta"].get("content") or "" for c in received]
        assert "".join(texts) == answer
        words = [t for t in texts if t.strip()]
        assert len(words) == len(set(words)) or cut >= 41

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
