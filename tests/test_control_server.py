"""The control channel over real websockets on 127.0.0.1: auth, every command against a
running switcher, bad and hostile clients, subscriptions. Real clock, each test bounded."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.lowlevel
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection, open_websocket_url

from oswitch.config import ControlConfig, SwitcherConfig, parse_config
from oswitch.control import ControlServer, control_token, open_control, serve_control
from oswitch.control.client import CommandRefused
from oswitch.core.secret import Secret
from oswitch.errors import ConfigError
from oswitch.runtime.switcher import Switcher, open_switcher
from oswitch.testing import Behaviour, FakeProvider, completion, hang, reply, server_error
from support import BASE_URL, chat

TOKEN = "ctl-token-7f3a9c-not-a-real-secret"
GUARD_S = 5.0


def mapping(*ids: str, **top: Any) -> dict[str, Any]:
    """A config document with one target per id, the first preferred."""
    targets = [
        {
            "target_id": target_id,
            "provider_id": "openai",
            "base_url": BASE_URL,
            "api_key": f"key-{target_id}",
            "model": "gpt-4o",
            "operator_priority": 1 if index == 0 else 0,
        }
        for index, target_id in enumerate(ids)
    ]
    return {"targets": targets, **top}


@asynccontextmanager
async def running(
    fake: FakeProvider, config: SwitcherConfig | None = None, **options: Any
) -> AsyncIterator[tuple[Switcher, ControlServer, str]]:
    config = config or parse_config(mapping("a", "b"))
    async with open_switcher(config, transport=fake.transport()) as switcher:
        server = ControlServer(switcher, token=TOKEN, **options)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve)
            yield switcher, server, f"ws://127.0.0.1:{port}"
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def raw(url: str, *, authenticate: bool = True) -> AsyncIterator[WebSocketConnection]:
    async with open_websocket_url(url, disconnect_timeout=1.0) as ws:
        if authenticate:
            assert await ask(ws, {"op": "auth", "token": TOKEN}) == {
                "id": None,
                "ok": True,
                "result": {"protocol": 1},
            }
        yield ws


async def ask(ws: WebSocketConnection, frame: object) -> dict[str, Any]:
    text = frame if isinstance(frame, str | bytes) else json.dumps(frame)
    await ws.send_message(text)
    return await receive(ws)


async def receive(ws: WebSocketConnection) -> dict[str, Any]:
    answer = json.loads(await ws.get_message())
    assert isinstance(answer, dict)
    return answer


async def close_reason(ws: WebSocketConnection) -> CloseReason:
    with pytest.raises(ConnectionClosed) as caught:
        await ws.get_message()
    reason = caught.value.reason
    assert reason is not None
    return reason


async def wait_until(predicate: Any) -> None:
    while True:
        if predicate():
            return
        await trio.sleep(0.005)


def gated(started: trio.Event, release: trio.Event) -> Behaviour:
    """Answer only once ``release`` is set (``started`` says the attempt is in flight)."""

    async def respond(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        started.set()
        await release.wait()
        return httpx.Response(200, json=completion("held", model="gpt-4o"))

    return Behaviour(name="gated", respond=respond)


def error_of(answer: Mapping[str, Any]) -> tuple[str, str]:
    assert answer["ok"] is False
    return answer["error"]["code"], answer["error"]["message"]


# ---- starting ---------------------------------------------------------------------------


async def test_refuses_to_start_without_a_token() -> None:
    """serve_control with no token, or an empty one, raises ConfigError before binding."""
    async with open_switcher(parse_config(mapping("a"))) as switcher:
        for token in (None, "", Secret("")):
            with pytest.raises(ConfigError) as caught:
                await serve_control(switcher, token=token)
            assert caught.value.problems == (
                (
                    "$.control.token",
                    "the control channel requires a token: set control.token or the "
                    "OSWITCH_CONTROL_TOKEN environment variable",
                ),
            )


def test_control_token_comes_from_config_then_environment() -> None:
    """control_token prefers control.token, then the token_env variable, else None."""
    inline = ControlConfig(token=Secret("inline-token"))
    assert control_token(inline, {"OSWITCH_CONTROL_TOKEN": "env"}) == Secret("inline-token")
    assert control_token(ControlConfig(), {"OSWITCH_CONTROL_TOKEN": "from-env"}) == Secret(
        "from-env"
    )
    named = ControlConfig(token_env="MY_TOKEN")
    assert control_token(named, {"MY_TOKEN": "mine", "OSWITCH_CONTROL_TOKEN": "x"}) == Secret(
        "mine"
    )
    assert control_token(ControlConfig(), {"OSWITCH_CONTROL_TOKEN": ""}) is None
    assert control_token(ControlConfig(), {}) is None


async def test_serve_control_reports_its_bound_port() -> None:
    """Started with port 0, serve_control hands back the port the kernel chose."""
    with trio.fail_after(GUARD_S):
        async with open_switcher(parse_config(mapping("a"))) as switcher:
            async with trio.open_nursery() as nursery:
                port = await nursery.start(partial(serve_control, switcher, port=0, token=TOKEN))
                assert isinstance(port, int) and port > 0
                async with open_control(f"ws://127.0.0.1:{port}", token=TOKEN) as control:
                    assert [v["target_id"] for v in await control.list_targets()] == ["a"]
                nursery.cancel_scope.cancel()


# ---- authentication ---------------------------------------------------------------------


async def test_a_command_before_auth_is_refused_and_closed_1008() -> None:
    """Anything but auth as the first frame gets auth_required, then close 1008."""
    with trio.fail_after(GUARD_S):
        async with running(FakeProvider()) as (_, server, url):
            async with raw(url, authenticate=False) as ws:
                answer = await ask(ws, {"id": 1, "op": "list_targets"})
                assert answer == {
                    "id": 1,
                    "ok": False,
                    "error": {
                        "code": "auth_required",
                        "message": "authenticate first: the first frame must be "
                        '{"op": "auth", "token": "..."}',
                    },
                }
                assert (await close_reason(ws)).code == 1008
            assert server.statistics().auth_failures == 1


async def test_garbage_before_auth_is_refused_and_closed_1008() -> None:
    """A first frame that is not JSON gets auth_required naming the fault, then close 1008."""
    with trio.fail_after(GUARD_S):
        async with running(FakeProvider()) as (_, _, url):
            async with raw(url, authenticate=False) as ws:
                assert error_of(await ask(ws, "hello?")) == (
                    "auth_required",
                    "authenticate first (not valid JSON: Expecting value at line 1 column 1)",
                )
                assert (await close_reason(ws)).code == 1008


async def test_wrong_token_is_refused_without_echo_and_closed_1008() -> None:
    """A wrong token gets auth_failed and close 1008; neither token appears in the reply."""
    with trio.fail_after(GUARD_S):
        async with running(FakeProvider()) as (_, server, url):
            async with raw(url, authenticate=False) as ws:
                await ws.send_message(json.dumps({"id": "a1", "op": "auth", "token": "guess-1234"}))
                text = await ws.get_message()
                assert json.loads(text) == {
                    "id": "a1",
                    "ok": False,
                    "error": {"code": "auth_failed", "message": "wrong token"},
                }
                assert "guess-1234" not in text and TOKEN not in text
                assert (await close_reason(ws)).code == 1008
            assert server.statistics().auth_failures == 1


async def test_a_silent_client_is_closed_after_the_auth_timeout() -> None:
    """A client that never authenticates gets auth_timeout and close 1008."""
    with trio.fail_after(GUARD_S):
        async with running(FakeProvider(), auth_timeout_s=0.2) as (_, _, url):
            async with raw(url, authenticate=False) as ws:
                assert error_of(await receive(ws)) == (
                    "auth_timeout",
                    "no auth frame within 0.2 s",
                )
                assert (await close_reason(ws)).code == 1008


async def test_right_token_authenticates_and_echoes_the_id() -> None:
    """The right token gets ok with the protocol version; a second auth is refused."""
    with trio.fail_after(GUARD_S):
        async with running(FakeProvider()) as (_, _, url):
            async with raw(url, authenticate=False) as ws:
                assert await ask(ws, {"id": 0, "op": "auth", "token": TOKEN}) == {
                    "id": 0,
                    "ok": True,
                    "result": {"protocol": 1},
                }
                again = await ask(ws, {"id": 1, "op": "auth", "token": TOKEN})
                assert again["id"] == 1
                assert error_of(again) == ("already_authenticated", "already authenticated")
                assert (await ask(ws, {"id": 2, "op": "list_targets"}))["ok"] is True


# ---- commands against a running switcher ------------------------------------------------


async def test_list_targets_shows_every_target_and_no_key() -> None:
    """list_targets returns each target's view; the reply holds no key, only its source."""
    with trio.fail_after(GUARD_S):
        async with running(FakeProvider()) as (_, _, url):
            async with raw(url) as ws:
                await ws.send_message(json.dumps({"id": 7, "op": "list_targets"}))
                text = await ws.get_message()
    assert "key-a" not in text and "key-b" not in text
    answer = json.loads(text)
    assert (answer["id"], answer["ok"]) == (7, True)
    views = answer["result"]["targets"]
    assert [v["target_id"] for v in views] == ["a", "b"]
    assert {k: views[0][k] for k in ("state", "condition", "breaker_state", "key_source")} == {
        "state": "Active",
        "condition": "Healthy",
        "breaker_state": "Closed",
        "key_source": "inline",
    }
    assert (views[0]["in_flight"], views[0]["cooldown_remaining_s"]) == (0, None)


