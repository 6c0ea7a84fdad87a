"""The sidecar's first-five-minutes answers, over real loopback sockets (real clock,
each test under fail_after): an unknown model, no key anywhere, /v1/models, a
websocket on the HTTP port, and the failover counter."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import httpx
import openai
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionRejected, open_websocket_url

from oswitch import parse_config
from oswitch.cli import main
from oswitch.config import SwitcherConfig
from oswitch.runtime.switcher import Switcher, open_switcher
from oswitch.sidecar.reload import READ_AT_START, reload_from_file
from oswitch.sidecar.serve import serve_sidecar
from oswitch.testing import FakeProvider, error, rate_limited, reply
from support import chat, config, target

GUARD_S = 10


@asynccontextmanager
async def gateway(fake: FakeProvider, cfg: SwitcherConfig) -> AsyncIterator[tuple[str, Switcher]]:
    """A switcher on ``fake`` behind a sidecar on 127.0.0.1:<free port>."""
    shutdown = trio.Event()
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(serve_sidecar, switcher, port=0, shutdown_trigger=shutdown)
            )
            yield f"http://127.0.0.1:{port}", switcher
            shutdown.set()


UNKNOWN_BODY = {
    "error": {
        "message": "The model `gpt-5-typo` does not exist or no target serves it.",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    }
}


async def test_unknown_model_is_openais_404_for_json_and_streams() -> None:
    """A model no target serves is answered 404 ``model_not_found`` in OpenAI's shape
    (streamed or not), with no upstream call."""
    fake = FakeProvider().on("key-a", reply())
    with trio.fail_after(GUARD_S):
        async with gateway(fake, config(target("a"))) as (base, _), httpx.AsyncClient() as client:
            plain = await client.post(f"{base}/v1/chat/completions", json=chat(model="gpt-5-typo"))
            streamed = await client.post(
                f"{base}/v1/chat/completions", json=chat(model="gpt-5-typo", stream=True)
            )
    for response in (plain, streamed):
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/json"
        assert response.json() == UNKNOWN_BODY
        assert response.headers["x-oswitch-request-id"].startswith("req_")
        assert "retry-after" not in response.headers
    assert fake.calls == []


async def test_the_openai_sdk_does_not_retry_an_unknown_model() -> None:
    """The OpenAI SDK (which retries 5xx) raises NotFoundError at once: one request."""
    fake = FakeProvider().on("key-a", reply())
    with trio.fail_after(GUARD_S):
        async with gateway(fake, config(target("a"))) as (base, switcher):
            sdk = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=2)
            with pytest.raises(openai.NotFoundError) as caught:
                await sdk.chat.completions.create(
                    model="gpt-5-typo", messages=[{"role": "user", "content": "hi"}]
                )
            await sdk.close()
            requests = switcher.statistics().requests
    assert caught.value.code == "model_not_found"
    assert requests == 1


async def test_a_typo_through_passthrough_keys_is_a_404_the_sdk_does_not_retry() -> None:
    """o-switcher's keys without ``models`` pass any name through; a typo every key's
    provider answers 404 model_not_found reaches the SDK as NotFoundError, once."""
    upstream = {
        "error": {
            "message": "The model `gpt-5-typo` does not exist or you do not have access to it.",
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_found",
        }
    }
    fake = (
        FakeProvider().on("sk-work", error(404, upstream)).on("sk-personal", error(404, upstream))
    )
    cfg = parse_config(
        {
            "provider": {
                "openai-work": {"api": "openai", "apiKey": "sk-work"},
                "openai-personal": {"api": "openai", "apiKey": "sk-personal"},
            }
        }
    )
    with trio.fail_after(GUARD_S):
        async with gateway(fake, cfg) as (base, switcher):
            sdk = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=2)
            with pytest.raises(openai.NotFoundError) as caught:
                await sdk.chat.completions.create(
                    model="gpt-5-typo", messages=[{"role": "user", "content": "hi"}]
                )
            await sdk.close()
            requests = switcher.statistics().requests
    assert caught.value.body == UNKNOWN_BODY["error"]
    assert requests == 1
    assert len(fake.calls) == 2


async def test_no_key_anywhere_is_503_no_api_key_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When no target for the model has its key, the reply is 503 ``no_api_key`` naming
    the variable and target (no Retry-After: waiting does not help), not "in time"."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = parse_config({"provider": {"openai-work": {"api": "openai", "models": {"m": {}}}}})
    fake = FakeProvider()
    with trio.fail_after(GUARD_S):
        async with gateway(fake, cfg) as (base, _), httpx.AsyncClient() as client:
            response = await client.post(f"{base}/v1/chat/completions", json=chat(model="m"))
    assert response.status_code == 503
    assert response.json() == {
        "error": {
            "message": "no target for 'm' has an API key: set OPENAI_API_KEY (openai-work)",
            "type": "unavailable",
            "param": None,
            "code": "no_api_key",
        }
    }
    assert "retry-after" not in response.headers
    assert fake.calls == []


async def test_models_endpoint_lists_discovered_models_without_calling_upstream() -> None:
    """GET /v1/models names an opencode provider's ``models`` (passthrough targets) and
    asks no provider."""
    cfg = parse_config(
        {
            "provider": {
                "openai-work": {
                    "api": "openai",
                    "apiKey": "sk-work",
                    "models": {"gpt-4o": {}, "gpt-4.1-mini": {}},
                }
            }
        }
    )
    fake = FakeProvider()
    with trio.fail_after(GUARD_S):
        async with gateway(fake, cfg) as (base, _), httpx.AsyncClient() as client:
            listing = (await client.get(f"{base}/v1/models")).json()
    assert listing == {
        "object": "list",
        "data": [
            {"id": "gpt-4.1-mini", "object": "model", "created": 0, "owned_by": "oswitch"},
            {"id": "gpt-4o", "object": "model", "created": 0, "owned_by": "oswitch"},
        ],
    }
    assert fake.calls == []


async def test_a_websocket_on_the_http_port_gets_a_404_saying_where_control_is(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A websocket handshake on the sidecar's port is refused with HTTP 404, a JSON body
    naming control.port and x-oswitch-request-id, so `oswitch ctl` says which port it hit."""
    fake = FakeProvider()
    with trio.fail_after(GUARD_S):
        async with gateway(fake, config(target("a"))) as (base, _):
            url = base.replace("http://", "ws://")
            with pytest.raises(ConnectionRejected) as caught:
                async with open_websocket_url(url + "/"):
                    raise AssertionError("the sidecar accepted a websocket")
            code = await trio.to_thread.run_sync(
                main, ["ctl", "--url", url, "--token", "t", "--timeout", "3", "list-targets"]
            )
            async with httpx.AsyncClient() as client:
                still_serving = await client.get(f"{base}/healthz")
    rejected = caught.value
    assert rejected.status_code == 404
    headers = {name.lower(): value for name, value in rejected.headers}
    assert headers[b"x-oswitch-request-id"].startswith(b"req_")
    assert json.loads(rejected.body or b"") == {
        "error": {
            "message": "this is oswitch's HTTP sidecar port, not its control channel: "
            "the control channel (websocket) listens on control.port",
            "type": "invalid_request_error",
            "param": None,
            "code": "not_control_channel",
        }
    }
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"oswitch ctl: cannot connect to {url}: handshake rejected (HTTP 404): "
        "this is oswitch's HTTP sidecar port, not its control channel (the control channel "
        "listens on control.port, e.g. 8788)"
    ]
    assert still_serving.status_code == 200


