"""`oswitch ctl` end to end: the real command line, in a thread, against a live control
server on 127.0.0.1 (real clock, each test bounded); plus its formatting."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from oswitch.cli import main
from oswitch.config import parse_config
from oswitch.control import ControlServer, serve_control
from oswitch.control.ctl import format_event, format_targets, format_trace
from oswitch.control.protocol import trace_json
from oswitch.runtime.switcher import Switcher, open_switcher
from oswitch.testing import FakeProvider, rate_limited, reply, server_error
from support import BASE_URL, chat

TOKEN = "ctl-token-b41d-not-a-real-secret"
GUARD_S = 5.0


@pytest.fixture(autouse=True)
def _no_token_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OSWITCH_CONTROL_TOKEN", raising=False)


def mapping(*ids: str) -> dict[str, Any]:
    return {
        "targets": [
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
    }


@asynccontextmanager
async def running(fake: FakeProvider, *ids: str) -> AsyncIterator[tuple[Switcher, str]]:
    config = parse_config(mapping(*(ids or ("a", "b"))))
    async with open_switcher(config, transport=fake.transport()) as switcher:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(_serve, switcher)
            yield switcher, f"ws://127.0.0.1:{port}"
            nursery.cancel_scope.cancel()


async def _serve(
    switcher: Switcher, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    await serve_control(switcher, token=TOKEN, task_status=task_status)


async def wait_for_subscriber(switcher: Switcher) -> None:
    while True:
        if switcher.events.subscriber_count:
            return
        await trio.sleep(0.005)


async def ctl(url: str | None, *argv: str, token: str | None = TOKEN) -> int:
    """Run ``oswitch ctl`` as a user would, in a worker thread (it calls trio.run)."""
    options = [*(["--url", url] if url else []), *(["--token", token] if token else [])]
    args = ["ctl", *options, "--timeout", "3", *argv]
    return await trio.to_thread.run_sync(main, args, abandon_on_cancel=True)


# ---- end to end -----------------------------------------------------------------------


async def test_list_targets_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    """list-targets prints one row per target: state, condition, breaker, health,
    in-flight over the limit, the cooldown left, then attempts, successes, latency
    and the latest error class."""
    fake = FakeProvider().on("key-a", rate_limited(retry_after=300.0))
    fake.on("key-b", reply()).on("key-c", reply())
    with trio.fail_after(GUARD_S):
        async with running(fake, "a", "b", "c") as (switcher, url):
            await switcher.complete(chat())
            await switcher.pause_target("c")
            assert await ctl(url, "list-targets") == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert err == ""
    assert lines[0].startswith("TARGET  STATE   CONDITION    BREAKER  HEALTH  IN-FLIGHT  COOLDOWN")
    assert lines[0].split()[7:] == ["ATTEMPTS", "OK", "LATENCY", "LAST-ERROR"]
    assert re.match(
        r"a       Active  CoolingDown  Closed   1\.00    0/10       (29\d\.\d|300\.0)s", lines[1]
    )
    assert lines[1].split()[7:] == ["1", "0", "-", "RateLimited", "0s", "ago"]
    assert lines[2].startswith("b       Active  Healthy      Closed   1.00    0/10       -")
    assert lines[3].startswith("c       Paused  Healthy      Closed   1.00    0/10       -")
    # The one success went to b or c, with its latency; the other made no attempt.
    served = sorted(line.split()[7:] for line in lines[2:4])
    assert served[0] == ["0", "0", "-", "-"]
    assert served[1][:2] == ["1", "1"] and re.fullmatch(r"\d+ms", served[1][2])
    assert served[1][3] == "-"
    assert len(lines) == 4


async def test_json_prints_the_raw_result_and_no_key(capsys: pytest.CaptureFixture[str]) -> None:
    """--json (before or after the command) prints the server's result as JSON."""
    with trio.fail_after(GUARD_S):
        async with running(FakeProvider()) as (_, url):
            assert await ctl(None, "list-targets", "--json", "--url", url) == 0
    out, _ = capsys.readouterr()
    views = json.loads(out)
    assert [(v["target_id"], v["state"], v["key_source"]) for v in views] == [
        ("a", "Active", "inline"),
        ("b", "Active", "inline"),
    ]
    assert "key-a" not in out


