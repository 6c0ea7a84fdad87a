"""oswitch.metrics for an embedded switcher (no sidecar): the move counter counts each
decision that sent a request on, once, by its name (virtual clock)."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from oswitch import AllTargetsFailed
from oswitch.metrics import SwitcherMetrics
from oswitch.runtime.switcher import open_switcher
from oswitch.testing import (
    Behaviour,
    FakeProvider,
    context_too_long,
    model_overloaded,
    rate_limited,
    reply,
    server_error,
    stream,
)
from support import chat, config, target


def moves(metrics: SwitcherMetrics) -> dict[str, float]:
    """``oswitch_failovers_total`` by decision, as a scraper reads it."""
    return {
        sample.labels["decision"]: sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
        if sample.name == "oswitch_failovers_total"
    }


@pytest.mark.parametrize(
    ("first", "fields", "expected"),
    [
        (rate_limited(30.0), {}, {"cooldown": 1.0}),
        (server_error(), {}, {"backoff": 1.0}),
        (model_overloaded(), {}, {"failover": 1.0}),
        (reply(latency=5.0), {"hedge_after_ms": 500}, {"hedge": 1.0}),
    ],
    ids=["rate-limited", "server-error", "overloaded", "hedge"],
)
async def test_a_move_to_the_sibling_key_is_counted_by_its_decision(
    autojump_clock: object, first: Behaviour, fields: dict[str, Any], expected: dict[str, float]
) -> None:
    """Whatever made the request leave its first key, the move is one sample labelled
    with the decision the trace records (or ``hedge``)."""
    fake = FakeProvider().on("key-a", first).on("key-b", reply())
    cfg = config(target("a", operator_priority=1), target("b"), **fields)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        metrics = SwitcherMetrics(switcher)
        answer = await switcher.complete(chat())
        assert moves(metrics) == expected
    assert answer["oswitch"]["target_id"] == "b"


async def test_a_hop_to_a_fallback_model_is_counted_once(autojump_clock: object) -> None:
    """A context refusal walking ``fallbacks`` is one ``fallback`` move, not two (the hop
    is not counted again)."""
    fake = FakeProvider().on("key-a", context_too_long()).on("key-b", reply())
    cfg = config(target("a"), target("b", model="gpt-4.1"), fallbacks={"gpt-4o": ("gpt-4.1",)})
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        metrics = SwitcherMetrics(switcher)
        answer = await switcher.complete(chat())
        assert moves(metrics) == {"fallback": 1.0}
    assert answer["model"] == "gpt-4.1"


async def test_a_stream_resumed_elsewhere_is_a_resume(autojump_clock: object) -> None:
    """A stream cut after content and continued on the sibling counts one ``resume``."""
    text = "one two three four five six"
    fake = FakeProvider().on("key-a", stream(text, cut_after=3)).on("key-b", stream(text))
    cfg = config(target("a", operator_priority=1), target("b"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        metrics = SwitcherMetrics(switcher)
        async with switcher.stream(chat(stream=True)) as chunks:
            async for _ in chunks:
                pass
        assert moves(metrics) == {"resume": 1.0}


async def test_a_served_request_counts_no_move(autojump_clock: object) -> None:
    """A request its first target served leaves the counter empty."""
    fake = FakeProvider().on("key-a", reply())
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        metrics = SwitcherMetrics(switcher)
        await switcher.complete(chat())
        assert moves(metrics) == {}


async def test_the_decision_of_a_last_failed_attempt_is_counted(autojump_clock: object) -> None:
    """Counted when decided: the last attempt of a request that then runs out of budget
    counts its decision too (the request itself counts as AllTargetsFailed)."""
    fake = FakeProvider().on("key-a", server_error())
    cfg = config(target("a"), retry_budget=0, failover_budget=0)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        metrics = SwitcherMetrics(switcher)
        with pytest.raises(AllTargetsFailed):
            await switcher.complete(chat())
        assert moves(metrics) == {"backoff": 1.0}