async def test_pause_stops_new_routing_and_resume_restores_it() -> None:
    """A target paused over the channel takes no new request; resumed, it takes them again."""
    fake = FakeProvider().on("key-a", reply("a")).on("key-b", reply("b"))
    with trio.fail_after(GUARD_S):
        async with running(fake) as (switcher, _, url):
            async with open_control(url, token=TOKEN) as control:
                view = await control.pause_target("a")
                assert (view["target_id"], view["state"]) == ("a", "Paused")
                assert (await switcher.complete(chat()))["oswitch"]["target_id"] == "b"
                assert (await control.resume_target("a"))["state"] == "Active"
                assert (await switcher.complete(chat()))["oswitch"]["target_id"] == "a"
    assert fake.calls_to("key-a") == 1


async def test_drain_lets_the_in_flight_request_finish_then_disables() -> None:
    """Drained over the channel, a target finishes its in-flight attempt, then is Disabled."""
    started, release = trio.Event(), trio.Event()
    fake = FakeProvider().on("key-a", gated(started, release)).on("key-b", reply("b"))
    box: dict[str, Any] = {}
    with trio.fail_after(GUARD_S):
        async with running(fake) as (switcher, _, url):
            async with open_control(url, token=TOKEN) as control, trio.open_nursery() as nursery:

                async def call() -> None:
                    box["reply"] = await switcher.complete(chat())

                nursery.start_soon(call)
                await started.wait()
                view = await control.drain_target("a")
                assert (view["state"], view["in_flight"]) == ("Draining", 1)
                assert (await switcher.complete(chat()))["oswitch"]["target_id"] == "b"
                release.set()
            assert box["reply"]["oswitch"]["target_id"] == "a"
            async with open_control(url, token=TOKEN) as control:

                async def disabled() -> bool:
                    views = {v["target_id"]: v for v in await control.list_targets()}
                    return bool(views["a"]["state"] == "Disabled")

                while True:
                    if await disabled():
                        break
                    await trio.sleep(0.01)


