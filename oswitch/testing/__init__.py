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

Import everything from here; the modules below are the layout, not the API:
``behaviour`` (the Behaviour type), ``replies`` (completions and provider errors),
``faults`` (broken bodies, silence, refused connections), ``script``, ``sse``,
``playback`` and ``streams`` (streamed answers: what to say, the wire events, the
bytes played with their faults, the ``stream`` behaviour), ``provider`` (the
FakeProvider router and recorder), ``asgi`` and ``serve`` (the same scripts over
a real loopback socket).
"""

from __future__ import annotations

from oswitch.testing.behaviour import Behaviour, Responder
from oswitch.testing.faults import connect_error, hang, malformed
from oswitch.testing.provider import Call, FakeProvider
from oswitch.testing.replies import (
    bad_request,
    completion,
    context_too_long,
    error,
    invalid_key,
    model_overloaded,
    quota_exhausted,
    rate_limited,
    reply,
    server_error,
)
from oswitch.testing.script import continuation_of
from oswitch.testing.serve import serve_fake_provider
from oswitch.testing.streams import stream

__all__ = [
    "Behaviour",
    "Call",
    "FakeProvider",
    "Responder",
    "bad_request",
    "completion",
    "connect_error",
    "context_too_long",
    "continuation_of",
    "error",
    "hang",
    "invalid_key",
    "malformed",
    "model_overloaded",
    "quota_exhausted",
    "rate_limited",
    "reply",
    "serve_fake_provider",
    "server_error",
    "stream",
]
