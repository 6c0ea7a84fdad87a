"""Embed oswitch in a trio program: runs with no API keys and no network.

    python examples/embed.py

Three fake upstreams stand in for three API keys that serve one model. One is
rate-limited for a second, one answers 500 every time, one never answers at
all. oswitch keeps answering, and each request's trace says where it went and
why. The same program runs against real providers if you drop ``transport=``
and give the targets real keys (``api_key_env``).
"""

from __future__ import annotations

import random
from typing import Any

import trio

import oswitch
from oswitch.testing import FakeProvider, hang, rate_limited, reply, server_error

MODEL = "gpt-4o-mini"


def build_config() -> oswitch.SwitcherConfig:
    """Three targets (one key each) serving one model, validated by parse_config."""

    def key(name: str) -> dict[str, Any]:
        return {
            "target_id": name,
            "provider_id": "fake",
            "base_url": "https://llm.fake.test/v1",
            "api_key": f"key-{name}",  # the fake routes by key; see fake_upstreams()
            "model": MODEL,
        }

    return oswitch.parse_config(
        {
            # A silent provider is abandoned after 0.3 s (the attempt limit) and the
            # request fails over; it is never waited on twice.
            "max_expected_latency_ms": 300,
            "request_timeout_ms": 10_000,
            "backoff": {"base_ms": 200, "jitter": "none"},
            "circuit_breaker": {"failure_threshold": 2, "half_open_after_ms": 60_000},
            "targets": [key("limited"), key("broken"), key("silent")],
        }
    )


def fake_upstreams() -> FakeProvider:
    """The scripted providers, one route per key; a route's last behaviour repeats."""
    fake = FakeProvider()
    fake.on("key-limited", rate_limited(retry_after=1.0), reply("hello from limited"))
    fake.on("key-broken", server_error(500))
    fake.on("key-silent", hang())
    return fake


async def ask(switcher: oswitch.Switcher, text: str) -> str:
    """Send one question; return a line saying how it ended (every error is typed)."""
    request = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
    started = trio.current_time()
    try:
        answer = await switcher.complete(request)
    except oswitch.Overloaded as exc:
        # Refused at once by admission control: nothing was sent upstream.
        return f"{text}: overloaded, retry in {exc.retry_after:.1f}s"
    except oswitch.AllTargetsFailed as exc:
        # Budgets, deadline or eligibility ran out; retry_after says when a target frees up.
        retry = "unknown" if exc.retry_after is None else f"{exc.retry_after:.1f}s"
        return (
            f"{text}: AllTargetsFailed after {exc.attempts} attempt(s) in"
            f" {trio.current_time() - started:.1f}s, last {exc.error_class}, retry in {retry}"
        )
    except oswitch.RequestFailed as exc:
        # The request itself is at fault: resending it unchanged cannot help.
        return f"{text}: RequestFailed {exc.error_class} (status {exc.status}): {exc.message}"
    elapsed = trio.current_time() - started
    served = answer["oswitch"]
    lines = [
        f"{text}: {answer['choices'][0]['message']['content']!r} from {served['target_id']}"
        f" after {served['attempts']} attempt(s) in {elapsed:.1f}s"
    ]
    for attempt in switcher.inspect_request(served["request_id"]).attempts:
        lines.append(
            f"    {attempt.target_id:<8} {attempt.error_class or 'ok':<24} → {attempt.decision}"
        )
    return "\n".join(lines)


async def main() -> None:
    start = trio.current_time()
    fake = fake_upstreams()
    config = build_config()
    async with oswitch.open_switcher(
        config, transport=fake.transport(), rng=random.Random(1)
    ) as switcher:
        with switcher.events.subscribe(frozenset({"targets"})) as target_events:
            for n in range(1, 4):
                print(await ask(switcher, f"question {n}"))

            print("\ntargets:")
            for view in switcher.list_targets():
                print(
                    f"    {view.target_id:<8} {view.state:<8} {view.condition:<14}"
                    f" breaker {view.breaker_state:<6} failures {dict(view.failures_by_class)}"
                )

            print("\noperator: pause limited")
            await switcher.pause_target("limited")
            print(await ask(switcher, "question 4"))
            await switcher.resume_target("limited")

            print("\nerrors:")
            try:
                await switcher.complete({"model": MODEL, "messages": []})
            except oswitch.RequestFailed as exc:
                print(f"    RequestFailed {exc.error_class}: {exc.message}")
            try:
                await switcher.complete(
                    {"model": "llama-3", "messages": [{"role": "user", "content": "hi"}]}
                )
            except oswitch.RequestFailed as exc:
                print(f"    RequestFailed {exc.error_class} (status {exc.status}): {exc.message}")

            print("\ntarget events:")
            while True:
                try:
                    event = target_events.receive_nowait()
                except trio.WouldBlock:
                    break
                fields = {k: v for k, v in event.fields.items() if v is not None}
                print(f"    {event.at - start:4.1f}s {event.name} {fields}")

    routes = ("key-limited", "key-broken", "key-silent")
    print(f"\nupstream calls: { {route: fake.calls_to(route) for route in routes} }")


if __name__ == "__main__":
    trio.run(main)