async def test_disable_fails_the_in_flight_request_over() -> None:
    """Disabled over the channel, a target's hung attempt is cancelled and the request moves on."""
    fake = FakeProvider().on("key-a", hang()).on("key-b", reply("b"))
    box: dict[str, Any] = {}
    with trio.fail_after(GUARD_S):
        async with running(fake) as (switcher, _, url):
            async with open_control(url, token=TOKEN) as control, trio.open_nursery() as nursery:

                async def call() -> None:
                    box["reply"] = await switcher.complete(chat(), request_id="held")

                nursery.start_soon(call)
                await wait_until(lambda: fake.in_flight == 1)
                view = await control.disable_target("a")
                assert view["state"] == "Disabled"
            assert box["reply"]["oswitch"]["target_id"] == "b"
            async with open_control(url, token=TOKEN) as control:
                trace = await control.inspect_request("held")
    assert [(a["target_id"], a["note"]) for a in trace["attempts"]] == [
        ("a", "cancelled: operator"),
        ("b", ""),
    ]
    assert fake.cancelled == 1


async def test_inspect_request_returns_the_trace_and_unknown_ids_are_refused() -> None:
    """inspect_request gives every attempt with its class and decision; an unknown id is
    refused with unknown_request and the connection carries on."""
    fake = FakeProvider().on("key-a", server_error()).on("key-b", reply("b"))
    with trio.fail_after(GUARD_S):
        async with running(fake) as (switcher, _, url):
            await switcher.complete(chat(), request_id="r1")
            async with raw(url) as ws:
                answer = await ask(ws, {"id": 3, "op": "inspect_request", "request_id": "r1"})
                missing = await ask(ws, {"id": 4, "op": "inspect_request", "request_id": "nope"})
                assert (await ask(ws, {"id": 5, "op": "list_targets"}))["ok"] is True
    trace = answer["result"]["trace"]
    assert (trace["request_id"], trace["outcome"], trace["served_by"]) == ("r1", "ok", "b")
    assert trace["duration_s"] == pytest.approx(trace["ended_at"] - trace["started_at"])
    assert [(a["target_id"], a["error_class"], a["status"]) for a in trace["attempts"]] == [
        ("a", "TransientServerFailure", 500),
        ("b", None, None),
    ]
    assert missing == {
        "id": 4,
        "ok": False,
        "error": {"code": "unknown_request", "message": "unknown request: 'nope'"},
    }