@pytest.mark.parametrize(
    ("command", "state"),
    [("pause", "Paused"), ("resume", "Active"), ("drain", "Disabled"), ("disable", "Disabled")],
)
async def test_target_commands_change_the_target(
    capsys: pytest.CaptureFixture[str], command: str, state: str
) -> None:
    """pause / resume / drain / disable act on the running switcher and print the result
    (an idle drained target is Disabled at once)."""
    with trio.fail_after(GUARD_S):
        async with running(FakeProvider()) as (switcher, url):
            assert await ctl(url, command, "a") == 0
            views = {v.target_id: v.state for v in switcher.list_targets()}
    assert views == {"a": state, "b": "Active"}
    assert capsys.readouterr().out == f"a: state {state}, condition Healthy, in flight 0\n"


async def test_a_refused_command_exits_1_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A command the server refuses exits 1 and says why on stderr."""
    with trio.fail_after(GUARD_S):
        async with running(FakeProvider()) as (_, url):
            assert await ctl(url, "pause", "zzz") == 1
            assert await ctl(url, "inspect-request", "req_gone") == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "oswitch ctl: refused (unknown_target): unknown target: 'zzz'",
        "oswitch ctl: refused (unknown_request): unknown request: 'req_gone'",
    ]


async def test_a_wrong_token_exits_2_and_no_token_is_printed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A wrong token is an authentication failure: exit 2, and neither token is printed."""
    with trio.fail_after(GUARD_S):
        async with running(FakeProvider()) as (_, url):
            assert await ctl(url, "list-targets", token="wrong-token-123") == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "oswitch ctl: authentication refused: wrong token\n"


async def test_the_token_can_come_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --token, OSWITCH_CONTROL_TOKEN is used; without either, exit 2."""
    with trio.fail_after(GUARD_S):
        async with running(FakeProvider()) as (_, url):
            assert await ctl(url, "list-targets", token=None) == 2
            monkeypatch.setenv("OSWITCH_CONTROL_TOKEN", TOKEN)
            assert await ctl(url, "list-targets", token=None) == 0
    out, err = capsys.readouterr()
    assert err == "oswitch ctl: no token: pass --token or set OSWITCH_CONTROL_TOKEN\n"
    assert out.startswith("TARGET  STATE")
    assert TOKEN not in out + err


async def test_no_server_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listening at the URL is a connection failure: exit 2."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with trio.fail_after(GUARD_S):
        assert await ctl(f"ws://127.0.0.1:{port}", "list-targets") == 2
        assert await ctl("http://127.0.0.1:1", "list-targets") == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"oswitch ctl: cannot connect to ws://127.0.0.1:{port}: ")
    assert err[1] == (
        'oswitch ctl: cannot connect to http://127.0.0.1:1: WebSocket URL scheme must be "ws:" '
        'or "wss:"'
    )


async def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A missing command, an unknown one, or no --url is a usage error: exit 2."""
    assert await ctl("ws://127.0.0.1:1") == 2
    assert await ctl("ws://127.0.0.1:1", "frobnicate") == 2
    assert await ctl(None, "list-targets") == 2
    assert capsys.readouterr().err.endswith(
        "oswitch ctl: --url is required (e.g. ws://127.0.0.1:8788), or set OSWITCH_CONTROL_URL, "
        "or pass --config FILE\n"
    )


async def test_url_and_token_come_from_the_environment_or_the_servers_config(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without --url, OSWITCH_CONTROL_URL is used; else --config's control.host/port and its
    token variable, so an operator types neither; the token is never printed."""
    with trio.fail_after(GUARD_S):
        async with running(FakeProvider()) as (_, url):
            monkeypatch.setenv("OSWITCH_CONTROL_URL", url)
            assert await ctl(None, "list-targets") == 0
            monkeypatch.delenv("OSWITCH_CONTROL_URL")
            port = int(url.rsplit(":", 1)[1])
            config = dict(mapping("a", "b"), control={"port": port, "token_env": "CTL_TEST_TOKEN"})
            path = tmp_path / "oswitch.json"
            path.write_text(json.dumps(config))
            monkeypatch.setenv("CTL_TEST_TOKEN", TOKEN)
            assert await ctl(None, "--config", str(path), "list-targets", token=None) == 0
            monkeypatch.delenv("CTL_TEST_TOKEN")
            assert await ctl(None, "--config", str(path), "list-targets", token=None) == 2
            without = tmp_path / "no-control.json"
            without.write_text(json.dumps(mapping("a")))
            assert await ctl(None, "--config", str(without), "list-targets") == 2
    out, err = capsys.readouterr()
    assert out.count("TARGET  STATE") == 2
    assert err.splitlines() == [
        "oswitch ctl: no token: pass --token or set OSWITCH_CONTROL_TOKEN "
        f"(or control.token_env in {path})",
        f"oswitch ctl: {without} serves no control channel (control.port is not set)",
    ]
    assert TOKEN not in out + err


async def test_pointing_at_an_http_server_says_it_is_not_the_control_channel(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A plain HTTP server refusing the websocket handshake is named as the wrong port, and
    oswitch's own sidecar (it stamps x-oswitch-request-id) is recognised as such."""

    async def http_server(stamp: bool, task_status: trio.TaskStatus[int]) -> None:
        async def answer(stream: trio.SocketStream) -> None:
            async with stream:
                await stream.receive_some(65536)
                extra = b"x-oswitch-request-id: req_x\r\n" if stamp else b""
                await stream.send_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n" + extra + b"\r\n"
                )

        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(answer, listeners)

    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            plain = await nursery.start(http_server, False)
            sidecar = await nursery.start(http_server, True)
            assert await ctl(f"ws://127.0.0.1:{plain}", "list-targets") == 2
            assert await ctl(f"ws://127.0.0.1:{sidecar}", "list-targets") == 2
            nursery.cancel_scope.cancel()
    assert capsys.readouterr().err.splitlines() == [
        f"oswitch ctl: cannot connect to ws://127.0.0.1:{plain}: handshake rejected (HTTP 404): "
        "not an oswitch control channel (is this the right port?)",
        f"oswitch ctl: cannot connect to ws://127.0.0.1:{sidecar}: handshake rejected (HTTP 404): "
        "this is oswitch's HTTP sidecar port, not its control channel (the control channel "
        "listens on control.port, e.g. 8788)",
    ]


