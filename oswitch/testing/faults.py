"""Answers that are not answers: a broken body, silence, a refused connection."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import trio

from oswitch.testing.behaviour import Behaviour


def malformed(latency: float = 0.0) -> Behaviour:
    """200 with a body that is not JSON."""

    async def respond(request: httpx.Request, _: Mapping[str, Any]) -> httpx.Response:
        return httpx.Response(200, text="<html>upstream proxy error</html>")  # noqa: ASYNC910 (a Responder: handle checkpoints)

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