async def test_unknown_target_is_refused_and_the_connection_carries_on() -> None:
    """A command naming no target gets unknown_target; the next command still works."""
    with trio.fail_after(GUARD_S):
        async with running(FakeProvider()) as (_, _, url):
            async with raw(url) as ws:
                answer = await ask(ws, {"id": 1, "op": "pause_target", "target_id": "zzz"})
                assert answer == {
                    "id": 1,
                    "ok": False,
                    "error": {"code": "unknown_target", "message": "unknown target: 'zzz'"},
                }
                assert (await ask(ws, {"id": 2, "op": "list_targets"}))["ok"] is True


async def test_inline_reload_keeps_state_and_adds_targets() -> None:
    """An inline reload keeps a paused target paused and starts the new one."""
    fake = FakeProvider().on("key-b", reply("b")).on("key-c", reply("c"))
    with trio.fail_after(GUARD_S):
        async with running(fake) as (switcher, _, url):
            async with open_control(url, token=TOKEN) as control:
                await control.pause_target("a")
                ids = await control.reload_config(config=mapping("a", "b", "c"))
                assert ids == ["a", "b", "c"]
                views = {v["target_id"]: v["state"] for v in await control.list_targets()}
    assert views == {"a": "Paused", "b": "Active", "c": "Active"}
    assert [t.target_id for t in switcher.config.targets] == ["a", "b", "c"]


async def test_invalid_inline_reload_is_refused_by_path_and_the_old_config_kept() -> None:
    """An invalid inline config gets invalid_config listing each problem by path; nothing
    changes."""
    bad = mapping("a", "b")
    bad["targets"][1]["concurrency_limit"] = "three"
    bad["retry_budgett"] = 3
    with trio.fail_after(GUARD_S):
        async with running(FakeProvider()) as (switcher, _, url):
            before = switcher.config
            async with raw(url) as ws:
                answer = await ask(ws, {"id": 9, "op": "reload_config", "config": bad})
    assert answer["id"] == 9
    error = answer["error"]
    assert error["code"] == "invalid_config"
    assert error["problems"] == [
        {
            "path": "$.retry_budgett",
            "reason": "unknown key 'retry_budgett' (did you mean 'retry_budget'?)",
        },
        {"path": "$.targets[1].concurrency_limit", "reason": 'expected an integer (got "three")'},
    ]
    assert error["message"] == "; ".join(f"{p['reason']} @ {p['path']}" for p in error["problems"])
    assert switcher.config is before


async def test_reload_from_a_file_and_a_bad_file_is_refused_by_path(tmp_path: Path) -> None:
    """reload_config with a path loads that file; a broken one is refused naming file,
    line and column, and the running config stays."""
    good = tmp_path / "good.json"
    good.write_text(json.dumps(mapping("a", "c")))
    broken = tmp_path / "broken.toml"
    broken.write_text('retry_budget = 2\n[[targets]\ntarget_id = "a"\n')
    with trio.fail_after(GUARD_S):
        async with running(FakeProvider()) as (switcher, _, url):
            async with open_control(url, token=TOKEN) as control:
                assert await control.reload_config(path=str(good)) == ["a", "c"]
                with pytest.raises(CommandRefused) as caught:
                    await control.reload_config(path=str(broken))
                with pytest.raises(CommandRefused) as missing:
                    await control.reload_config(path=str(tmp_path / "absent.toml"))
            assert [t.target_id for t in switcher.config.targets] == ["a", "c"]
    assert caught.value.code == "invalid_config"
    assert caught.value.problems == (
        (f"{broken}:2:10", "invalid TOML: Expected ']]' at the end of an array declaration"),
    )
    assert missing.value.problems == (
        (str(tmp_path / "absent.toml"), "cannot read file: No such file or directory"),
    )


