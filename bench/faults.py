"""Fault scripts the bench adds on top of ``oswitch.testing``'s behaviours.

``oswitch.testing`` scripts one answer per call (a reply, a 429, a cut stream, ...).
The bench also needs answers that vary: a latency distribution, a random mix of
faults, a schedule that changes with time (a brown-out that worsens, a flapping
key) and a route that answers JSON or SSE by the request's own ``stream`` flag.
Each is a plain :class:`~oswitch.testing.Behaviour` wrapping others, so the same
scripts drive ``httpx.MockTransport`` in virtual time and a loopback HTTP server.
Randomness comes from an injected ``random.Random``; time from trio's clock.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import httpx
import trio

from oswitch.testing import Behaviour
from oswitch.testing.playback import PlayedBody

Pick = Callable[[Mapping[str, Any]], Behaviour]


def _delegating(name: str, pick: Pick, extra_latency: Callable[[], float] | None) -> Behaviour:
    """A behaviour that picks an inner one per call and plays it after its latency."""

    async def respond(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        inner = pick(body)
        delay = inner.latency + (extra_latency() if extra_latency is not None else 0.0)
        if math.isinf(delay):
            await trio.sleep_forever()
        if delay > 0:
            await trio.sleep(delay)
        return await inner.respond(request, body)

    return Behaviour(name=name, respond=respond)


def lognormal(median_s: float, sigma: float, rng: random.Random) -> Callable[[], float]:
    """A latency sampler: log-normal around ``median_s`` (``sigma`` is the log spread)."""
    mu = math.log(median_s) if median_s > 0 else -math.inf

    def sample() -> float:
        return 0.0 if median_s <= 0 else rng.lognormvariate(mu, sigma)

    return sample


def jittered(behaviour: Behaviour, latency: Callable[[], float]) -> Behaviour:
    """``behaviour``, delayed by a fresh ``latency()`` sample on every call."""
    return _delegating(behaviour.name, lambda _: behaviour, latency)


def mixture(choices: Sequence[tuple[float, Behaviour]], rng: random.Random) -> Behaviour:
    """Each call plays one of ``choices``, drawn by weight.

    Raises ValueError when no weight is positive.
    """
    weights = [max(0.0, weight) for weight, _ in choices]
    if not any(weights):
        raise ValueError("mixture() needs at least one positive weight")
    behaviours = [behaviour for _, behaviour in choices]

    def pick(_: Mapping[str, Any]) -> Behaviour:
        return rng.choices(behaviours, weights)[0]

    return _delegating("mixture", pick, None)


def timeline(at: Callable[[float], Behaviour]) -> Behaviour:
    """Each call plays ``at(elapsed)``, ``elapsed`` being seconds since this was built.

    Build it inside the trio run whose clock it should follow.
    """
    origin = trio.current_time()
    return _delegating("timeline", lambda _: at(trio.current_time() - origin), None)


def flapping(period_s: float, up: Behaviour, down: Behaviour, *, duty: float = 0.5) -> Behaviour:
    """Healthy for ``duty`` of every ``period_s``, then down for the rest, repeating."""

    def at(elapsed: float) -> Behaviour:
        return up if (elapsed % period_s) < duty * period_s else down

    return timeline(at)


def by_stream_flag(plain: Behaviour, streamed: Behaviour) -> Behaviour:
    """Answer with ``streamed`` when the request asks for a stream, else ``plain``."""
    return _delegating(
        "by_stream_flag", lambda body: streamed if body.get("stream") else plain, None
    )


def sse_reply(text: str, *, chunks: int = 16, model: str | None = None) -> Behaviour:
    """Stream ``text`` as OpenAI SSE, one network write per event (no faults).

    The overhead benchmark uses this rather than ``oswitch.testing.stream``, whose
    bodies are cut into tiny pieces to exercise SSE parsing, not to be cheap.
    """
    size = max(1, math.ceil(len(text) / chunks))
    pieces = [text[start : start + size] for start in range(0, len(text), size)]

    async def respond(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        served = model or str(body.get("model") or "fake-model")

        def event(delta: dict[str, Any], finish: str | None) -> bytes:
            payload = {
                "id": "chatcmpl-bench",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": served,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

        async def body_bytes() -> AsyncIterator[bytes]:
            yield event({"role": "assistant", "content": ""}, None)
            for piece in pieces:
                yield event({"content": piece}, None)
            yield event({}, "stop") + b"data: [DONE]\n\n"

        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=body_bytes()
        )

    return Behaviour(name="sse_reply", respond=respond)


def first_token_after(behaviour: Behaviour, delay: Callable[[], float]) -> Behaviour:
    """``behaviour`` with its response headers at once and its body held back a fresh
    ``delay()`` seconds: a model that is thinking (the first token comes late) rather
    than a server that is slow to answer at all. Over the wire the headers are sent
    first, as a real provider does."""

    async def respond(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        response = await behaviour.respond(request, body)
        inner = response.stream
        if not isinstance(inner, httpx.AsyncByteStream):
            return response
        wait = delay()

        async def held() -> AsyncIterator[bytes]:
            await trio.sleep(wait)
            pieces = inner.__aiter__()
            try:
                async for piece in pieces:
                    yield piece
            finally:
                await inner.aclose()

        response.stream = PlayedBody(held())
        return response

    return Behaviour(name=f"{behaviour.name} (first token late)", respond=respond)