def failover_samples(metrics_text: str) -> dict[str, float]:
    return {
        sample.labels["decision"]: sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == "oswitch_failovers_total"
    }


async def test_a_429_that_moved_to_another_key_is_counted_as_a_move() -> None:
    """A request whose first key answered 429 and whose second served it shows one
    ``oswitch_failovers_total{decision="cooldown"}``; a served request adds nothing."""
    fake = FakeProvider().on("key-a", rate_limited(30.0)).on("key-b", reply())
    cfg = config(target("a", operator_priority=1), target("b"))
    with trio.fail_after(GUARD_S):
        async with gateway(fake, cfg) as (base, _), httpx.AsyncClient() as client:
            moved = await client.post(f"{base}/v1/chat/completions", json=chat())
            straight = await client.post(f"{base}/v1/chat/completions", json=chat())
            metrics_text = (await client.get(f"{base}/metrics")).text
    assert (moved.json()["oswitch"]["target_id"], straight.json()["oswitch"]["target_id"]) == (
        "b",
        "b",
    )
    assert failover_samples(metrics_text) == {"cooldown": 1.0}


async def test_a_reload_warns_of_sections_it_cannot_apply_and_of_missing_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A reloaded file applies its targets; a changed ``server`` section is named as
    needing a restart, and a target's missing key as a config_warning."""
    monkeypatch.delenv("OSWITCH_TEST_UNSET_KEY", raising=False)
    started = parse_config(
        {"targets": [{"target_id": "a", "provider_id": "openai", "api_key": "k", "model": "m"}]}
    )
    path = tmp_path / "oswitch.json"
    path.write_text(
        json.dumps(
            {
                "server": {"port": 9999},
                "targets": [
                    {"target_id": "a", "provider_id": "openai", "api_key": "k", "model": "m"},
                    {
                        "target_id": "b",
                        "provider_id": "openai",
                        "api_key_env": "OSWITCH_TEST_UNSET_KEY",
                        "model": "m2",
                    },
                ],
            }
        )
    )
    caplog.set_level(logging.INFO, logger="oswitch.sidecar")
    with trio.fail_after(GUARD_S):
        async with open_switcher(started, transport=FakeProvider().transport()) as switcher:
            applied = await reload_from_file(switcher, path, started=started)
            targets = [view.target_id for view in switcher.list_targets()]
    assert (applied, targets) == (True, ["a", "b"])
    logged = [
        (r.getMessage(), getattr(r, "note", None))
        for r in caplog.records
        if r.name == "oswitch.sidecar"
    ]
    assert logged == [
        ("config_warning", "b: key missing: set OSWITCH_TEST_UNSET_KEY"),
        ("config_reload_partial", READ_AT_START),
    ]