# ---- bad input ------------------------------------------------------------------------


async def test_garbage_frames_get_typed_errors_and_the_connection_survives() -> None:
    """Non-JSON, non-objects, binary frames, unknown ops and bad arguments each get their
    error code; the connection keeps answering."""
    with trio.fail_after(GUARD_S):
        async with running(FakeProvider()) as (_, server, url):
            async with raw(url) as ws:
                answers = [
                    await ask(ws, "{not json"),
                    await ask(ws, "[1, 2]"),
                    await ask(ws, b'{"op": "list_targets"}'),
                    await ask(ws, {"id": 1, "op": "frobnicate"}),
                    await ask(ws, {"id": 2, "op": "pause_target", "target": "a"}),
                    await ask(ws, {"id": 3.5, "op": "list_targets"}),
                    await ask(ws, {"id": 4, "op": "reload_config"}),
                ]
                assert (await ask(ws, {"id": 5, "op": "list_targets"}))["ok"] is True
            assert server.statistics().refused == 7
    assert [(a["id"], *error_of(a)) for a in answers] == [
        (
            None,
            "bad_json",
            "not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2",
        ),
        (None, "bad_frame", "expected a JSON object (got an array)"),
        (None, "bad_frame", "expected a text frame (got a binary frame)"),
        (
            1,
            "unknown_op",
            'unknown op "frobnicate"; valid ops: auth, disable_target, '
            "drain_target, inspect_request, list_targets, pause_target, reload_config, "
            "resume_target, subscribe, unsubscribe",
        ),
        (2, "bad_argument", "unknown key @ $.target; missing required key @ $.target_id"),
        (None, "bad_argument", "expected an integer or a string (got a number) @ $.id"),
        (4, "bad_argument", "missing required key: path or config @ $"),
    ]
    assert answers[4]["error"]["problems"] == [
        {"path": "$.target", "reason": "unknown key"},
        {"path": "$.target_id", "reason": "missing required key"},
    ]


async def test_the_token_is_never_echoed_even_when_sent_as_a_value() -> None:
    """A token pasted into another field comes back as *** in every reply."""
    with trio.fail_after(GUARD_S):
        async with running(FakeProvider()) as (_, _, url):
            async with raw(url) as ws:
                texts = []
                for frame in (
                    {"id": 1, "op": TOKEN},
                    {"id": 2, "op": "pause_target", "target_id": TOKEN},
                    {"id": 3, "op": "inspect_request", "request_id": f"x{TOKEN}x"},
                ):
                    await ws.send_message(json.dumps(frame))
                    texts.append(await ws.get_message())
    assert not any(TOKEN in text for text in texts)
    assert [json.loads(text)["error"]["message"] for text in texts] == [
        "unknown op; valid ops: auth, disable_target, drain_target, inspect_request, "
        "list_targets, pause_target, reload_config, resume_target, subscribe, unsubscribe",
        "unknown target: '***'",
        "unknown request: 'x***x'",
    ]


async def test_an_oversized_frame_closes_the_connection_1009_and_no_other() -> None:
    """Frames over max_message_bytes (in characters or in UTF-8 bytes) close that
    connection with 1009; other connections and routing carry on."""
    fake = FakeProvider().on("key-a", reply("a"))
    with trio.fail_after(GUARD_S):
        async with running(fake, max_message_bytes=1000) as (switcher, server, url):
            async with raw(url) as bystander:
                async with raw(url) as ws:
                    await ws.send_message(json.dumps({"op": "list_targets", "pad": "x" * 2000}))
                    assert (await close_reason(ws)).code == 1009
                async with raw(url) as ws:
                    # 400 characters, 1200 bytes: over the limit only once encoded.
                    await ws.send_message(
                        json.dumps({"op": "list_targets", "pad": "€" * 400}, ensure_ascii=False)
                    )
                    reason = await close_reason(ws)
                    assert (reason.code, reason.reason) == (
                        1009,
                        "message too big: limit 1000 bytes",
                    )
                assert (await ask(bystander, {"id": 1, "op": "list_targets"}))["ok"] is True
                assert (await switcher.complete(chat()))["oswitch"]["target_id"] == "a"
            assert server.statistics().oversized_frames == 2


