"""The dashboard's HTTP surface on a live sidecar (127.0.0.1, real clock, each test
bounded): the token-for-cookie exchange, nothing without a session, the origin check,
the live event stream, and the trace and operation endpoints."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import httpx
import pytest
import trio
from dashboard_support import CLIENT_KEY, TOKEN, Live, running_dashboard

from oswitch.config import parse_config
from oswitch.runtime.switcher import open_switcher
from oswitch.sidecar.dashboard import routes
from oswitch.sidecar.dashboard.sessions import LOGIN_FAILURES_PER_MINUTE
from oswitch.sidecar.serve import serve_sidecar
from oswitch.testing import FakeProvider, rate_limited, reply
from support import chat

GUARD_S = 10.0


def origin_of(live: Live) -> dict[str, str]:
    return {"origin": live.base}


async def sign_in(client: httpx.AsyncClient, live: Live, token: str = TOKEN) -> httpx.Response:
    return await client.post(
        f"{live.base}/dashboard/login", data={"token": token}, headers=origin_of(live)
    )


def session_of(response: httpx.Response) -> dict[str, str]:
    """The Cookie header carrying the session a login answered with."""
    value = response.headers["set-cookie"].split(";")[0]
    return {"cookie": value}


async def signed_in(client: httpx.AsyncClient, live: Live) -> dict[str, str]:
    response = await sign_in(client, live)
    assert response.status_code == 303
    return session_of(response)


def client() -> httpx.AsyncClient:
    # No cookie jar: each test says which cookie it sends.
    return httpx.AsyncClient(timeout=GUARD_S, cookies=None, follow_redirects=False)


async def test_without_a_session_only_the_login_form_is_served() -> None:
    """Without a session /dashboard is the login form (no target named) and every other
    dashboard endpoint answers 401 with no data; a POST changes nothing."""
    with trio.fail_after(GUARD_S):
        async with running_dashboard(FakeProvider(), "alpha", "beta") as live, client() as http:
            slash = await http.get(f"{live.base}/dashboard/")
            assert (slash.status_code, slash.headers["location"]) == (308, "../dashboard")
            page = await http.get(f"{live.base}/dashboard")
            assert page.status_code == 200
            assert 'name="token"' in page.text and 'action="dashboard/login"' in page.text
            assert "alpha" not in page.text and "<script" not in page.text
            for path in ("app.js", "app.css", "api/state", "events", "api/requests/req_x"):
                denied = await http.get(f"{live.base}/dashboard/{path}")
                assert (denied.status_code, denied.json()) == (401, {"error": "sign in first"})
            refused = await http.post(
                f"{live.base}/dashboard/api/targets/alpha/pause", headers=origin_of(live)
            )
            assert refused.status_code == 401
            assert [v.state for v in live.switcher.list_targets()] == ["Active", "Active"]


async def test_the_token_becomes_an_httponly_samesite_strict_session_cookie() -> None:
    """The right token, posted as a form, is answered 303 with a session cookie that is
    HttpOnly and SameSite=Strict; that cookie then opens the page and its data, and the
    token appears in no response."""
    with trio.fail_after(GUARD_S):
        async with running_dashboard(FakeProvider(), "alpha") as live, client() as http:
            login = await sign_in(http, live)
            assert login.status_code == 303
            assert login.headers["location"] == "../dashboard"
            attributes = [part.strip() for part in login.headers["set-cookie"].split(";")]
            assert attributes[0].startswith("oswitch_dashboard=")
            assert len(attributes[0]) > len("oswitch_dashboard=") + 40
            assert "HttpOnly" in attributes and "SameSite=Strict" in attributes
            assert "Secure" not in attributes  # plain http on loopback
            cookie = session_of(login)
            page = await http.get(f"{live.base}/dashboard", headers=cookie)
            assert page.status_code == 200 and 'id="targets"' in page.text
            assert "script-src 'self'" in page.headers["content-security-policy"]
            state = await http.get(f"{live.base}/dashboard/api/state", headers=cookie)
            assert [t["target_id"] for t in state.json()["targets"]] == ["alpha"]
            script = await http.get(f"{live.base}/dashboard/app.js", headers=cookie)
            assert script.headers["content-type"].startswith("text/javascript")
            for response in (login, page, state, script):
                assert TOKEN not in response.text and TOKEN not in str(response.headers)


async def test_a_session_behind_an_https_proxy_gets_a_secure_cookie() -> None:
    """A login that a reverse proxy says came over https (X-Forwarded-Proto) gets a
    Secure cookie, and the origin check uses the proxy's X-Forwarded-Host."""
    with trio.fail_after(GUARD_S):
        async with running_dashboard(FakeProvider(), "alpha") as live, client() as http:
            login = await http.post(
                f"{live.base}/dashboard/login",
                data={"token": TOKEN},
                headers={
                    "origin": "https://ops.example.com",
                    "x-forwarded-host": "ops.example.com",
                    "x-forwarded-proto": "https",
                },
            )
            assert login.status_code == 303
            assert "Secure" in [p.strip() for p in login.headers["set-cookie"].split(";")]


