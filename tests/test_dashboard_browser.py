"""The dashboard in a real headless Chromium (the system's, driven by Playwright; nothing
is downloaded): it loads and shows the targets, follows a pause made from `oswitch ctl`,
sends a pause clicked on the page to the engine, and gives a wrong token nothing.

Skipped where Playwright or Chromium is missing, except under CI=true, where that fails.
Set OSWITCH_DASHBOARD_SHOTS=DIR to also save the screenshots docs/dashboard.md shows.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from dashboard_support import TOKEN, Live, running_dashboard

from oswitch.cli import main
from oswitch.errors import SwitcherError
from oswitch.testing import FakeProvider, rate_limited, reply, server_error
from support import chat

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As root, in a container: no sandbox, no GPU, nothing phoning home.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
GUARD_S = 60.0  # a browser's start on a loaded CI machine, and every wait below
WAIT_MS = 20_000


def _need_browser() -> None:
    problems = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("playwright is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).exists():
        problems.append(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    if problems:
        if os.environ.get("CI") == "true":
            pytest.fail("; ".join(problems))
        pytest.skip("; ".join(problems))


@pytest.fixture(autouse=True)
def _browser_present() -> None:
    _need_browser()


Script = Callable[[Any, str], Any]


def _in_chromium(script: Script, base: str, profile: Path) -> Any:
    """Run ``script(page, base)`` in a fresh Chromium profile (this thread only)."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1800, "height": 1000},
        )
        try:
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            return script(page, base)
        finally:
            context.close()


async def in_browser(script: Script, live: Live, tmp_path: Path) -> Any:
    """``script(page, base_url)`` in a headless Chromium, in a worker thread while the
    sidecar keeps serving in this one."""
    profile = tmp_path / "chromium-profile"
    return await trio.to_thread.run_sync(
        partial(_in_chromium, script, live.base, profile), abandon_on_cancel=True
    )


def sign_in(page: Any, base: str, token: str = TOKEN) -> None:
    page.goto(f"{base}/dashboard")
    page.fill("#token", token)
    page.click("#sign-in")


def shoot(page: Any, name: str, element: str | None = None) -> None:
    folder = os.environ.get("OSWITCH_DASHBOARD_SHOTS")
    if folder and element:
        page.locator(element).screenshot(path=str(Path(folder) / name))
    elif folder:
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def row_cell(page: Any, target_id: str, column: int) -> Any:
    return page.locator(f'#targets tbody tr[data-target="{target_id}"] td:nth-child({column})')


async def some_traffic(live: Live) -> str:
    """A few requests, the first failing over from alpha to beta; its request id. For
    the docs' screenshots (OSWITCH_DASHBOARD_SHOTS set) a minute of traffic first, with
    gamma paused for part of it, so the share chart has a history to show."""
    if os.environ.get("OSWITCH_DASHBOARD_SHOTS"):
        await _a_minute_of_traffic(live)
    first = await live.switcher.complete(chat())
    for _ in range(5):
        await live.switcher.complete(chat())
    await live.switcher.complete(chat("claude-3-5-sonnet"))
    return str(first["oswitch"]["request_id"])


async def _a_minute_of_traffic(live: Live) -> None:
    for tick in range(300):
        if tick == 100:
            await live.switcher.pause_target("gamma")
        if tick == 200:
            await live.switcher.resume_target("gamma")
        with contextlib.suppress(SwitcherError):
            await live.switcher.complete(chat())
            if tick % 3 == 0:
                await live.switcher.complete(chat("claude-3-5-sonnet"))
        await trio.sleep(0.2)
    await live.switcher.resume_target("alpha")


def busy_provider() -> FakeProvider:
    fake = FakeProvider().on("key-alpha", rate_limited(retry_after=120.0))
    fake.on("key-beta", reply(latency=0.002)).on("key-gamma", reply(latency=0.004))
    return fake.on("key-delta", server_error(), reply(latency=0.003))


async def test_the_page_loads_and_shows_every_target(tmp_path: Path) -> None:
    """Signed in with the token, the page lists every target with its state and
    condition, charts the traffic share per model, and lists the failover, whose
    request link opens that request's timeline."""
    shots = bool(os.environ.get("OSWITCH_DASHBOARD_SHOTS"))
    with trio.fail_after(GUARD_S + (120 if shots else 0)):
        models = ("gpt-4o", "gpt-4o", "gpt-4o", "claude-3-5-sonnet")
        async with running_dashboard(
            busy_provider(), "alpha", "beta", "gamma", "delta", models=models
        ) as live:
            request_id = await some_traffic(live)

            def script(page: Any, base: str) -> dict[str, Any]:
                from playwright.sync_api import expect

                sign_in(page, base)
                expect(page.locator("#live")).to_have_text("live")
                rows = page.locator("#targets tbody tr")
                expect(rows).to_have_count(4)
                expect(row_cell(page, "alpha", 3)).to_have_text("CoolingDown")
                expect(
                    page.locator('#share .chart[data-model="gpt-4o"] svg rect')
                ).not_to_have_count(0)
                link = page.locator(f'#recent a[data-request="{request_id}"]').first
                expect(link).to_be_visible()
                link.click()
                expect(page.locator("#trace-timeline tr[data-attempt]")).to_have_count(2)
                shoot(page, "dashboard.png")
                return {
                    "ids": [r.get_attribute("data-target") for r in rows.all()],
                    "states": [row_cell(page, t, 2).inner_text() for t in ("alpha", "beta")],
                    "timeline": page.locator("#trace-timeline").inner_text(),
                }

            seen = await in_browser(script, live, tmp_path)
    assert seen["ids"] == ["alpha", "beta", "gamma", "delta"]
    assert seen["states"] == ["Active", "Active"]
    # The failover went to beta or gamma (equally good: load is spread between them).
    assert "RateLimited" in seen["timeline"]
    assert "\tbeta\t" in seen["timeline"] or "\tgamma\t" in seen["timeline"]