async def test_a_flood_without_reading_is_bounded_then_cut_off() -> None:
    """A client that sends thousands of commands and reads nothing is served only as fast
    as it reads, then disconnected; routing and other clients are unaffected."""
    fake = FakeProvider().on("key-a", reply("a"))
    frame = json.dumps({"id": 1, "op": "list_targets"})
    with trio.fail_after(GUARD_S):
        async with running(fake, send_timeout_s=0.3) as (switcher, server, url):
            async with raw(url) as bystander, raw(url) as flood:
                sent = 0
                with pytest.raises(ConnectionClosed):
                    while sent < 100_000:
                        await flood.send_message(frame)
                        sent += 1
                stats = server.statistics()
                assert stats.slow_clients_aborted == 1
                # Only what the kernel buffers and the bounded outbox hold was ever handled.
                assert stats.commands < sent / 4
                assert (await ask(bystander, {"id": 2, "op": "list_targets"}))["ok"] is True
                assert (await switcher.complete(chat()))["oswitch"]["target_id"] == "a"


async def test_a_broken_handshake_or_abrupt_disconnect_hurts_no_one() -> None:
    """HTTP garbage instead of a handshake, and a client vanishing mid-session, leave the
    server serving everyone else."""
    fake = FakeProvider().on("key-a", reply("a"))
    with trio.fail_after(GUARD_S):
        async with running(fake) as (switcher, server, url):
            port = int(url.rsplit(":", 1)[1])
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff garbage")
            await stream.aclose()
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"\x16\x03\x01 not even http")
            await stream.aclose()
            async with raw(url) as ws:
                await ws.send_message(json.dumps({"id": 1, "op": "subscribe"}))
                # Vanish without a close handshake.
                await ws._stream.aclose()
            async with open_control(url, token=TOKEN) as control:
                assert len(await control.list_targets()) == 2
            assert (await switcher.complete(chat()))["oswitch"]["target_id"] == "a"
            await wait_until(lambda: server.statistics().connections_open == 0)
            assert switcher.events.subscriber_count == 0


# ---- subscriptions --------------------------------------------------------------------


async def test_subscribe_streams_events_and_commands_still_answer() -> None:
    """After subscribe, routing and target events stream in; commands sent meanwhile are
    answered; unsubscribe ends the stream."""
    fake = FakeProvider().on("key-a", server_error()).on("key-b", reply("b"))
    with trio.fail_after(GUARD_S):
        async with running(fake) as (switcher, _, url):
            async with raw(url) as ws:
                assert await ask(ws, {"id": 1, "op": "subscribe"}) == {
                    "id": 1,
                    "ok": True,
                    "result": {"topics": ["audit", "targets"]},
                }
                await switcher.complete(chat(), request_id="r1")
                await ws.send_message(json.dumps({"id": 2, "op": "pause_target", "target_id": "b"}))
                frames: list[dict[str, Any]] = []
                # The pause's own event may arrive before or after its reply.
                while {f.get("id") for f in frames} != {None, 2} or len(frames) < 4:
                    frames.append(await receive(ws))
                events = [f for f in frames if "event" in f]
                replies = [f for f in frames if "id" in f]
                assert [(e["event"], e["topic"], e["fields"].get("decision")) for e in events] == [
                    ("attempt", "audit", "backoff"),
                    ("attempt", "audit", "return"),
                    ("target_state", "targets", None),
                ]
                assert events[0]["fields"]["target_id"] == "a"
                assert isinstance(events[0]["at"], float)
                assert events[2]["fields"]["state"] == "Paused"
                assert replies[0]["result"]["target"]["state"] == "Paused"
                assert await ask(ws, {"id": 3, "op": "unsubscribe"}) == {
                    "id": 3,
                    "ok": True,
                    "result": {"topics": []},
                }
                await switcher.resume_target("b")
                assert (await ask(ws, {"id": 4, "op": "list_targets"}))["id"] == 4
            assert switcher.events.subscriber_count == 0


