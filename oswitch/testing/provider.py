"""``FakeProvider``: routes each request to its scripted behaviour and records it."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import httpx
import trio

from oswitch.testing.behaviour import Behaviour
from oswitch.testing.playback import PlayedBody


@attrs.frozen(kw_only=True)
class Call:
    """A request the fake received (the route label, never the key's position in a header)."""

    route: str
    path: str
    model: str | None
    body: Mapping[str, Any]
    at: float
    behaviour: str
    headers: Mapping[str, str] = attrs.field(factory=dict)
    """The request's headers but for its key (authorization, x-api-key)."""


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
        self.cancelled = 0  # answers cut short by a cancelled (abandoned) attempt
        self.closed_early = 0  # streamed bodies the client closed before their end
        self.open_streams = 0
        self.max_open_streams = 0

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
            await trio.lowlevel.checkpoint()
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
                headers={
                    name: value
                    for name, value in request.headers.items()
                    if name not in ("authorization", "x-api-key")
                },
            )
        )
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if behaviour.latency > 0 and not math.isinf(behaviour.latency):
                await trio.sleep(behaviour.latency)
            else:
                # A real provider's answer is never at hand without a wait: a request
                # is a schedule point, whatever the behaviour does.
                await trio.lowlevel.checkpoint()
            response = await behaviour.respond(request, body)
            if isinstance(response.stream, PlayedBody):
                response.stream.watcher = self
            return response
        except trio.Cancelled:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
