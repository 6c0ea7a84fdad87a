"""The HTTP path of a target: one connection pool per target, shared TLS settings.

A target's own pool is :class:`~oswitch.transport.HTTP1Pool`, called directly. A
transport given to ``open_switcher`` (``httpx.MockTransport`` in tests, or
``httpx.AsyncHTTPTransport`` for httpx's own pool) is called through
``handle_async_request``, never through an ``httpx.AsyncClient``: redirects,
cookies, auth flows and event hooks are not wanted between oswitch and a provider,
and skipping them is most of what a client costs per request. Deadlines are trio
cancel scopes around these calls.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Mapping
from typing import Any

import attrs
import httpx
import trio

from oswitch.core.json_codec import encode
from oswitch.transport import HTTP1Pool

# httpx timeouts are per-phase inactivity limits; the real deadlines are trio cancel
# scopes. Only the pool wait is bounded here, so that an exhausted pool shows up as a
# PoolTimeout (a local fault) instead of looking like a silent provider.
TIMEOUTS = {"connect": None, "read": None, "write": None, "pool": 5.0}


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One default TLS context for every target (building one costs ~20 ms): httpx's
    defaults (certifi, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``), offering HTTP/1.1."""
    context = httpx.create_ssl_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


def encode_json(body: Mapping[str, Any]) -> bytes:
    """JSON as httpx sends it: compact, UTF-8 (orjson; see oswitch.core.json_codec).
    No request reaching here holds NaN or Infinity: the request check refused it."""
    return encode(body)


@attrs.frozen(kw_only=True)
class TransportStatistics:
    """The connections of a target's own pool (zeros for a borrowed transport)."""

    connections: int
    idle: int
    requests: int


class TargetTransport:
    """Sends a target's requests: over its own pool, or a transport it was given.

    A given transport is borrowed: ``aclose`` leaves it open for its owner. An own
    pool (:class:`HTTP1Pool`) has ``max_connections`` connections, the target's
    concurrency limit, so an attempt the target admits never queues inside it.
    """

    def __init__(self, *, max_connections: int, transport: httpx.AsyncBaseTransport | None) -> None:
        self.owned = transport is None
        self._pool: HTTP1Pool | None = None
        if transport is None:
            self._pool = HTTP1Pool(
                max_connections=max_connections,
                ssl_context=shared_ssl_context(),
                pool_timeout_s=TIMEOUTS["pool"] or 5.0,
            )
            transport = self._pool
        self._transport = transport
        self._requests = 0
        self._urls: dict[str, httpx.URL] = {}  # a target posts to one or two URLs

    async def post(self, url: str, headers: Mapping[str, str], content: bytes) -> httpx.Response:
        """POST ``content`` (a JSON body, :func:`encode_json`); returns once the
        response headers are in.

        The body is not read: the caller reads it (or streams it) and must
        ``aclose()`` the response. Raises httpx's transport errors.
        """
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) > 64:
                self._urls.clear()
            parsed = self._urls[url] = httpx.URL(url)
        self._requests += 1
        if self._pool is not None:
            return await self._pool.post(parsed, headers, content)
        request = httpx.Request(
            "POST",
            parsed,
            headers={**headers, "content-length": str(len(content))},
            content=content,
            extensions={"timeout": TIMEOUTS},
        )
        response = await self._transport.handle_async_request(request)
        response.request = request
        return response

    def statistics(self) -> TransportStatistics:
        """Connections in the pool and requests sent. Never raises."""
        if self._pool is None:
            return TransportStatistics(connections=0, idle=0, requests=self._requests)
        pool = self._pool.statistics()
        return TransportStatistics(
            connections=pool.connections, idle=pool.idle, requests=self._requests
        )

    def side_channel(self) -> TargetTransport:
        """A transport for a side call (a count_tokens) that must not take one of the
        target's own connections, which its admitted attempts rely on: one connection
        of its own, or the same borrowed transport. Close it with :meth:`aclose`."""
        return TargetTransport(max_connections=1, transport=None if self.owned else self._transport)

    async def aclose(self) -> None:
        """Close the pool if it is ours; a borrowed transport is left alone."""
        if self.owned:
            await self._transport.aclose()
        else:
            await trio.lowlevel.checkpoint()
