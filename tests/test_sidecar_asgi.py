"""The sidecar app under an ASGI server other than oswitch's own (no
``oswitch.disconnect`` extension): it watches ``receive`` for the client's going
(virtual clock, no sockets)."""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing

from oswitch.runtime.switcher import open_switcher
from oswitch.sidecar.app import SidecarApp
from oswitch.testing import FakeProvider, hang, reply
from support import chat, config, target


def http_scope(extensions: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "headers": [(b"host", b"a"), (b"content-type", b"application/json")],
        "extensions": extensions,
    }


async def test_without_the_extension_a_disconnect_from_receive_cancels_the_request(
    autojump_clock: object,
) -> None:
    """Under a server without oswitch.disconnect, an http.disconnect from receive while
    the provider hangs cancels the attempt at that moment, and nothing is sent."""
    fake = FakeProvider().on("key-a", hang())
    body = json.dumps(chat()).encode()
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            await trio.lowlevel.checkpoint()
            return messages.pop()
        await trio.sleep(5)  # the client leaves five seconds in
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        await trio.lowlevel.checkpoint()
        sent.append(message)

    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        app = SidecarApp(switcher)
        started = trio.current_time()
        await app(http_scope({}), receive, send)
        elapsed = trio.current_time() - started
        await trio.testing.wait_all_tasks_blocked()  # the target actor sees its attempt end
        in_flight = switcher.list_targets()[0].in_flight
        metrics = app.metrics.render().decode()
    assert elapsed == 5
    assert sent == []
    assert in_flight == 0
    assert (
        'oswitch_requests_total{error_class="",outcome="client_cancelled",stream="false"} 1.0'
        in metrics
    )


async def test_with_the_extension_the_app_registers_and_unregisters_its_callback(
    autojump_clock: object,
) -> None:
    """With oswitch.disconnect, the app hands the server a callback while it answers
    and takes it back (None) once the answer is out; it never waits in receive."""
    fake = FakeProvider().on("key-a", reply("hi"))
    body = json.dumps(chat()).encode()
    registered: list[object] = []
    receives = 0

    async def receive() -> dict[str, Any]:
        nonlocal receives
        receives += 1
        await trio.lowlevel.checkpoint()
        return {"type": "http.request", "body": body, "more_body": False}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        await trio.lowlevel.checkpoint()
        sent.append(message)

    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        app = SidecarApp(switcher)
        await app(http_scope({"oswitch.disconnect": registered.append}), receive, send)
    assert receives == 1
    assert len(registered) == 2
    assert callable(registered[0]) and registered[1] is None
    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"])["choices"][0]["message"]["content"] == "hi"
