"""Fake providers for testing code that uses oswitch — no network, no keys.

``FakeProvider`` is a scripted upstream behind ``httpx.MockTransport``. Each route
(an API key, or a host for keyless targets) plays a list of behaviours in order,
the last one repeating. Latency runs on trio's clock, so under
``trio.testing.MockClock`` a 30-second hang costs no real time::

    fake = FakeProvider()
    fake.on("key-a", rate_limited(retry_after=2.0), reply("hello"))
    fake.on("key-b", server_error())
    async with open_switcher(config, transport=fake.transport()) as switcher:
        ...
    assert fake.calls_to("key-a") == 2
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
import httpx
import trio

Responder = Callable[[httpx.Request, Mapping[str, Any]], Awaitable[httpx.Response]]


@attrs.frozen(kw_only=True)
class Behaviour:
    """One scripted answer: wait ``latency`` seconds, then ``respond``."""

    name: str
    respond: Responder
    latency: float = 0.0


@attrs.frozen(kw_only=True)
class Call:
    """A request the fake received (the route label, never the key's position in a header)."""

    route: str
    path: str
    model: str | None
    body: Mapping[str, Any]
    at: float
    behaviour: str


def completion(text: str, *, model: str, finish_reason: str = "stop") -> dict[str, Any]:
    """An OpenAI chat.completion body answering ``text``."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": 1,
            "completion_tokens": max(1, len(text) // 4),
            "total_tokens": 1 + max(1, len(text) // 4),
        },
    }


def reply(text: str = "ok", *, latency: float = 0.0, model: str | None = None) -> Behaviour:
    """Answer 200 with ``text`` (the reply's model is ``model`` or the one asked for)."""

    async def respond(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        served = model or str(body.get("model") or "fake-model")
        return httpx.Response(200, json=completion(text, model=served))

    return Behaviour(name="reply", respond=respond, latency=latency)


def error(
    status: int,
    body: Mapping[str, Any] | str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    latency: float = 0.0,
    name: str | None = None,
) -> Behaviour:
    """Answer ``status`` with ``body`` (JSON when a mapping) and ``headers``."""

    async def respond(request: httpx.Request, _: Mapping[str, Any]) -> httpx.Response:
        if isinstance(body, Mapping):
            return httpx.Response(status, json=dict(body), headers=dict(headers or {}))
        return httpx.Response(status, text=body or "", headers=dict(headers or {}))

    return Behaviour(name=name or f"error {status}", respond=respond, latency=latency)


def _openai_error(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def rate_limited(retry_after: float | None = 1.0, *, latency: float = 0.0) -> Behaviour:
    """429 rate limit, with ``retry-after-ms`` when ``retry_after`` is given."""
    headers = {} if retry_after is None else {"retry-after-ms": str(int(retry_after * 1000))}
    return error(
        429,
        _openai_error(
            "Rate limit reached for requests per min (RPM).", "requests", "rate_limit_exceeded"
        ),
        headers=headers,
        latency=latency,
        name="rate_limited",
    )


def quota_exhausted() -> Behaviour:
    """429 insufficient_quota: the key's billing quota is gone."""
    return error(
        429,
        _openai_error(
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            "insufficient_quota",
        ),
        name="quota_exhausted",
    )


def invalid_key() -> Behaviour:
    """401 invalid API key."""
    return error(
        401,
        _openai_error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
        name="invalid_key",
    )


def server_error(status: int = 500, *, latency: float = 0.0) -> Behaviour:
    """A 5xx from the provider."""
    return error(
        status,
        _openai_error(
            "The server had an error while processing your request.", "server_error", None
        ),
        latency=latency,
        name=f"server_error {status}",
    )


def model_overloaded() -> Behaviour:
    """529 overloaded_error, as Anthropic sends when a model is overloaded."""
    return error(
        529,
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        name="model_overloaded",
    )


def bad_request(message: str = "Invalid 'messages': empty array.") -> Behaviour:
    """400 invalid_request_error caused by the request itself."""
    return error(400, _openai_error(message, "invalid_request_error", None), name="bad_request")


def context_too_long() -> Behaviour:
    """400 context_length_exceeded."""
    return error(
        400,
        _openai_error(
            "This model's maximum context length is 8192 tokens. However, your messages "
            "resulted in 9000 tokens.",
            "invalid_request_error",
            "context_length_exceeded",
        ),
        name="context_too_long",
    )


def malformed(latency: float = 0.0) -> Behaviour:
    """200 with a body that is not JSON."""

    async def respond(request: httpx.Request, _: Mapping[str, Any]) -> httpx.Response:
        return httpx.Response(200, text="<html>upstream proxy error</html>")

    return Behaviour(name="malformed", respond=respond, latency=latency)


def hang() -> Behaviour:
    """Never answer (until cancelled)."""

    async def respond(request: httpx.Request, _: Mapping[str, Any]) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    return Behaviour(name="hang", respond=respond)


def connect_error() -> Behaviour:
    """Refuse the connection, as a provider that is down does."""

    async def respond(request: httpx.Request, _: Mapping[str, Any]) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    return Behaviour(name="connect_error", respond=respond)


@attrs.define
class _Script:
    behaviours: list[Behaviour]
    position: int = 0

    def next(self) -> Behaviour:
        behaviour = self.behaviours[min(self.position, len(self.behaviours) - 1)]
        self.position += 1
        return behaviour


@attrs.define
class _Phases:
    """Behaviours by time since the fake was created: ``[(until_s, behaviour), ...]``."""

    phases: list[tuple[float, Behaviour]]
    origin: float

    def next(self) -> Behaviour:
        elapsed = trio.current_time() - self.origin
        for until, behaviour in self.phases:
            if elapsed < until:
                return behaviour
        return self.phases[-1][1]


class FakeProvider:
    """A scripted OpenAI-compatible upstream for ``httpx.MockTransport``.

    A request is matched to a route by its key (``Authorization: Bearer`` or
    ``x-api-key``), else by its host. Unmatched requests get 404 with a message
    naming the route, so a typo in a test fails loudly.
    """

    def __init__(self) -> None:
        self._routes: dict[str, _Script | _Phases] = {}
        self.calls: list[Call] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.cancelled = 0

    def on(self, route: str, *behaviours: Behaviour) -> FakeProvider:
        """Play ``behaviours`` in order for ``route`` (a key or host); the last repeats."""
        if not behaviours:
            raise ValueError("on() needs at least one behaviour")
        self._routes[route] = _Script(list(behaviours))
        return self

    def phases(self, route: str, phases: Sequence[tuple[float, Behaviour]]) -> FakeProvider:
        """For ``route``, answer with each behaviour until its time (seconds since now)."""
        if not phases:
            raise ValueError("phases() needs at least one phase")
        self._routes[route] = _Phases(list(phases), trio.current_time())
        return self

    def calls_to(self, route: str) -> int:
        return sum(1 for call in self.calls if call.route == route)

    def transport(self) -> httpx.MockTransport:
        """The transport to pass to ``open_switcher(config, transport=...)``."""
        return httpx.MockTransport(self.handle)

    def _route_of(self, request: httpx.Request) -> str:
        auth = request.headers.get("authorization", "")
        key = auth[7:] if auth.lower().startswith("bearer ") else request.headers.get("x-api-key")
        if key and key in self._routes:
            return str(key)
        return str(request.url.host)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request by its route's script (the MockTransport handler)."""
        route = self._route_of(request)
        script = self._routes.get(route)
        try:
            body = json.loads(request.content or b"{}")
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if script is None:
            return httpx.Response(
                404, json={"error": {"message": f"no fake route for {route!r}", "type": "fake"}}
            )
        behaviour = script.next()
        self.calls.append(
            Call(
                route=route,
                path=request.url.path,
                model=body.get("model"),
                body=body,
                at=trio.current_time(),
                behaviour=behaviour.name,
            )
        )
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if behaviour.latency > 0 and not math.isinf(behaviour.latency):
                await trio.sleep(behaviour.latency)
            return await behaviour.respond(request, body)
        except trio.Cancelled:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
