"""The dashboard's pure parts: its traffic figures (time passed in) and its guard
(sessions, the login bound, cookies, the origin check)."""

from __future__ import annotations

from oswitch.sidecar.dashboard import stats as figures
from oswitch.sidecar.dashboard.sessions import (
    LoginGuard,
    SessionStore,
    cookie,
    same_origin,
    session_cookie,
)
from oswitch.sidecar.dashboard.stats import TrafficStats, quantile


def attempt(
    target: str,
    *,
    model: str = "m",
    error: str | None = None,
    ms: float = 10.0,
    decision: str = "return",
    request_id: str = "req_1",
) -> dict[str, object]:
    return {
        "target_id": target,
        "model": model,
        "error_class": error,
        "latency_ms": ms,
        "decision": decision,
        "request_id": request_id,
    }


def test_minutes_count_attempts_and_errors_and_forget_past_the_window() -> None:
    """Per target: attempts and errors per minute over the last WINDOW_MINUTES, the
    errors by class summed over it; older minutes are gone."""
    stats = TrafficStats()
    stats.record("attempt", attempt("a", error="RateLimited", decision="cooldown"), 5.0)
    stats.record("attempt", attempt("a"), 65.0)
    stats.record("attempt", attempt("a", error="TransportFailure", decision="failover"), 70.0)
    now = 61.0 + 60.0
    a = stats.target_stats("a", now)
    assert len(a["minutes"]) == figures.WINDOW_MINUTES
    assert a["minutes"][-3:] == [
        {"attempts": 1, "errors": 1},
        {"attempts": 2, "errors": 1},
        {"attempts": 0, "errors": 0},
    ]
    assert a["errors_by_class"] == {"RateLimited": 1, "TransportFailure": 1}
    later = stats.target_stats("a", 5.0 + 60.0 * figures.WINDOW_MINUTES)
    assert later["errors_by_class"] == {"TransportFailure": 1}
    assert stats.target_stats("never", now)["p50_ms"] is None


def test_latency_quantiles_cover_recent_successes_only() -> None:
    """p50/p99 come from successful attempts of the last LATENCY_WINDOW_S, at most
    LATENCY_SAMPLES of them; failures and cancelled attempts do not count."""
    stats = TrafficStats()
    for index in range(100):
        stats.record("attempt", attempt("a", ms=float(index + 1)), 10.0)
    stats.record("attempt", attempt("a", ms=5000.0, error="TransportFailure"), 10.0)
    stats.record("attempt", attempt("a", ms=9000.0, decision="cancelled"), 10.0)
    a = stats.target_stats("a", 20.0)
    assert (a["p50_ms"], a["p99_ms"]) == (50.0, 99.0)
    assert stats.target_stats("a", 10.0 + figures.LATENCY_WINDOW_S)["p50_ms"] is None
    for _ in range(figures.LATENCY_SAMPLES + 10):
        stats.record("attempt", attempt("b"), 1.0)
    assert len(stats._targets["b"].latencies) == figures.LATENCY_SAMPLES


def test_quantile_is_nearest_rank() -> None:
    """quantile: nearest rank, None for no samples."""
    assert quantile([], 0.5) is None
    assert quantile([3.0], 0.99) == 3.0
    assert quantile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.0


def test_share_buckets_per_model_and_caps_the_number_of_models() -> None:
    """Traffic share: attempts per target per SHARE_BUCKET_S bucket per model, the last
    SHARE_BUCKETS only; models past MAX_MODELS are lumped together."""
    stats = TrafficStats()
    stats.record("attempt", attempt("a", model="m"), 1.0)
    stats.record("attempt", attempt("b", model="m"), 2.0)
    stats.record("attempt", attempt("a", model="m"), 12.0)
    share = stats.share(15.0)
    series = share["models"]["m"]
    assert len(series) == figures.SHARE_BUCKETS
    assert series[-2:] == [{"a": 1, "b": 1}, {"a": 1}]
    assert stats.share(15.0 + figures.SHARE_BUCKET_S * figures.SHARE_BUCKETS)["models"] == {}
    many = TrafficStats()
    for index in range(figures.MAX_MODELS + 5):
        many.record("attempt", attempt("a", model=f"model-{index}"), 1.0)
    models = many.share(1.0)["models"]
    assert len(models) == figures.MAX_MODELS + 1
    assert models[figures.OTHER_MODEL][-1] == {"a": 5}


