"""The ASGI face of a FakeProvider: its scripts served over real HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from oswitch.testing.playback import PlayedBody
from oswitch.testing.provider import FakeProvider


class FakeProviderApp:
    """ASGI bridge: serves a FakeProvider's scripts over real HTTP.

    A client that goes away cancels the answer in progress, as it would cancel a
    real provider's work; a streamed body is sent piece by piece as it is played.
    """

    def __init__(self, fake: FakeProvider) -> None:
        self._fake = fake

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            await trio.lowlevel.checkpoint()  # a scope type no server sends us
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        host, port = scope["server"] or ("127.0.0.1", 80)
        query = scope.get("query_string", b"").decode()
        url = f"http://{host}:{port}{scope['path']}" + (f"?{query}" if query else "")
        request = httpx.Request(
            scope["method"], url, headers=[(k, v) for k, v in scope["headers"]], content=body
        )
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            response = await self._fake.handle(request)
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k.encode(), v.encode())
                        for k, v in response.headers.items()
                        if k.lower() not in ("content-length", "transfer-encoding")
                    ],
                }
            )
            body_stream = response.stream
            if isinstance(body_stream, PlayedBody):
                try:
                    async for piece in body_stream:
                        await send({"type": "http.response.body", "body": piece, "more_body": True})
                finally:
                    await body_stream.aclose()
            else:
                content = await response.aread()
                await send({"type": "http.response.body", "body": content, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()
