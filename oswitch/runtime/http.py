"""httpx clients for targets: one per target, sharing one TLS context and settings."""

from __future__ import annotations

import functools
import ssl

import httpx

# httpx timeouts are per-phase inactivity limits; the real deadlines are trio cancel
# scopes. Only the pool wait is bounded here, so that an exhausted pool shows up as a
# PoolTimeout (a local fault) instead of looking like a silent provider.
CLIENT_TIMEOUT = httpx.Timeout(None, pool=5.0)


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One default TLS context for every target (building one costs ~20 ms)."""
    return httpx.create_ssl_context()


class BorrowedTransport(httpx.AsyncBaseTransport):
    """Wraps a transport oswitch was given, so closing a client never closes it."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._transport.handle_async_request(request)

    async def aclose(self) -> None:
        # Not ours to close: the caller who passed the transport owns it.
        pass


def make_client(
    *, max_connections: int, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient:
    """Build a target's client.

    With ``transport`` the client borrows it (never closes it); otherwise it owns
    a real connection pool of at most ``max_connections`` connections.
    """
    if transport is not None:
        return httpx.AsyncClient(transport=BorrowedTransport(transport), timeout=CLIENT_TIMEOUT)
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    own = httpx.AsyncHTTPTransport(verify=shared_ssl_context(), limits=limits)
    return httpx.AsyncClient(transport=own, timeout=CLIENT_TIMEOUT)
