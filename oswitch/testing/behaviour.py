"""What a fake provider does with one request: a named, scripted answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import httpx

# Called with the request and its parsed JSON body ({} when it has none). It need not
# checkpoint: FakeProvider.handle has (waiting out the latency, or at once).
Responder = Callable[[httpx.Request, Mapping[str, Any]], Awaitable[httpx.Response]]


@attrs.frozen(kw_only=True)
class Behaviour:
    """One scripted answer: wait ``latency`` seconds, then ``respond``."""

    name: str
    respond: Responder
    latency: float = 0.0