async def test_a_wrong_token_gets_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """A wrong token is answered 401 with the login form saying so, and no cookie;
    neither it nor the right one reaches a log line."""
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(GUARD_S):
        async with running_dashboard(FakeProvider(), "alpha") as live, client() as http:
            login = await sign_in(http, live, token="not-the-token")
            assert login.status_code == 401
            assert "set-cookie" not in login.headers
            assert "Wrong token." in login.text and "alpha" not in login.text
            assert (await sign_in(http, live)).status_code == 303
    logged = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "dashboard_login_refused" in logged and "dashboard_login" in logged
    assert "not-the-token" not in logged and TOKEN not in logged


async def test_the_sidecars_client_keys_open_nothing() -> None:
    """A client api_key — as a bearer token, as the login token or as the cookie — gives
    no dashboard access."""
    with trio.fail_after(GUARD_S):
        async with running_dashboard(FakeProvider(), "alpha") as live, client() as http:
            bearer = {"authorization": f"Bearer {CLIENT_KEY}"}
            page = await http.get(f"{live.base}/dashboard", headers=bearer)
            assert 'name="token"' in page.text and "alpha" not in page.text
            state = await http.get(f"{live.base}/dashboard/api/state", headers=bearer)
            assert state.status_code == 401
            assert (await sign_in(http, live, token=CLIENT_KEY)).status_code == 401
            forged = {"cookie": f"oswitch_dashboard={CLIENT_KEY}"}
            state = await http.get(f"{live.base}/dashboard/api/state", headers=forged)
            assert state.status_code == 401


async def test_a_token_in_the_url_opens_nothing() -> None:
    """The token in a query string is never taken: only the POSTed form signs in."""
    with trio.fail_after(GUARD_S):
        async with running_dashboard(FakeProvider(), "alpha") as live, client() as http:
            page = await http.get(f"{live.base}/dashboard", params={"token": TOKEN})
            assert "set-cookie" not in page.headers and "alpha" not in page.text
            login = await http.get(f"{live.base}/dashboard/login", params={"token": TOKEN})
            assert login.status_code == 401 and "set-cookie" not in login.headers