async def test_inspect_request_prints_the_timeline(capsys: pytest.CaptureFixture[str]) -> None:
    """inspect-request prints the request's summary, then one line per attempt."""
    fake = FakeProvider().on("key-a", server_error()).on("key-b", reply())
    with trio.fail_after(GUARD_S):
        async with running(fake) as (switcher, url):
            await switcher.complete(chat(), request_id="r1")
            assert await ctl(url, "inspect-request", "r1") == 0
            expected = format_trace(trace_json(switcher.inspect_request("r1")))
    lines = capsys.readouterr().out.splitlines()
    assert lines == expected
    assert lines[0].startswith("request r1  model gpt-4o  outcome ok  served by b (gpt-4o)")
    assert re.fullmatch(
        # Real clock: the first attempt starts at +0.000s unless the machine is loaded.
        r"  \+\d\.\d{3}s  a +gpt-4o  \d\.\d{3}s  TransientServerFailure  backoff +status 500",
        lines[2],
    )
    assert re.fullmatch(r"  \+\d\.\d{3}s  b +gpt-4o  \d\.\d{3}s  ok +return", lines[3])


async def test_reload_reads_a_path_relative_to_the_operator(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """reload --path FILE reloads from the operator's directory; a bad file exits 1 and
    lists every problem by path."""
    (tmp_path / "good.json").write_text(json.dumps(mapping("a", "c")))
    bad = mapping("a")
    bad["retry_budget"] = -1
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    monkeypatch.chdir(tmp_path)
    with trio.fail_after(GUARD_S):
        async with running(FakeProvider()) as (switcher, url):
            assert await ctl(url, "reload", "--path", "good.json") == 0
            assert await ctl(url, "reload", "--path", "bad.json") == 1
            assert [t.target_id for t in switcher.config.targets] == ["a", "c"]
    out, err = capsys.readouterr()
    assert out == "reloaded: 2 targets (a, c)\n"
    assert err.splitlines() == [
        "oswitch ctl: refused (invalid_config): must be >= 0 (got -1) @ $.retry_budget",
        "  must be >= 0 (got -1) @ $.retry_budget",
    ]


async def test_watch_prints_events_live(capsys: pytest.CaptureFixture[str]) -> None:
    """watch subscribes and prints each event as it happens (here: two, then it stops)."""
    with trio.fail_after(GUARD_S):
        async with running(FakeProvider()) as (switcher, url):
            async with trio.open_nursery() as nursery:
                codes: list[int] = []

                async def watch() -> None:
                    codes.append(await ctl(url, "watch", "--topics", "targets", "--count", "2"))

                nursery.start_soon(watch)
                await wait_for_subscriber(switcher)
                await switcher.pause_target("a")
                await switcher.resume_target("a")
    assert codes == [0]
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        'targets target_state target_id=a state=Paused note="operator pause"',
        'targets target_state target_id=a state=Active note="operator resume"',
    ]
    assert all(re.match(r"\d\d:\d\d:\d\d\.\d{3} ", line) for line in lines)


