"""A live sidecar with its dashboard and control channel on 127.0.0.1, for the dashboard
tests (httpx and the headless browser) and for docs/dashboard's screenshots."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import trio

from oswitch.config import ServerConfig, parse_config
from oswitch.control import serve_control
from oswitch.core.secret import Secret
from oswitch.runtime.switcher import Switcher, open_switcher
from oswitch.sidecar.serve import serve_sidecar
from oswitch.testing import FakeProvider
from support import BASE_URL

TOKEN = "dashboard-token-7f3a-not-a-real-secret"
CLIENT_KEY = "sk-client-key-of-the-sidecar-0001"


def mapping(
    *ids: str,
    models: tuple[str, ...] = ("gpt-4o",),
    extra: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Targets ``ids`` on the fake provider (key ``key-<id>``), each serving one of
    ``models`` in turn; the first is the primary tier. ``extra``: more keys per id."""
    return {
        "targets": [
            {
                "target_id": target_id,
                "provider_id": "openai",
                "base_url": BASE_URL,
                "api_key": f"key-{target_id}",
                "model": models[index % len(models)],
                "operator_priority": 1 if index == 0 else 0,
                **(extra or {}).get(target_id, {}),
            }
            for index, target_id in enumerate(ids)
        ]
    }


@attrs.frozen(kw_only=True)
class Live:
    switcher: Switcher
    base: str  # http://127.0.0.1:PORT
    control_url: str  # ws://127.0.0.1:PORT
    shutdown: trio.Event


@asynccontextmanager
async def running_dashboard(
    fake: FakeProvider,
    *ids: str,
    models: tuple[str, ...] = ("gpt-4o",),
    extra: dict[str, dict[str, Any]] | None = None,
) -> AsyncIterator[Live]:
    """The switcher on ``fake``, its sidecar (with the dashboard, and CLIENT_KEY as its
    one client key) and its control channel, both on free loopback ports."""
    config = parse_config(mapping(*(ids or ("a", "b")), models=models, extra=extra))
    shutdown = trio.Event()
    server = ServerConfig(api_keys=(Secret(CLIENT_KEY),))
    async with open_switcher(config, transport=fake.transport()) as switcher:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(
                    serve_sidecar,
                    switcher,
                    port=0,
                    server=server,
                    shutdown_trigger=shutdown,
                    dashboard_token=Secret(TOKEN),
                )
            )
            control = await nursery.start(partial(serve_control, switcher, token=TOKEN))
            yield Live(
                switcher=switcher,
                base=f"http://127.0.0.1:{port}",
                control_url=f"ws://127.0.0.1:{control}",
                shutdown=shutdown,
            )
            shutdown.set()
            nursery.cancel_scope.cancel()
