"""The store edge: a coredis client on trio, every call bounded, retries off.

coredis 6 runs on trio through anyio (one multiplexed connection, real
cancellation, no thread pool). Its own retries are off (``NoRetryPolicy``): a store
that does not answer within ``timeout_ms`` has failed this call, and the link's
store breaker decides what follows. Scripts go by hash and are re-sent whole on
``NOSCRIPT``; nothing here calls ``SCRIPT LOAD`` (proxies often block it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from oswitch.fleet.scripts import SCRIPTS, sha1

log = logging.getLogger("oswitch.fleet")

# A pub/sub message larger than this is dropped unread (the resync still converges).
MAX_EVENT_BYTES = 64 * 1024


class StoreError(Exception):
    """A store call failed or timed out. The message never carries the URL."""


class Store:
    """One client for one store URL. Get one from :func:`open_store`."""

    def __init__(self, client: Any, *, timeout_s: float) -> None:
        self._client = client
        self.timeout_s = timeout_s
        self._shas = {name: sha1(text) for name, text in SCRIPTS.items()}

    async def script(
        self, name: str, keys: Sequence[str], args: Sequence[str | int | float]
    ) -> Any:
        """Run script ``name``; blocks at most ``timeout_s`` (twice when the store
        lost the script and it is re-sent whole). Raises StoreError."""
        from coredis.exceptions import NoScriptError

        try:
            with trio.fail_after(self.timeout_s):
                try:
                    return await self._client.evalsha(self._shas[name], keys=keys, args=args)
                except NoScriptError:
                    pass
            log.info("store_script_resent", extra={"note": name})
            with trio.fail_after(self.timeout_s):
                return await self._client.eval(SCRIPTS[name], keys=keys, args=args)
        except trio.TooSlowError:
            raise StoreError(f"store did not answer within {self.timeout_s * 1000:g} ms") from None
        except Exception as exc:
            raise StoreError(_describe(exc)) from None

    async def ping(self) -> None:
        """One PING within ``timeout_s``; raises StoreError."""
        try:
            with trio.fail_after(self.timeout_s):
                await self._client.ping()
        except trio.TooSlowError:
            raise StoreError(f"store did not answer within {self.timeout_s * 1000:g} ms") from None
        except Exception as exc:
            raise StoreError(_describe(exc)) from None

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """Subscribe to ``channel``; yields an iterator of decoded JSON messages.

        Connecting is bounded by ``timeout_s``; a lost connection ends the iterator
        with StoreError (the caller resubscribes and resyncs: messages published
        meanwhile are lost). coredis's own reconnection is off.
        """
        try:
            async with self._client.pubsub(
                channels=[channel], retry_policy=None, ignore_subscribe_messages=True
            ) as pubsub:
                yield _decoded(pubsub)
        except StoreError:
            raise
        except BaseExceptionGroup as group:
            # coredis' cleanup of a cancelled subscription can fail beside the
            # Cancelled (it unsubscribes on a closed connection): keep the Cancelled.
            cancelled, _ = group.split(trio.Cancelled)
            if cancelled is not None:
                raise cancelled from None
            raise StoreError(_describe(_leaf(group))) from None
        except Exception as exc:
            raise StoreError(_describe(exc)) from None


async def _decoded(pubsub: Any) -> AsyncIterator[dict[str, Any]]:
    async for message in pubsub:
        data = message.get("data")
        if not isinstance(data, bytes | str) or len(data) > MAX_EVENT_BYTES:
            continue
        try:
            decoded = json.loads(data)
        except ValueError:
            continue
        if isinstance(decoded, dict):
            yield decoded
    raise StoreError("store subscription ended")


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    # The class and coredis' message (which names host and port, never the password).
    text = str(exc).split("\n", 1)[0][:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@asynccontextmanager
async def open_store(url: str, *, timeout_s: float) -> AsyncIterator[Store]:
    """A client for ``url`` (``redis://``, ``rediss://``, ``unix://``). Opening
    blocks on nothing: an unreachable store fails the first call, not this."""
    import coredis
    from coredis.retry import NoRetryPolicy

    client = coredis.Redis.from_url(
        url,
        retry_policy=NoRetryPolicy(),
        stream_timeout=timeout_s,
        connect_timeout=timeout_s,
        decode_responses=False,
    )
    async with client:
        yield Store(client, timeout_s=timeout_s)