async def test_a_topic_filter_limits_the_stream() -> None:
    """A 'targets' subscription gets state changes and no per-request routing events."""
    fake = FakeProvider().on("key-a", reply("a"))
    with trio.fail_after(GUARD_S):
        async with running(fake) as (switcher, _, url):
            async with open_control(url, token=TOKEN) as control:
                assert await control.subscribe(["targets"]) == ["targets"]
                await switcher.complete(chat())
                await switcher.pause_target("a")
                event = await control.next_event()
    assert (event["event"], event["topic"], event["fields"]["target_id"]) == (
        "target_state",
        "targets",
        "a",
    )


async def test_a_subscriber_that_never_reads_is_dropped_and_routing_goes_on() -> None:
    """A subscriber that reads nothing is dropped by the hub once it falls behind, never
    waited on; requests keep completing, and when it reads it finds the notice."""
    fake = FakeProvider().on("key-a", reply("a"))
    with trio.fail_after(GUARD_S):
        async with running(fake, subscriber_buffer=8) as (switcher, server, url):
            async with raw(url) as ws:
                await ask(ws, {"id": 1, "op": "subscribe"})
                emitted = 0
                while switcher.events.subscriber_count:
                    switcher.events.emit("attempt", request_id=f"r{emitted}", target_id="a")
                    emitted += 1
                    if emitted % 10 == 0:
                        reply_ = await switcher.complete(chat())
                        assert reply_["oswitch"]["target_id"] == "a"
                    await trio.lowlevel.checkpoint()
                frames = []
                while not frames or frames[-1].get("event") != "subscription_dropped":
                    frames.append(await receive(ws))
                assert server.statistics().subscriptions_dropped == 1
                assert frames[-1]["fields"] == {
                    "reason": "fell more than 8 events behind",
                    "buffer": 8,
                }
                assert frames[-1]["topic"] is None
                # Each request routed meanwhile added one more event: some never arrived.
                assert len(frames) - 1 < emitted + emitted // 10
                assert (await ask(ws, {"id": 2, "op": "list_targets"}))["ok"] is True


async def test_shutting_down_closes_clients_with_1001() -> None:
    """Cancelling serve_control closes every open connection with 1001, quickly."""
    with trio.fail_after(GUARD_S):
        async with open_switcher(parse_config(mapping("a"))) as switcher:
            scope = trio.CancelScope()

            async def serve(*, task_status: trio.TaskStatus[int]) -> None:
                with scope:
                    await serve_control(switcher, token=TOKEN, task_status=task_status)

            async with trio.open_nursery() as nursery:
                port = await nursery.start(serve)
                url = f"ws://127.0.0.1:{port}"
                async with raw(url) as idle, raw(url) as subscribed:
                    await ask(subscribed, {"id": 1, "op": "subscribe"})
                    scope.cancel()
                    for ws in (idle, subscribed):
                        reason = await close_reason(ws)
                        assert (reason.code, reason.reason) == (1001, "server shutting down")
            assert switcher.events.subscriber_count == 0


async def test_the_client_keeps_events_that_arrive_while_a_call_waits() -> None:
    """Events met while a call waits for its reply are kept, in order, for next_event."""
    with trio.fail_after(GUARD_S):
        async with running(FakeProvider()) as (switcher, _, url):
            async with open_control(url, token=TOKEN) as control:
                await control.subscribe(["targets"])
                await switcher.pause_target("a")
                await switcher.pause_target("b")
                # The reply is queued behind both events on the wire.
                await trio.sleep(0.05)
                assert len(await control.list_targets()) == 2
                first, second = await control.next_event(), await control.next_event()
    assert [e["fields"]["target_id"] for e in (first, second)] == ["a", "b"]
    assert control.events_dropped == 0


async def test_connections_past_the_cap_are_refused_and_the_rest_keep_working() -> None:
    """With control.max_connections 2, a third websocket handshake is refused with HTTP
    503 while the first two keep working; once one leaves, a new one is served."""
    from trio_websocket import ConnectionRejected

    config = parse_config(mapping("a", "b", control={"max_connections": 2}))
    with trio.fail_after(5):
        async with running(FakeProvider(), config) as (_, server, url):
            async with raw(url) as first:
                async with raw(url):
                    with pytest.raises(ConnectionRejected) as rejected:
                        async with open_websocket_url(url):
                            pass
                    assert rejected.value.status_code == 503
                    reply_ = await ask(first, {"id": 1, "op": "list_targets"})
                    assert reply_["ok"] is True
                async with raw(url) as again:
                    assert (await ask(again, {"id": 2, "op": "list_targets"}))["ok"] is True
            assert server.statistics().connections_refused == 1