async def test_state_changing_posts_from_another_origin_are_refused() -> None:
    """With a valid session, a POST from another origin (or with no Origin and no
    Sec-Fetch-Site) is refused 403 and changes nothing; from the page's origin it
    pauses the target."""
    with trio.fail_after(GUARD_S):
        async with running_dashboard(FakeProvider(), "alpha") as live, client() as http:
            cookie = await signed_in(http, live)
            url = f"{live.base}/dashboard/api/targets/alpha/pause"
            evil = await http.post(url, headers={**cookie, "origin": "https://evil.example"})
            bare = await http.post(url, headers=cookie)
            assert (evil.status_code, bare.status_code) == (403, 403)
            assert live.switcher.list_targets()[0].state == "Active"
            login = await http.post(
                f"{live.base}/dashboard/login",
                data={"token": TOKEN},
                headers={"origin": "https://evil.example"},
            )
            assert login.status_code == 403 and "set-cookie" not in login.headers
            done = await http.post(url, headers={**cookie, **origin_of(live)})
            assert done.status_code == 200 and done.json()["target"]["state"] == "Paused"
            assert live.switcher.list_targets()[0].state == "Paused"
            fetch = await http.post(
                f"{live.base}/dashboard/api/targets/alpha/resume",
                headers={**cookie, "sec-fetch-site": "same-origin"},
            )
            assert fetch.status_code == 200
            assert live.switcher.list_targets()[0].state == "Active"


async def test_operations_name_unknown_targets_and_operations() -> None:
    """An unknown target is a 404 naming it; an unknown operation a 404."""
    with trio.fail_after(GUARD_S):
        async with running_dashboard(FakeProvider(), "alpha") as live, client() as http:
            headers = {**(await signed_in(http, live)), **origin_of(live)}
            base = f"{live.base}/dashboard/api/targets"
            missing = await http.post(f"{base}/nope/pause", headers=headers)
            assert missing.status_code == 404 and "nope" in missing.json()["error"]
            wrong = await http.post(f"{base}/alpha/explode", headers=headers)
            assert (wrong.status_code, wrong.json()) == (404, {"error": "no such operation"})


async def test_wrong_tokens_are_bounded_per_minute() -> None:
    """Past LOGIN_FAILURES_PER_MINUTE wrong tokens, logins are answered 429 with
    Retry-After — even the right token — so the token cannot be guessed at line rate."""
    with trio.fail_after(GUARD_S):
        async with running_dashboard(FakeProvider(), "alpha") as live, client() as http:
            for _ in range(LOGIN_FAILURES_PER_MINUTE):
                assert (await sign_in(http, live, token="guess")).status_code == 401
            throttled = await sign_in(http, live)
            assert throttled.status_code == 429
            assert 1 <= int(throttled.headers["retry-after"]) <= 61
            assert "set-cookie" not in throttled.headers


async def test_logout_ends_the_session() -> None:
    """After logout the old cookie opens nothing."""
    with trio.fail_after(GUARD_S):
        async with running_dashboard(FakeProvider(), "alpha") as live, client() as http:
            cookie = await signed_in(http, live)
            out = await http.post(
                f"{live.base}/dashboard/logout", headers={**cookie, **origin_of(live)}
            )
            assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
            state = await http.get(f"{live.base}/dashboard/api/state", headers=cookie)
            assert state.status_code == 401


async def snapshots(http: httpx.AsyncClient, live: Live, cookie: dict[str, str]) -> Any:
    """The snapshots of one live event stream, as an async iterator of dicts."""

    async def read() -> AsyncIterator[dict[str, Any]]:
        async with http.stream("GET", f"{live.base}/dashboard/events", headers=cookie) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"] == "text/event-stream"
            event = ""
            async for line in stream.aiter_lines():
                if line.startswith("event: "):
                    event = line[len("event: ") :]
                elif line.startswith("data: ") and event == "snapshot":
                    yield json.loads(line[len("data: ") :])

    return read()


async def test_the_event_stream_pushes_a_snapshot_then_each_change() -> None:
    """The live stream sends a snapshot at once, then a new one after a pause made
    elsewhere (the hub's target_state event), without the page asking."""
    with trio.fail_after(GUARD_S):
        async with running_dashboard(FakeProvider(), "alpha", "beta") as live, client() as http:
            cookie = await signed_in(http, live)
            stream = await snapshots(http, live, cookie)
            first = await anext(stream)
            assert [t["state"] for t in first["targets"]] == ["Active", "Active"]
            await live.switcher.pause_target("beta")
            async for snapshot in stream:
                if snapshot["targets"][1]["state"] == "Paused":
                    break
            await stream.aclose()