async def test_the_page_follows_a_pause_made_from_ctl(tmp_path: Path) -> None:
    """A pause made with `oswitch ctl` reaches the open page through the live event
    stream (no reload): beta's row turns Paused."""
    with trio.fail_after(GUARD_S):
        async with running_dashboard(FakeProvider(), "alpha", "beta") as live:

            def script(page: Any, base: str) -> str:
                from playwright.sync_api import expect

                sign_in(page, base)
                expect(row_cell(page, "beta", 2)).to_have_text("Active")
                argv = ["ctl", "--url", live.control_url, "--token", TOKEN, "pause", "beta"]
                assert main(argv) == 0
                expect(row_cell(page, "beta", 2)).to_have_text("Paused", timeout=WAIT_MS)
                return str(row_cell(page, "alpha", 2).inner_text())

            alpha_state = await in_browser(script, live, tmp_path)
    assert alpha_state == "Active"


async def test_a_pause_clicked_on_the_page_reaches_the_engine(tmp_path: Path) -> None:
    """Pause asks for confirmation: cancelled, nothing changes; confirmed, the engine's
    target is Paused."""
    with trio.fail_after(GUARD_S):
        async with running_dashboard(FakeProvider(), "alpha", "beta") as live:
            states: dict[str, str] = {}

            def script(page: Any, base: str) -> None:
                from playwright.sync_api import expect

                sign_in(page, base)
                pause = page.locator(
                    '#targets tbody tr[data-target="beta"] button[data-op="pause"]'
                )
                pause.click()
                expect(page.locator("#confirm")).to_be_visible()
                expect(page.locator("#confirm-text")).to_contain_text("Pause beta?")
                page.click("#confirm-cancel")
                expect(page.locator("#confirm")).to_be_hidden()
                states["after_cancel"] = trio.from_thread.run_sync(
                    lambda: live.switcher.list_targets()[1].state
                )
                pause.click()
                page.click("#confirm-ok")
                expect(page.locator("#action-status")).to_have_text("pause beta: done")
                expect(row_cell(page, "beta", 2)).to_have_text("Paused")

            await in_browser(script, live, tmp_path)
            assert states["after_cancel"] == "Active"
            assert [v.state for v in live.switcher.list_targets()] == ["Active", "Paused"]


async def test_a_wrong_token_gets_nothing_in_the_browser(tmp_path: Path) -> None:
    """A wrong token leaves the browser on the login form saying so, with no session:
    no target is shown and the page's data endpoints answer 401."""
    with trio.fail_after(GUARD_S):
        async with running_dashboard(FakeProvider(), "alpha") as live:

            def script(page: Any, base: str) -> dict[str, Any]:
                from playwright.sync_api import expect

                sign_in(page, base, token="wrong-token")
                expect(page.locator("#login-message")).to_have_text("Wrong token.")
                shoot(page, "dashboard-login.png", "main")
                return {
                    "targets_table": page.locator("#targets").count(),
                    "body": page.content(),
                    "state": page.request.get(f"{base}/dashboard/api/state").status,
                    "events": page.request.get(f"{base}/dashboard/events").status,
                    "cookies": page.context.cookies(),
                }

            seen = await in_browser(script, live, tmp_path)
    assert seen["targets_table"] == 0 and "alpha" not in seen["body"]
    assert (seen["state"], seen["events"]) == (401, 401)
    assert seen["cookies"] == []


async def test_the_page_shows_token_use_and_headroom(tmp_path: Path) -> None:
    """A target with a token budget shows the tokens it used over the last minute and
    what is left of its budget; one without shows neither."""
    with trio.fail_after(GUARD_S):
        budget = {"alpha": {"rate_limit": {"tokens_per_minute": 6000}}}
        fake = FakeProvider().on("key-alpha", reply(latency=0.001))
        async with running_dashboard(fake, "alpha", "beta", extra=budget) as live:
            await live.switcher.complete(chat())
            alpha = live.switcher.list_targets()[0]
            assert alpha.tokens_per_minute > 0 and alpha.token_budget_available is not None
            expected_tpm = str(alpha.tokens_per_minute)

            def script(page: Any, base: str) -> dict[str, str]:
                from playwright.sync_api import expect

                sign_in(page, base)
                expect(row_cell(page, "alpha", 12)).to_have_text(expected_tpm)
                expect(row_cell(page, "alpha", 13)).to_contain_text("budget ")
                return {
                    "headroom": row_cell(page, "alpha", 13).inner_text(),
                    "beta": row_cell(page, "beta", 13).inner_text(),
                }

            seen = await in_browser(script, live, tmp_path)
    # What is left refills continuously, so only its form is pinned here.
    assert 0 <= int(seen["headroom"].removeprefix("budget ")) <= 6000
    assert seen["beta"] == "–"
