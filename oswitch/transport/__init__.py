"""The HTTP/1.1 client under every target: a sans-IO wire module and a trio pool.

- :mod:`oswitch.transport.wire` — bytes in, values out: request heads, response heads,
  chunked / Content-Length / close framing. No sockets, no trio, no httpx.
- :mod:`oswitch.transport.pool` — :class:`HTTP1Pool`, which drives the wire module on
  trio streams: keep-alive, stale connections, the connection limit, TLS, idle expiry,
  and the ``httpx.AsyncBaseTransport`` face.

Nothing here imports the rest of oswitch.
"""

from oswitch.transport.pool import HTTP1Pool, PoolStatistics

__all__ = ["HTTP1Pool", "PoolStatistics"]