async def test_a_shutdown_ends_the_event_stream() -> None:
    """Setting the sidecar's shutdown trigger ends open event streams (a graceful
    shutdown is not held up by an open dashboard)."""
    with trio.fail_after(GUARD_S):
        async with running_dashboard(FakeProvider(), "alpha") as live, client() as http:
            cookie = await signed_in(http, live)
            stream = await snapshots(http, live, cookie)
            await anext(stream)
            live.shutdown.set()
            async for _ in stream:
                pass


async def test_live_streams_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_EVENT_STREAMS open streams, one more is answered 503."""
    monkeypatch.setattr(routes, "MAX_EVENT_STREAMS", 2)
    with trio.fail_after(GUARD_S):
        async with running_dashboard(FakeProvider(), "alpha") as live, client() as http:
            cookie = await signed_in(http, live)
            first = await snapshots(http, live, cookie)
            second = await snapshots(http, live, cookie)
            await anext(first)
            await anext(second)
            third = await http.get(f"{live.base}/dashboard/events", headers=cookie)
            assert third.status_code == 503
            await first.aclose()
            await second.aclose()


async def test_recent_failovers_link_to_the_requests_trace() -> None:
    """A request that failed over shows in the snapshot's recent list with its request
    id and per-target figures; its trace endpoint gives both attempts."""
    fake = FakeProvider().on("key-alpha", rate_limited(retry_after=60.0))
    fake.on("key-beta", reply())
    with trio.fail_after(GUARD_S):
        async with running_dashboard(fake, "alpha", "beta") as live, client() as http:
            reply_ = await live.switcher.complete(chat())
            request_id = reply_["oswitch"]["request_id"]
            cookie = await signed_in(http, live)
            state = (await http.get(f"{live.base}/dashboard/api/state", headers=cookie)).json()
            [failover] = [e for e in state["recent"] if e.get("request_id") == request_id]
            assert (failover["target_id"], failover["error_class"]) == ("alpha", "RateLimited")
            alpha, beta = state["targets"]
            assert alpha["stats"]["errors_by_class"] == {"RateLimited": 1}
            assert alpha["last_error"] == "RateLimited"
            assert beta["stats"]["minutes"][-1] == {"attempts": 1, "errors": 0}
            assert beta["stats"]["p50_ms"] is not None
            assert state["share"]["models"]["gpt-4o"][-1] == {"alpha": 1, "beta": 1}
            trace = await http.get(
                f"{live.base}/dashboard/api/requests/{request_id}", headers=cookie
            )
            assert [a["target_id"] for a in trace.json()["attempts"]] == ["alpha", "beta"]
            gone = await http.get(f"{live.base}/dashboard/api/requests/req_nope", headers=cookie)
            assert gone.status_code == 404


async def test_no_dashboard_without_the_control_channel() -> None:
    """A sidecar served without a control token has no /dashboard (404)."""
    config = parse_config({"targets": [{"target_id": "a", "provider_id": "openai"}]})
    with trio.fail_after(GUARD_S):
        async with open_switcher(config, transport=FakeProvider().transport()) as switcher:
            async with trio.open_nursery() as nursery, client() as http:
                port = await nursery.start(partial(serve_sidecar, switcher, port=0))
                page = await http.get(f"http://127.0.0.1:{port}/dashboard")
                assert page.status_code == 404
                nursery.cancel_scope.cancel()


def test_the_pages_files_ship_inside_the_package() -> None:
    """The page's files load from the installed package (static/, package data that
    hatchling ships with the wheel): nothing from a CDN, no build step."""
    assets = routes.load_assets()
    assert set(assets) == {"app.js", "app.css", "index.html", "login.html"}
    for name in ("index.html", "login.html"):
        page = assets[name].decode()
        assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page
    assert b"https://" not in assets["app.js"] and b'fetch("http' not in assets["app.js"]
