"""The fake provider's TokenMeter: enforces a key's token budget and reports it in
OpenAI's or Anthropic's headers, which oswitch's parser reads back."""

from __future__ import annotations

import httpx
import trio

from oswitch.core.ratelimit_headers import parse_limits
from oswitch.testing import FakeProvider
from oswitch.testing.metered import TokenMeter, go_duration, metered


async def post(client: httpx.AsyncClient, max_tokens: int) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 400}]}
    return await client.post(
        "https://fake.test/v1/chat/completions",
        json={**body, "max_tokens": max_tokens},
        headers={"authorization": "Bearer k"},
    )


async def test_meter_enforces_and_reports_openai_style(autojump_clock: object) -> None:
    """Past its budget the meter answers 429 with a delay; every reply reports the
    budget in x-ratelimit headers, the unused completion given back."""
    meter = TokenMeter(tokens_per_minute=1000, completion_fraction=0.5)
    fake = FakeProvider().on("k", metered(meter))
    async with httpx.AsyncClient(transport=fake.transport()) as client:
        first = await post(client, 500)  # 100 prompt + 500 taken, 250 given back
        second = await post(client, 700)
        await trio.sleep(1.0)
    assert first.status_code == 200
    assert first.json()["usage"] == {
        "prompt_tokens": 100,
        "completion_tokens": 250,
        "total_tokens": 350,
    }
    limits = parse_limits(first.headers, now=0.0)
    assert (limits.tokens.limit, limits.tokens.remaining) == (1000, 650)
    assert limits.tokens.reset_at == 21.0  # 350 tokens at 1000 a minute
    assert second.status_code == 429
    assert "Please try again in 9s" in second.json()["error"]["message"]
    assert (meter.admitted, meter.rejected, meter.prompt_tokens, meter.completion_tokens) == (
        1, 1, 100, 250,
    )  # fmt: skip
    assert meter.window_peak() == 350


async def test_meter_reports_anthropic_style(autojump_clock: object) -> None:
    """With Anthropic-style headers the reset is an RFC 3339 time the parser reads."""
    meter = TokenMeter(tokens_per_minute=1000, headers="anthropic")
    fake = FakeProvider().on("k", metered(meter))
    async with httpx.AsyncClient(transport=fake.transport()) as client:
        reply = await post(client, 100)
    limits = parse_limits(reply.headers, now=0.0)
    assert limits.dialect == "anthropic"
    assert (limits.tokens.limit, limits.tokens.remaining) == (1000, 850)


def test_go_durations_look_like_openais() -> None:
    """Resets are written as OpenAI writes them."""
    assert [go_duration(s) for s in (0.12, 1.2, 360.0, 61.5)] == ["120ms", "1.2s", "6m0s", "1m1.5s"]
