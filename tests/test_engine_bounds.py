"""What a request leaves behind is bounded: traces by count and bytes, and every
client-chosen string the engine keeps or writes is clipped."""

from __future__ import annotations

import gc
import logging
import tracemalloc

import httpx
import pytest

from oswitch import AllTargetsFailed, RequestFailed
from oswitch.core.clip import MAX_NAME_CHARS, MAX_TEXT_CHARS, clip
from oswitch.core.target_health import MAX_MODEL_COOLDOWNS
from oswitch.core.trace import TraceBuilder, TraceStore
from oswitch.runtime.router import POOL_CACHE_SIZE
from oswitch.runtime.switcher import open_switcher
from oswitch.testing import FakeProvider, rate_limited, server_error
from support import chat, config, target

FOUR_MB = 4 * 1024 * 1024


async def _model_not_found(request: httpx.Request) -> httpx.Response:
    """404 model_not_found, keeping nothing of the (huge) request."""
    return httpx.Response(
        404,
        json={
            "error": {
                "message": "The model does not exist",
                "type": "invalid_request_error",
                "code": "model_not_found",
            }
        },
    )


def test_clip_keeps_short_strings_and_bounds_long_ones_distinctly() -> None:
    """Strings that fit are returned as they are; longer ones are cut to the limit with a
    digest, so two long names with one head stay distinct, and clipping is idempotent."""
    assert clip("gpt-4o") == "gpt-4o"
    first, second = clip("m" * FOUR_MB + "1"), clip("m" * FOUR_MB + "2")
    assert len(first) == len(second) == MAX_NAME_CHARS
    assert first != second
    assert first.startswith("m" * 100) and f"[+{FOUR_MB + 1} chars #" in first
    assert clip(first) == first
    assert len(clip("\ud800" * 5000, 50)) == 50  # a lone surrogate does not break it


async def test_huge_model_names_leave_bounded_traces_and_no_memory_behind(
    autojump_clock: object,
) -> None:
    """250 requests with distinct 4 MB model names (half of them with 4 MB request ids
    too) are refused at the door with short errors; what is kept of them — traces,
    messages, cooldowns — is clipped, and memory held afterwards is small."""
    cfg = config(target("a", model=None), trace_store_bytes=256 * 1024)
    async with open_switcher(cfg, transport=httpx.MockTransport(_model_not_found)) as switcher:
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            errors: list[tuple[int, str | None]] = []
            for n in range(250):
                name = f"{n:04d}" + "m" * FOUR_MB
                request_id = f"r{n}-" + ("x" * FOUR_MB if n % 2 else "")
                try:
                    await switcher.complete(chat(model=name), request_id=request_id)
                except (AllTargetsFailed, RequestFailed) as caught:
                    errors.append((len(str(caught)), caught.request_id))
            del name, request_id
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        stats = switcher.statistics()
        view = switcher.list_targets()[0]
        last = switcher.inspect_request("r248-")
    assert held < 4 * 1024 * 1024  # was 2 GB: each name kept whole in several places
    assert len(errors) == 250
    assert max(message for message, _ in errors) < 2 * MAX_TEXT_CHARS
    assert {request_id for n, (_, request_id) in enumerate(errors) if n % 2} == {None}
    assert stats.trace_bytes <= 256 * 1024
    assert 0 < stats.traces_kept <= 125
    assert len(last.model) <= MAX_NAME_CHARS and last.attempts == ()
    assert all(len(model) <= MAX_NAME_CHARS for model in view.model_cooldowns)


async def test_audit_events_clip_every_string_field(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    """An audit event never carries a client's string whole (model names, request ids):
    a 100k-character model name is refused at the door, and the longest names the door
    lets through stay within the event's text bound."""
    caplog.set_level(logging.INFO, logger="oswitch.audit")
    fake = FakeProvider().on("key-a", server_error())
    async with open_switcher(config(target("a", model=None)), transport=fake.transport()) as s:
        with pytest.raises(RequestFailed):
            await s.complete(chat(model="m" * 100_000), request_id="r-huge-model")
        with pytest.raises(AllTargetsFailed):
            await s.complete(chat(model="m" * 256), request_id="r" * 128)
    events = [r for r in caplog.records if r.name == "oswitch.audit"]
    assert {r.getMessage() for r in events} >= {"attempt", "request_failed"}
    for record in events:
        for key in ("model", "request_id", "note"):
            assert len(str(getattr(record, key, "") or "")) <= MAX_TEXT_CHARS


def test_trace_store_evicts_by_bytes_as_traces_grow() -> None:
    """The store evicts the oldest traces once their estimated bytes pass the budget,
    also when a trace grows after it was stored; the newest is always kept."""
    from oswitch.core.trace import AttemptRecord

    store = TraceStore(capacity=1000, max_bytes=20_000)
    for n in range(100):
        trace = TraceBuilder(request_id=f"r{n}", model="gpt-4o", stream=False, started_at=0.0)
        store.add(trace)
        for attempt in range(3):
            trace.add(
                AttemptRecord(
                    index=attempt,
                    target_id="a",
                    model="gpt-4o",
                    started_at=0.0,
                    duration_s=0.0,
                    error_class=None,
                    decision="retry",
                    note="n" * 5000,
                )
            )
        assert store.bytes_kept <= 20_000 or len(store) == 1
    assert store.get("r99") is not None and store.get("r0") is None
    assert sum(t.size for t in store._traces.values()) == store.bytes_kept
    store.resize(1000, max_bytes=1)
    assert len(store) == 1 and store.get("r99") is not None


async def test_passthrough_cooldowns_per_model_are_bounded(autojump_clock: object) -> None:
    """A passthrough target cools each model it was rate-limited for, but never keeps
    more than MAX_MODEL_COOLDOWNS of them however many names callers invent."""
    fake = FakeProvider().on("key-a", rate_limited(100.0))
    cfg = config(target("a", model=None), max_wait_ms=0)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        for n in range(MAX_MODEL_COOLDOWNS + 200):
            with pytest.raises(AllTargetsFailed):
                await switcher.complete(chat(model=f"model-{n}"))
        view = switcher.list_targets()[0]
        router = switcher._router
    assert MAX_MODEL_COOLDOWNS // 2 <= len(view.model_cooldowns) <= MAX_MODEL_COOLDOWNS
    assert f"model-{MAX_MODEL_COOLDOWNS + 199}" in view.model_cooldowns  # the newest kept
    assert len(router._pools) <= 2  # unknown model names share one cache entry
    assert len(router._reachable) <= 1  # and one entry of what their chain reaches


async def test_request_tags_no_target_has_are_not_cached(autojump_clock: object) -> None:
    """Routing caches pools by the names it knows: tags no target has never enter the
    cache, and a required tag no target has is refused as no target accepting it."""
    fake = FakeProvider().on("key-a", server_error())
    cfg = config(target("a", policy_tags=("eu",)), retry_budget=0, failover_budget=0)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        for n in range(POOL_CACHE_SIZE + 10):
            with pytest.raises(AllTargetsFailed):
                await switcher.complete(chat(oswitch={"avoid_tags": [f"t{n}-" + "x" * 200]}))
        with pytest.raises(AllTargetsFailed, match="accepts this request"):
            await switcher.complete(chat(oswitch={"require_tags": ["nowhere" * 30]}))
        pools = dict(switcher._router._pools)
        reachable = dict(switcher._router._reachable)
    assert len(pools) == 1
    assert len(reachable) == 1  # the route check's cache leaves invented tags out too
    ((_, needs),) = pools
    assert needs.avoid_tags == frozenset()
