"""Serving a FakeProvider on a real loopback socket (hypercorn), for tests over the wire."""

from __future__ import annotations

import functools

import trio

from oswitch.testing.asgi import FakeProviderApp
from oswitch.testing.provider import FakeProvider


async def serve_fake_provider(
    fake: FakeProvider,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``fake``'s scripts over HTTP on ``host:port`` until cancelled.

    Reports the bound port through ``task_status`` (port 0 picks a free one), so a
    target's ``base_url`` can be ``f"http://127.0.0.1:{port}/v1"``. A behaviour that
    breaks the connection (``stream(reset_after=...)``) aborts it for real.
    """
    # Imported here: only tests over real sockets need a server.
    import hypercorn
    import hypercorn.trio

    config = hypercorn.Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = 0.1
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            functools.partial(hypercorn.trio.serve, FakeProviderApp(fake), config)
        )
        task_status.started(int(str(binds[0]).rsplit(":", 1)[1]))
