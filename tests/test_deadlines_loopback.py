"""Issue 13's three rows over real loopback sockets, every duration scaled by 0.01
(the learned deadlines' floors, caps and cold starts through
``DeadlinePolicies().scaled(0.01)``, the provider's timings by hand). Real clock,
guarded by ``fail_after``; what is asserted is never a time: the answer is whole,
which target served it, and that the faulty target was tried exactly once."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from bench.faults import first_token_after
from oswitch.config import SwitcherConfig
from oswitch.core.deadline_learning import DeadlinePolicies
from oswitch.runtime.switcher import open_switcher
from oswitch.testing import Behaviour, FakeProvider, hang, serve_fake_provider, stream
from support import chat, config, target

SCALE = 0.01
ANSWER = " ".join(f"word{n}" for n in range(40))
FALLBACK = "gpt-4o-mini"


def _rows() -> dict[str, Behaviour]:
    return {
        # Accepts the connection and never answers.
        "silent": hang(),
        # Headers at once, the first token after 20 s (scaled: 0.2 s).
        "slow_first_token": first_token_after(stream(ANSWER), lambda: 20.0 * SCALE),
        # 20 tokens, then silence.
        "stall": stream(ANSWER, stall_after=20, chunk_latency=0.001),
    }


def _config(port: int, *, siblings: bool) -> SwitcherConfig:
    url = f"http://127.0.0.1:{port}/v1"
    primaries = [target("a", base_url=url, operator_priority=1)]
    if siblings:
        primaries += [target("b", base_url=url), target("c", base_url=url)]
    return config(
        *primaries,
        target("fb", model=FALLBACK, base_url=url),
        fallbacks={"gpt-4o": (FALLBACK,)},
    )


@pytest.mark.parametrize("siblings", [False, True], ids=["fallback", "siblings"])
@pytest.mark.parametrize("row", ["silent", "slow_first_token", "stall"])
async def test_each_row_is_answered_whole_elsewhere_trying_the_faulty_target_once(
    row: str, siblings: bool
) -> None:
    """Over loopback, a silent, slow or stalled first target gives the caller the whole
    answer from a sibling (when there is one) or the fallback model, and is tried once."""
    fake = FakeProvider().on("key-a", _rows()[row])
    for key in ("key-b", "key-c", "key-fb"):
        fake.on(key, stream(ANSWER, chunk_latency=0.0005))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_fake_provider, fake)
            async with open_switcher(
                _config(port, siblings=siblings),
                deadline_policies=DeadlinePolicies().scaled(SCALE),
            ) as switcher:
                async with switcher.stream(chat()) as chunks:
                    received: list[dict[str, Any]] = [chunk async for chunk in chunks]
                trace = switcher.inspect_request(chunks.request_id)
            nursery.cancel_scope.cancel()
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in received)
    assert text == ANSWER
    served = received[-1]["oswitch"]["target_id"]
    assert served in (("b", "c") if siblings else ("fb",))
    assert fake.calls_to("key-a") == 1
    assert [a.target_id for a in trace.attempts].count("a") == 1
