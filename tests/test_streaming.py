"""Streaming: failover before content, resume after it, and the seam in between."""

from __future__ import annotations

import ast
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from oswitch import AllTargetsFailed, ErrorClass, RequestFailed
from oswitch.config import SwitcherConfig
from oswitch.runtime.switcher import Switcher, open_switcher
from oswitch.testing import Behaviour, FakeProvider, bad_request, rate_limited, reply, stream
from support import chat, config, target

ANSWER = (
    "Alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
    "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu."
)


async def collect(switcher: Switcher, **extra: Any) -> tuple[str, list[dict[str, Any]], str]:
    """Stream one request; return the caller's text, the chunks and the request id."""
    async with switcher.stream(chat(**extra)) as chunks:
        received = [chunk async for chunk in chunks]
    text = "".join(
        chunk["choices"][0]["delta"].get("content") or ""
        for chunk in received
        if chunk.get("choices")
    )
    return text, received, chunks.request_id


def pair(**fields: Any) -> SwitcherConfig:
    return config(target("a", operator_priority=1), target("b"), **fields)


@pytest.mark.parametrize("cut_after", [1, 13, 25], ids=["first", "middle", "last"])
async def test_cut_stream_is_finished_by_another_target(
    autojump_clock: object, cut_after: int
) -> None:
    """A stream cut after the first, a middle or the last chunk reaches the caller whole."""
    fake = FakeProvider()
    fake.on("key-a", stream(ANSWER, cut_after=cut_after, chunk_latency=0.1))
    fake.on("key-b", stream(ANSWER))
    async with open_switcher(pair(), transport=fake.transport()) as switcher:
        text, received, request_id = await collect(switcher)
        trace = switcher.inspect_request(request_id)
    assert text == ANSWER
    assert received[-1]["choices"][0]["finish_reason"] == "stop"
    assert received[-1]["oswitch"] == {"request_id": request_id, "target_id": "b", "attempts": 2}
    first, second = trace.attempts
    assert (first.target_id, first.error_class, first.decision) == (
        "a",
        ErrorClass.INTERRUPTED_EXECUTION,
        "resume",
    )
    assert (second.target_id, second.decision, second.offset) == ("b", "return", first.chars)
    assert first.chars + second.chars == len(ANSWER)
    assert trace.outcome == "ok"


@pytest.mark.parametrize(
    "repeat", ["none", "tail:8", "tail:30", "all"], ids=["exact", "short", "long", "restart"]
)
async def test_repeated_text_at_the_seam_is_dropped(autojump_clock: object, repeat: str) -> None:
    """A continuation repeating the tail of the answer, or all of it, is trimmed at the seam."""
    fake = FakeProvider()
    fake.on("key-a", stream(ANSWER, cut_after=10))
    fake.on("key-b", stream(ANSWER, repeat=repeat))
    async with open_switcher(pair(), transport=fake.transport()) as switcher:
        text, _, _ = await collect(switcher)
    assert text == ANSWER