def test_recent_keeps_the_notable_events_newest_first_and_bounded() -> None:
    """Failed or moved attempts, breaker changes and failed requests are listed newest
    first with their age; plain successes are not; the list is capped."""
    stats = TrafficStats()
    stats.record("attempt", attempt("a"), 1.0)
    stats.record("attempt", attempt("a", error="RateLimited", decision="cooldown"), 2.0)
    stats.record("breaker", {"target_id": "a", "state": "Open", "note": "5 failures"}, 3.0)
    stats.record("request_failed", {"request_id": "req_2", "error_class": ""}, 4.0)
    recent = stats.recent(10.0)
    assert [(e["event"], e["ago_s"]) for e in recent] == [
        ("request_failed", 6.0),
        ("breaker", 7.0),
        ("attempt", 8.0),
    ]
    assert "error_class" not in recent[0]  # empty fields left out
    for index in range(figures.RECENT_EVENTS + 5):
        stats.record("hedge", {"request_id": f"req_{index}"}, 5.0)
    assert len(stats.recent(6.0)) == figures.RECENT_EVENTS
    before = stats.version
    stats.record("backpressure", {}, 7.0)
    assert stats.version == before + 1


def test_forget_targets_drops_removed_ones() -> None:
    """After a reload removes a target, its figures go too."""
    stats = TrafficStats()
    stats.record("attempt", attempt("gone"), 1.0)
    stats.forget_targets_except({"kept"})
    assert stats.target_stats("gone", 2.0)["minutes"][-1] == {"attempts": 0, "errors": 0}


def test_sessions_expire_end_on_close_and_are_capped() -> None:
    """A session is valid until its TTL, ends on close, and past max_sessions the oldest
    ends; the store keeps digests, never the ids themselves."""
    ids = iter(f"session-{n}" for n in range(10))
    store = SessionStore(ttl_s=100.0, max_sessions=2, new_id=lambda: next(ids))
    first = store.open(0.0)
    assert store.valid(first, 99.0) and not store.valid(first, 100.0)
    assert not store.valid(None, 0.0) and not store.valid("", 0.0)
    second, third = store.open(1.0), store.open(2.0)
    assert not store.valid(first, 3.0) and store.valid(second, 3.0) and store.valid(third, 3.0)
    store.close(second)
    assert not store.valid(second, 3.0) and len(store) == 1
    assert all("session-" not in key for key in store._expiry)


def test_login_guard_counts_failures_over_a_minute() -> None:
    """After per_minute wrong tokens, logins wait until the oldest is a minute old."""
    guard = LoginGuard(per_minute=2)
    assert guard.retry_after(0.0) is None
    guard.failed(0.0)
    guard.failed(10.0)
    assert guard.retry_after(30.0) == 30.0
    assert guard.retry_after(60.0) is None


def test_cookies_and_origins() -> None:
    """The session cookie is HttpOnly and SameSite=Strict (Secure when asked); it is
    read back from Cookie headers; the origin check wants Origin to name the host."""
    assert session_cookie("abc", secure=False) == (
        b"oswitch_dashboard=abc; Max-Age=43200; HttpOnly; SameSite=Strict"
    )
    assert session_cookie("abc", secure=True).endswith(b"; Secure")
    headers = [(b"cookie", b"other=1; oswitch_dashboard=abc")]
    assert cookie(headers) == "abc" and cookie([]) is None
    host = (b"host", b"127.0.0.1:8787")
    assert same_origin([host, (b"origin", b"http://127.0.0.1:8787")])
    assert not same_origin([host, (b"origin", b"http://127.0.0.1:9999")])
    assert not same_origin([host, (b"origin", b"null")])
    assert not same_origin([host])
    assert same_origin([host, (b"sec-fetch-site", b"same-origin")])
    assert not same_origin([host, (b"sec-fetch-site", b"cross-site")])
    proxied = [host, (b"x-forwarded-host", b"ops.example.com")]
    assert same_origin([*proxied, (b"origin", b"https://ops.example.com")])
    assert not same_origin([(b"origin", b"https://x")])