async def test_watch_json_prints_one_event_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    """watch --json prints each event frame as one JSON line."""
    with trio.fail_after(GUARD_S):
        async with running(FakeProvider()) as (switcher, url):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ctl, url, "--json", "watch", "--count", "1")
                await wait_for_subscriber(switcher)
                await switcher.drain_target("b")
    event = json.loads(capsys.readouterr().out)
    assert (event["event"], event["topic"], event["fields"]["state"]) == (
        "target_state",
        "targets",
        "Disabled",
    )


async def test_watch_resubscribes_after_falling_behind(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """When the server drops a lagging watch, ctl says so on stderr and follows on."""
    async with open_switcher(
        parse_config(mapping("a")), transport=FakeProvider().transport()
    ) as switcher:
        server = ControlServer(switcher, token=TOKEN, subscriber_buffer=2)
        with trio.fail_after(GUARD_S):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(server.serve)
                codes: list[int] = []
                finished = trio.Event()

                async def watch() -> None:
                    url = f"ws://127.0.0.1:{port}"
                    codes.append(await ctl(url, "watch", "--topics", "targets", "--count", "5"))
                    finished.set()

                nursery.start_soon(watch)
                await wait_for_subscriber(switcher)
                # A burst larger than the buffer, with no chance to forward any of it.
                for n in range(5):
                    switcher.events.emit("target_state", target_id=f"burst{n}", state="Paused")
                assert switcher.events.subscriber_count == 0
                await wait_for_subscriber(switcher)
                # Resubscribed: feed events until ctl has printed its count and left.
                n = 0
                while not finished.is_set():
                    switcher.events.emit("target_state", target_id=f"after{n}", state="Active")
                    n += 1
                    with trio.move_on_after(0.01):
                        await finished.wait()
                nursery.cancel_scope.cancel()
    out, err = capsys.readouterr()
    assert codes == [0]
    assert err == "oswitch ctl: events were dropped; resubscribing\n"
    printed = [line.split()[3] for line in out.splitlines()]
    # What the buffer held before the drop (2 or 3, as the forwarder was or was not already
    # waiting), then only events from after the resubscription.
    kept = [p for p in printed if p.startswith("target_id=burst")]
    assert kept == [f"target_id=burst{i}" for i in range(len(kept))] and 2 <= len(kept) <= 3
    assert printed[len(kept) :] == [f"target_id=after{i}" for i in range(5 - len(kept))]
    assert server.statistics().subscriptions_dropped == 1


# ---- formatting -----------------------------------------------------------------------


def test_format_trace_lays_attempts_out_from_the_request_start() -> None:
    """Each attempt shows its offset from the request's start, target, model, duration,
    class, decision and details."""
    trace = {
        "request_id": "req_1",
        "model": "gpt-4o",
        "started_at": 1000.0,
        "ended_at": 1002.5,
        "duration_s": 2.5,
        "queue_wait_s": 0.25,
        "outcome": "ok",
        "served_by": "backup",
        "served_model": "gpt-4o-mini",
        "error_class": None,
        "attempts": [
            {
                "target_id": "primary",
                "model": "gpt-4o",
                "started_at": 1000.25,
                "duration_s": 0.5,
                "error_class": "RateLimited",
                "decision": "failover",
                "status": 429,
                "retry_after": 2.0,
                "note": "",
                "hedge": False,
            },
            {
                "target_id": "backup",
                "model": "gpt-4o-mini",
                "started_at": 1000.75,
                "duration_s": 1.75,
                "error_class": None,
                "decision": "return",
                "status": None,
                "retry_after": None,
                "note": "",
                "hedge": True,
            },
        ],
    }
    assert format_trace(trace) == [
        "request req_1  model gpt-4o  outcome ok  served by backup (gpt-4o-mini)  "
        "total 2.500s  queued 0.250s",
        "  AT       TARGET   MODEL        TOOK    CLASS        DECISION  DETAIL",
        "  +0.250s  primary  gpt-4o       0.500s  RateLimited  failover  "
        "status 429; retry after 2s",
        "  +0.750s  backup   gpt-4o-mini  1.750s  ok           return    hedge",
    ]
    assert format_trace({"request_id": "r", "attempts": [], "outcome": "in_progress"})[1] == (
        "  (no attempts)"
    )


def test_format_targets_and_events_handle_missing_values() -> None:
    """Missing health or cooldown show as '-'; an event's empty fields are left out."""
    assert format_targets([{"target_id": "x", "health": None}])[1].split() == [
        "x",
        "None",
        "None",
        "None",
        "-",
        "None/None",
        "-",
        "-",
        "-",
        "-",
        "-",
    ]
    line = format_event(
        {"event": "attempt", "topic": "audit", "fields": {"target_id": "a", "note": ""}},
        received=0.5,
    )
    assert line.split(" ", 1)[1] == "audit attempt target_id=a"