async def test_failure_before_content_is_an_ordinary_failover(autojump_clock: object) -> None:
    """A 429 or a stream dying before any content costs the caller only latency."""
    fake = FakeProvider()
    fake.on("key-a", rate_limited(30.0))
    fake.on("key-b", stream(ANSWER, cut_after=0))
    fake.on("key-c", stream(ANSWER))
    cfg = config(target("a", operator_priority=2), target("b", operator_priority=1), target("c"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        text, received, request_id = await collect(switcher)
        trace = switcher.inspect_request(request_id)
    assert text == ANSWER
    assert [(a.target_id, a.error_class) for a in trace.attempts] == [
        ("a", ErrorClass.RATE_LIMITED),
        ("b", ErrorClass.TRANSPORT_FAILURE),
        ("c", None),
    ]
    assert received[0]["choices"][0]["delta"].get("role") == "assistant"
    assert sum(1 for c in received if c["choices"][0]["delta"].get("role")) == 1


async def test_first_token_limit_fails_a_silent_stream_over(autojump_clock: object) -> None:
    """A stream that sends headers but no token within first_token_timeout_ms is abandoned."""
    fake = FakeProvider()
    fake.on("key-a", stream(ANSWER, stall_after=0))
    fake.on("key-b", stream(ANSWER))
    async with open_switcher(pair(first_token_timeout_ms=4000), transport=fake.transport()) as s:
        async with s.stream(chat()) as chunks:
            assert trio.current_time() == 4.0
            text = "".join([c["choices"][0]["delta"].get("content") or "" async for c in chunks])
        trace = s.inspect_request(chunks.request_id)
    assert text == ANSWER
    assert trace.attempts[0].error_class is ErrorClass.TRANSPORT_FAILURE
    assert fake.cancelled == 1


async def test_stall_after_content_is_an_interruption(autojump_clock: object) -> None:
    """A stream silent past stream_idle_timeout_ms after content is resumed elsewhere."""
    fake = FakeProvider()
    fake.on("key-a", stream(ANSWER, stall_after=5, chunk_latency=1.0))
    fake.on("key-b", stream(ANSWER))
    async with open_switcher(pair(stream_idle_timeout_ms=3000), transport=fake.transport()) as s:
        text, _, request_id = await collect(s)
        assert trio.current_time() == 8.0  # five chunks a second apart, then 3 s of silence
        trace = s.inspect_request(request_id)
    assert text == ANSWER
    assert "stalled" in trace.attempts[0].note


async def test_pings_do_not_count_as_progress(autojump_clock: object) -> None:
    """Keep-alive pings during a stall do not keep a dead stream alive."""
    fake = FakeProvider()
    fake.on("key-a", stream(ANSWER, api="anthropic", ping_every=1, stall_after=3))
    fake.on("key-b", stream(ANSWER))
    cfg = config(
        target("a", operator_priority=1, api="anthropic"),
        target("b"),
        stream_idle_timeout_ms=2000,
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        text, _, _ = await collect(switcher)
        assert trio.current_time() == 2.0
    assert text == ANSWER


def _content_then_empty_chunks(interval: float) -> Behaviour:
    """One content chunk, then chunks with nothing in them every ``interval`` seconds,
    forever: keep-alives as some OpenAI-compatible servers send them."""

    def chunk(delta: dict[str, Any]) -> bytes:
        payload = {"id": "c", "model": "m", "choices": [{"index": 0, "delta": delta}]}
        return f"data: {json.dumps(payload)}\n\n".encode()

    async def body() -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": "Alpha "})
        while True:
            await trio.sleep(interval)
            yield chunk({})

    async def respond(request: httpx.Request, _: Any) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    return Behaviour(name="empty keep-alives", respond=respond)


async def test_chunks_without_progress_do_not_keep_a_stalled_stream_alive(
    autojump_clock: object,
) -> None:
    """Empty chunks reach the caller but do not restart the idle clock: 3 s of them is a stall."""
    fake = FakeProvider().on("key-a", _content_then_empty_chunks(1.0))
    fake.on("key-b", stream(ANSWER))
    async with open_switcher(pair(stream_idle_timeout_ms=3000), transport=fake.transport()) as s:
        with trio.fail_after(60):
            text, _, request_id = await collect(s)
        assert trio.current_time() == 3.0
        trace = s.inspect_request(request_id)
    assert text == ANSWER
    assert "stalled: no next chunk within 3.000s" in trace.attempts[0].note
    assert [a.target_id for a in trace.attempts] == ["a", "b"]


@pytest.mark.parametrize(
    "fault",
    [
        {"malformed_at": 4},
        {"no_terminator": True, "api": "anthropic"},
        {"reset_after": 4},
        {"error_after": 4},
    ],
    ids=["malformed-chunk", "missing-terminator", "connection-reset", "error-event"],
)
async def test_every_mid_stream_fault_is_resumed(
    autojump_clock: object, fault: dict[str, Any]
) -> None:
    """Malformed chunks, a missing [DONE], a reset and an error event are all resumed."""
    fake = FakeProvider()
    fake.on("key-a", stream(ANSWER, **fault))
    fake.on("key-b", stream(ANSWER))
    cfg = config(target("a", operator_priority=1, api=fault.get("api", "openai")), target("b"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        text, received, request_id = await collect(switcher)
        trace = switcher.inspect_request(request_id)
    assert text == ANSWER
    assert trace.attempts[0].error_class is ErrorClass.INTERRUPTED_EXECUTION
    assert [c["choices"][0]["finish_reason"] for c in received].count("stop") == 1


async def test_finish_chunk_without_done_is_a_complete_answer(autojump_clock: object) -> None:
    """An OpenAI stream that sent its finish chunk but no [DONE] is complete, not resumed."""
    fake = FakeProvider().on("key-a", stream(ANSWER, no_terminator=True))
    fake.on("key-b", stream(ANSWER))
    async with open_switcher(pair(), transport=fake.transport()) as switcher:
        text, _, request_id = await collect(switcher)
        trace = switcher.inspect_request(request_id)
    assert text == ANSWER
    assert [a.decision for a in trace.attempts] == ["return"]
    assert fake.calls_to("key-b") == 0


async def test_anthropic_overloaded_error_after_content(autojump_clock: object) -> None:
    """An Anthropic overloaded_error event mid-stream is resumed and cools the model down."""
    fake = FakeProvider()
    fake.on("key-a", stream(ANSWER, api="anthropic", error_after=6))
    fake.on("key-b", stream(ANSWER))
    cfg = config(target("a", operator_priority=1, api="anthropic"), target("b"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        text, _, request_id = await collect(switcher)
        trace = switcher.inspect_request(request_id)
        view = {v.target_id: v for v in switcher.list_targets()}["a"]
    assert text == ANSWER
    assert trace.attempts[0].note.startswith("ModelUnavailable")
    assert view.condition == "CoolingDown"
    assert view.failures_by_class == {"ModelUnavailable": 1}


async def test_resume_across_openai_and_anthropic_both_ways(autojump_clock: object) -> None:
    """An OpenAI stream resumed by Anthropic, and an Anthropic stream resumed by OpenAI."""
    for first_api, second_api in (("openai", "anthropic"), ("anthropic", "openai")):
        fake = FakeProvider()
        fake.on("key-a", stream(ANSWER, api=first_api, cut_after=9))
        fake.on("key-b", stream(ANSWER, api=second_api))
        cfg = config(
            target("a", operator_priority=1, api=first_api),
            target(
                "b",
                api=second_api,
                capabilities=("chat", "prefill") if second_api == "anthropic" else None,
            ),
        )
        async with open_switcher(cfg, transport=fake.transport()) as switcher:
            text, _, _ = await collect(switcher)
        assert text == ANSWER, (first_api, second_api)
        continuation = fake.calls[-1].body
        if second_api == "anthropic":
            # Prefill: the confirmed text is the final assistant turn.
            assert continuation["messages"][-1]["role"] == "assistant"
        else:
            assert continuation["messages"][-1]["role"] == "user"


async def test_prefill_refusal_falls_back_to_instruction(autojump_clock: object) -> None:
    """A target that refuses prefill is asked again with the instruction form, silently."""
    refuses = bad_request("This model does not support assistant message prefill.")
    fake = FakeProvider()
    fake.on("key-a", stream(ANSWER, cut_after=8))
    fake.on("key-b", refuses, stream(ANSWER))
    cfg = config(
        target("a", operator_priority=1),
        target("b", capabilities=("chat", "prefill")),
        retry_budget=0,
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        text, _, request_id = await collect(switcher)
        trace = switcher.inspect_request(request_id)
    assert text == ANSWER
    assert [a.decision for a in trace.attempts] == ["resume", "retry", "return"]
    prefill_call, instruction_call = [c for c in fake.calls if c.route == "key-b"]
    assert prefill_call.body["messages"][-1]["role"] == "assistant"
    assert instruction_call.body["messages"][-1]["role"] == "user"


async def test_tool_call_cut_mid_arguments_is_a_clear_error(autojump_clock: object) -> None:
    """A tool call cut mid-arguments is not resumed: the caller gets InterruptedExecution."""
    arguments = '{"city": "Paris", "unit": "celsius", "days": 3}'
    fake = FakeProvider()
    fake.on("key-a", stream(arguments, tool_call={"name": "weather"}, cut_after=2))
    fake.on("key-b", stream(arguments, tool_call={"name": "weather"}))
    async with open_switcher(pair(), transport=fake.transport()) as switcher:
        async with switcher.stream(chat()) as chunks:
            received = []
            with pytest.raises(RequestFailed) as caught:
                async for chunk in chunks:
                    received.append(chunk)
    assert caught.value.error_class is ErrorClass.INTERRUPTED_EXECUTION
    assert "tool call" in str(caught.value)
    assert caught.value.request_id == chunks.request_id
    assert all(c["choices"][0]["finish_reason"] is None for c in received)
    assert fake.calls_to("key-b") == 0
    trace = switcher.inspect_request(chunks.request_id)
    assert [a.decision for a in trace.attempts] == ["give_up"]
    assert trace.outcome == "RequestFailed"


async def test_whole_tool_call_streams_through(autojump_clock: object) -> None:
    """An uninterrupted tool call streams to the caller with finish_reason tool_calls."""
    arguments = '{"city": "Paris"}'
    fake = FakeProvider().on("key-a", stream(arguments, tool_call={"name": "weather"}))
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        async with switcher.stream(chat(tools=[{"type": "function"}])) as chunks:
            received = [c async for c in chunks]
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in received
        if c["choices"][0]["delta"].get("tool_calls")
    ]
    assert calls[0]["function"]["name"] == "weather"
    assert "".join(c["function"]["arguments"] for c in calls) == arguments
    assert received[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_client_leaving_early_closes_upstream(autojump_clock: object) -> None:
    """Leaving the block early cancels the upstream attempt and frees the target's slot."""
    fake = FakeProvider().on("key-a", stream(ANSWER, chunk_latency=1.0))
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        async with switcher.stream(chat()) as chunks:
            async for _ in chunks:
                if trio.current_time() >= 3.0:
                    break
        view = switcher.list_targets()[0]
        trace = switcher.inspect_request(chunks.request_id)
        assert (view.in_flight, view.failures_by_class) == (0, {})
        assert trace.outcome == "cancelled"
        assert trace.attempts[-1].decision == "cancelled"
        assert switcher.statistics().admission.in_flight == 0
        await trio.sleep(10)
    assert len(fake.calls) == 1
    assert (fake.closed_early + fake.cancelled, fake.open_streams) == (1, 0)


async def test_disable_mid_stream_resumes_without_cost(autojump_clock: object) -> None:
    """disable_target during a stream cancels it there and resumes elsewhere for free."""
    fake = FakeProvider()
    fake.on("key-a", stream(ANSWER, chunk_latency=1.0))
    fake.on("key-b", stream(ANSWER))
    async with open_switcher(pair(failover_budget=0), transport=fake.transport()) as switcher:
        async with switcher.stream(chat()) as chunks:
            pieces = []
            async for chunk in chunks:
                pieces.append(chunk["choices"][0]["delta"].get("content") or "")
                if len(pieces) == 4:
                    await switcher.disable_target("a")
        trace = switcher.inspect_request(chunks.request_id)
    assert "".join(pieces) == ANSWER
    assert trace.attempts[0].note == "cancelled: operator"


async def test_resume_off_ends_with_an_error_not_a_partial_answer(autojump_clock: object) -> None:
    """With stream_resume='off' a cut stream raises InterruptedExecution, never ends cleanly."""
    fake = FakeProvider().on("key-a", stream(ANSWER, cut_after=5)).on("key-b", stream(ANSWER))
    async with open_switcher(pair(stream_resume="off"), transport=fake.transport()) as switcher:
        async with switcher.stream(chat()) as chunks:
            with pytest.raises(RequestFailed, match="stream_resume is 'off'"):
                async for _ in chunks:
                    pass
    assert fake.calls_to("key-b") == 0


async def test_no_target_left_to_resume_is_all_targets_failed(autojump_clock: object) -> None:
    """When every target fails the continuation, iteration raises AllTargetsFailed."""
    fake = FakeProvider().on("key-a", stream(ANSWER, cut_after=5))
    cfg = config(target("a"), retry_budget=1)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        async with switcher.stream(chat()) as chunks:
            with pytest.raises(AllTargetsFailed):
                async for _ in chunks:
                    pass
        trace = switcher.inspect_request(chunks.request_id)
    assert trace.outcome == "AllTargetsFailed"
    assert [a.decision for a in trace.attempts] == ["resume", "resume"]


async def test_stream_failure_before_content_raises_at_enter(autojump_clock: object) -> None:
    """When nothing can start the stream, the error raises at `async with`, not mid-iteration."""
    fake = FakeProvider().on("key-a", bad_request())
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        with pytest.raises(RequestFailed) as caught:
            async with switcher.stream(chat()):
                raise AssertionError("never entered")
    assert caught.value.error_class is ErrorClass.INVALID_REQUEST
    assert caught.value.status == 400


async def test_usage_and_finish_reason_from_anthropic(autojump_clock: object) -> None:
    """Anthropic's message_delta usage and stop reason arrive on the final chunk."""
    fake = FakeProvider().on("key-a", stream(ANSWER, api="anthropic"))
    cfg = config(target("a", api="anthropic"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        _, received, _ = await collect(switcher)
    final = received[-1]
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["usage"]["prompt_tokens"] == 10
    assert final["usage"]["completion_tokens"] == len(ANSWER.split(" "))


async def test_streams_respect_the_concurrency_of_their_target(autojump_clock: object) -> None:
    """Open streams hold their target's slots until they end."""
    fake = FakeProvider().on("key-a", stream(ANSWER, chunk_latency=0.5))
    cfg = config(attrs.evolve(target("a"), concurrency_limit=2), max_wait_ms=60_000)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(collect, switcher)
            await trio.sleep(1.0)
            assert switcher.list_targets()[0].in_flight == 2
    assert fake.max_open_streams == 2


async def test_a_slow_reader_is_not_a_stalled_provider(autojump_clock: object) -> None:
    """The idle limit times the provider's silence, not the caller's pauses between chunks."""
    fake = FakeProvider().on("key-a", stream(ANSWER)).on("key-b", stream(ANSWER))
    # 26 chunks 10 s apart: the request deadline (which bounds delivery too) must allow it.
    cfg = pair(stream_idle_timeout_ms=3000, request_timeout_ms=600_000)
    async with open_switcher(cfg, transport=fake.transport()) as s:
        async with s.stream(chat()) as chunks:
            pieces = []
            async for chunk in chunks:
                pieces.append(chunk["choices"][0]["delta"].get("content") or "")
                await trio.sleep(10.0)  # the caller is busy for longer than the idle limit
        trace = s.inspect_request(chunks.request_id)
    assert "".join(pieces) == ANSWER
    assert [a.decision for a in trace.attempts] == ["return"]


async def test_leaving_right_after_the_finish_chunk_is_a_success(autojump_clock: object) -> None:
    """A caller that stops at the finish chunk got the whole answer: the request is ok."""
    fake = FakeProvider().on("key-a", stream(ANSWER))
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        async with switcher.stream(chat()) as chunks:
            async for chunk in chunks:
                if chunk["choices"][0]["finish_reason"]:
                    break
        trace = switcher.inspect_request(chunks.request_id)
        view = switcher.list_targets()[0]
    assert trace.outcome == "ok"
    assert (view.successes, view.in_flight) == (1, 0)


async def test_untranslatable_request_is_invalid_and_keeps_the_switcher(
    autojump_clock: object,
) -> None:
    """A request the adapter cannot translate fails as InvalidRequest; the switcher lives on."""
    fake = FakeProvider().on("key-a", stream(ANSWER, api="anthropic"), reply("later"))
    bad = chat()
    bad["messages"].append({"role": "assistant", "content": None, "tool_calls": ["bogus"]})
    async with open_switcher(
        config(target("a", api="anthropic")), transport=fake.transport()
    ) as switcher:
        with pytest.raises(RequestFailed) as caught:
            await switcher.complete(bad)
        assert caught.value.error_class is ErrorClass.INVALID_REQUEST
        with pytest.raises(RequestFailed):
            async with switcher.stream(bad):
                pass
        text, _, _ = await collect(switcher)
    assert text == ANSWER
    assert fake.calls == [] or all(c.behaviour == "stream" for c in fake.calls)


async def test_hedged_stream_winner_is_the_first_content_chunk(autojump_clock: object) -> None:
    """With hedging, the stream whose first content arrives first wins; the other is cancelled."""
    fake = FakeProvider()
    fake.on("key-a", stream(ANSWER, latency=5.0))
    fake.on("key-b", stream(ANSWER, latency=1.0))
    async with open_switcher(pair(hedge_after_ms=1000), transport=fake.transport()) as switcher:
        text, received, request_id = await collect(switcher)
        trace = switcher.inspect_request(request_id)
        views = {v.target_id: v for v in switcher.list_targets()}
    assert text == ANSWER
    assert received[-1]["oswitch"]["target_id"] == "b"
    assert sorted((a.target_id, a.decision, a.hedge) for a in trace.attempts) == [
        ("a", "hedge_lost", False),
        ("b", "return", True),
    ]
    assert views["a"].failures_by_class == {} and views["a"].in_flight == 0


def test_nothing_outside_the_dispatcher_writes_a_runs_fields() -> None:
    """ChatStream and the switcher change a request's run and ledger only through their
    methods: no assignment to an attribute of ``run``, ``self._run`` or a ``.ledger``."""
    package = Path(__file__).resolve().parent.parent / "oswitch"
    writes = []
    for path in sorted(package.rglob("*.py")):
        if path.name in ("dispatcher.py", "ledger.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = list(node.targets)
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            for written in targets:
                if not isinstance(written, ast.Attribute):
                    continue
                owner = written.value
                if (isinstance(owner, ast.Name) and owner.id == "run") or (
                    isinstance(owner, ast.Attribute) and owner.attr in ("_run", "ledger")
                ):
                    writes.append(f"{path.name}:{node.lineno} {ast.unparse(written)}")
    assert writes == []
