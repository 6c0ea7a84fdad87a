"""The dashboard's endpoints under ``/dashboard`` on the sidecar's port.

``GET /dashboard`` is the page, or — without a session — the login form and nothing
else. ``POST /dashboard/login`` exchanges the control token (a form field, never a
URL) for a session cookie; ``POST /dashboard/logout`` ends it. With a session:
``GET /dashboard/app.js`` and ``/dashboard/app.css`` (the page's assets, shipped in
the package), ``GET /dashboard/api/state`` (one snapshot), ``GET /dashboard/events``
(server-sent events: a snapshot at once, then one after each change, at most every
``MIN_PUSH_INTERVAL_S``, and every ``HEARTBEAT_S`` when quiet), ``GET
/dashboard/api/requests/<id>`` (a request's trace) and ``POST
/dashboard/api/targets/<id>/<pause|resume|drain|disable>``. Every POST must come from
the dashboard's own origin (:func:`same_origin`). The sidecar's client ``api_keys``
open nothing here.
"""

from __future__ import annotations

import html
import logging
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import trio

from oswitch.control.protocol import encode, to_json, trace_json
from oswitch.core.secret import Secret
from oswitch.errors import UnknownRequest, UnknownTarget
from oswitch.runtime.switcher import Switcher
from oswitch.sidecar.dashboard.sessions import (
    LoginGuard,
    SessionStore,
    behind_https,
    cleared_cookie,
    cookie,
    same_origin,
    session_cookie,
)
from oswitch.sidecar.dashboard.stats import TrafficStats
from oswitch.sidecar.responses import Receive, Scope, Send

log = logging.getLogger("oswitch.dashboard")

PREFIX = "/dashboard"
MAX_LOGIN_BODY_BYTES = 4096
"""A login form larger than this is refused (413)."""
LOGIN_BODY_TIMEOUT_S = 10.0
"""Time to send a login form once its headers are in (408 past it)."""
MAX_EVENT_STREAMS = 16
"""Live event streams served at once (each open dashboard tab holds one); one more is
answered 503, and the page's EventSource tries again."""
MIN_PUSH_INTERVAL_S = 1.0
HEARTBEAT_S = 5.0
RETRY_MS = 3000
"""How soon a browser's EventSource reconnects after its stream ended."""

TARGET_OPERATIONS = ("pause", "resume", "drain", "disable")

_PAGE_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# The login form has no script at all, and its one style sheet is inline (nothing
# else may be served before a session exists).
_LOGIN_CSP = (
    b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    b"frame-ancestors 'none'; base-uri 'none'"
)
_COMMON_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # Not no-referrer: Chromium then sends "Origin: null" with the page's own POSTs.
    (b"referrer-policy", b"same-origin"),
]
_ASSET_TYPES = {
    "app.js": b"text/javascript; charset=utf-8",
    "app.css": b"text/css; charset=utf-8",
    "index.html": b"text/html; charset=utf-8",
    "login.html": b"text/html; charset=utf-8",
}


def load_assets() -> dict[str, bytes]:
    """The page's files, read once from the package (``static/``). Raises OSError
    when the package was installed without them."""
    folder = resources.files("oswitch.sidecar.dashboard") / "static"
    return {name: (folder / name).read_bytes() for name in _ASSET_TYPES}


class Dashboard:
    """Serves ``/dashboard`` for one switcher, guarded by the control ``token``.

    Construction subscribes a listener to the switcher's event hub (the traffic
    figures start then). ``shutdown`` ends live event streams when set, so a
    graceful shutdown is not held up by open dashboards.
    """

    def __init__(
        self, switcher: Switcher, *, token: Secret, shutdown: trio.Event | None = None
    ) -> None:
        self.switcher = switcher
        self._token = token
        self._shutdown = shutdown if shutdown is not None else trio.Event()
        self.stats = TrafficStats()
        self.sessions = SessionStore()
        self.logins = LoginGuard()
        self._assets = load_assets()
        self._changed = trio.Event()
        self.event_streams = 0
        switcher.events.add_listener(self._record)

    def _record(self, name: str, fields: dict[str, Any]) -> None:
        # Runs inside routing: bookkeeping only, then wake the live streams.
        self.stats.record(name, fields, trio.current_time())
        self._changed.set()

    # ---- routing ---------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """Answer one request under ``/dashboard``. Blocks for a live stream's life
        (until the client leaves or shutdown); raises only Cancelled."""
        method, path = scope["method"], scope["path"]
        headers = scope.get("headers", ())
        rest = path[len(PREFIX) :].strip("/")
        now = trio.current_time()
        signed_in = self.sessions.valid(cookie(headers), now)
        if method == "POST":
            if not same_origin(headers):
                await self._json(send, request_id, 403, {"error": "cross-origin request refused"})
            elif rest == "login":
                await self._login(scope, receive, send, request_id)
            elif rest == "logout":
                self.sessions.close(cookie(headers))
                await self._redirect(send, request_id, cleared_cookie(secure=_https(scope)))
            elif not signed_in:
                await self._json(send, request_id, 401, {"error": "sign in first"})
            elif rest.startswith("api/targets/"):
                await self._target_operation(send, request_id, rest[len("api/targets/") :])
            else:
                await self._json(send, request_id, 404, {"error": "no such endpoint"})
            return
        if method not in ("GET", "HEAD"):
            await self._json(send, request_id, 405, {"error": "GET or POST only"})
        elif rest == "" and path != PREFIX:
            # /dashboard/: the page's relative URLs need /dashboard itself.
            headers = [(b"location", b"../dashboard")]
            await self._send(send, request_id, 308, b"", b"text/plain", headers)
        elif rest == "":
            if signed_in:
                await self._asset(send, request_id, "index.html")
            else:
                await self._login_form(send, request_id, 200, "")
        elif not signed_in:
            await self._json(send, request_id, 401, {"error": "sign in first"})
        elif rest in ("app.js", "app.css"):
            await self._asset(send, request_id, rest)
        elif rest == "api/state":
            await self._send(send, request_id, 200, encode(self.snapshot()).encode(), _JSON)
        elif rest == "events":
            await self._events(send, request_id)
        elif rest.startswith("api/requests/"):
            await self._trace(send, request_id, rest[len("api/requests/") :])
        else:
            await self._json(send, request_id, 404, {"error": "no such endpoint"})

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows, as JSON data: each target's view with its
        recent traffic under ``stats``, the traffic share per model, recent events."""
        now = trio.current_time()
        views = self.switcher.list_targets()
        self.stats.forget_targets_except({view.target_id for view in views})
        targets = []
        for view in views:
            data = to_json(view)
            data["stats"] = self.stats.target_stats(view.target_id, now)
            targets.append(data)
        return {
            "targets": targets,
            "share": self.stats.share(now),
            "recent": self.stats.recent(now),
        }

    # ---- sign-in ---------------------------------------------------------------

    async def _login(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        now = trio.current_time()
        wait = self.logins.retry_after(now)
        if wait is not None:
            log.warning("dashboard_login_throttled", extra={"request_id": request_id})
            await self._login_form(
                send,
                request_id,
                429,
                "Too many wrong tokens: try again in a minute.",
                [(b"retry-after", str(int(wait) + 1).encode())],
            )
            return
        body = await _read_form(receive)
        if body is None:
            await self._login_form(send, request_id, 413, "That form is too large or too slow.")
            return
        token = (parse_qs(body.decode("utf-8", "replace")).get("token") or [""])[0]
        if not token or not self._token.matches(token):
            self.logins.failed(now)
            log.warning("dashboard_login_refused", extra={"request_id": request_id})
            await self._login_form(send, request_id, 401, "Wrong token.")
            return
        session_id = self.sessions.open(now)
        log.info("dashboard_login", extra={"request_id": request_id})
        await self._redirect(send, request_id, session_cookie(session_id, secure=_https(scope)))

    async def _login_form(
        self,
        send: Send,
        request_id: str,
        status: int,
        message: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        page = self._assets["login.html"].replace(b"{{message}}", html.escape(message).encode())
        extra = [(b"content-security-policy", _LOGIN_CSP), *(headers or [])]
        await self._send(send, request_id, status, page, _HTML, extra)

    async def _redirect(self, send: Send, request_id: str, set_cookie: bytes) -> None:
        # Relative, so a dashboard behind a proxy's path prefix stays under it.
        headers = [(b"location", b"../dashboard"), (b"set-cookie", set_cookie)]
        await self._send(send, request_id, 303, b"", b"text/plain", headers)

    # ---- signed-in endpoints ---------------------------------------------------

    async def _target_operation(self, send: Send, request_id: str, rest: str) -> None:
        target_id, _, operation = rest.rpartition("/")
        if operation not in TARGET_OPERATIONS or not target_id:
            await self._json(send, request_id, 404, {"error": "no such operation"})
            return
        apply = {
            "pause": self.switcher.pause_target,
            "resume": self.switcher.resume_target,
            "drain": self.switcher.drain_target,
            "disable": self.switcher.disable_target,
        }[operation]
        try:
            await apply(target_id)
        except UnknownTarget as exc:
            await self._json(send, request_id, 404, {"error": str(exc)})
            return
        log.info(
            "dashboard_target_operation",
            extra={"request_id": request_id, "target_id": target_id, "note": operation},
        )
        views = [v for v in self.switcher.list_targets() if v.target_id == target_id]
        body = encode({"target": views[0] if views else None}).encode()
        await self._send(send, request_id, 200, body, _JSON)

    async def _trace(self, send: Send, request_id: str, wanted: str) -> None:
        try:
            trace = self.switcher.inspect_request(wanted)
        except UnknownRequest as exc:
            await self._json(send, request_id, 404, {"error": str(exc)})
            return
        await self._send(send, request_id, 200, encode(trace_json(trace)).encode(), _JSON)

    async def _events(self, send: Send, request_id: str) -> None:
        if self.event_streams >= MAX_EVENT_STREAMS:
            await self._json(send, request_id, 503, {"error": "too many live dashboards"})
            return
        self.event_streams += 1
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream"),
                        (b"x-oswitch-request-id", request_id.encode()),
                        (b"x-accel-buffering", b"no"),  # nginx: pass events on at once
                        *_COMMON_HEADERS,
                    ],
                }
            )
            await send(
                {
                    "type": "http.response.body",
                    "body": f"retry: {RETRY_MS}\n\n".encode(),
                    "more_body": True,
                }
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_when_set, self._shutdown, nursery.cancel_scope)
                await self._push_snapshots(send)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.event_streams -= 1

    async def _push_snapshots(self, send: Send) -> None:
        """Send a snapshot now, then after every change (coalesced: at most one per
        ``MIN_PUSH_INTERVAL_S``), or after ``HEARTBEAT_S`` without one."""
        while True:
            changed = self._changed  # set by the next event from here on
            body = b"event: snapshot\ndata: " + encode(self.snapshot()).encode() + b"\n\n"
            await send({"type": "http.response.body", "body": body, "more_body": True})
            await trio.sleep(MIN_PUSH_INTERVAL_S)
            with trio.move_on_after(HEARTBEAT_S - MIN_PUSH_INTERVAL_S):
                await changed.wait()
            if changed.is_set() and self._changed is changed:
                self._changed = trio.Event()  # the first stream to wake re-arms it

    # ---- responses ---------------------------------------------------------------

    async def _asset(self, send: Send, request_id: str, name: str) -> None:
        extra = [(b"content-security-policy", _PAGE_CSP)] if name == "index.html" else []
        await self._send(send, request_id, 200, self._assets[name], _ASSET_TYPES[name], extra)

    async def _json(
        self, send: Send, request_id: str, status: int, payload: dict[str, Any]
    ) -> None:
        await self._send(send, request_id, status, encode(payload).encode(), _JSON)

    async def _send(
        self,
        send: Send,
        request_id: str,
        status: int,
        body: bytes,
        content_type: bytes,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-oswitch-request-id", request_id.encode()),
                    *_COMMON_HEADERS,
                    *(headers or []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


_JSON = b"application/json"
_HTML = b"text/html; charset=utf-8"


def _https(scope: Scope) -> bool:
    return behind_https(scope.get("headers", ()), str(scope.get("scheme", "http")))


async def _read_form(receive: Receive) -> bytes | None:
    """The request body, or None past ``MAX_LOGIN_BODY_BYTES`` or
    ``LOGIN_BODY_TIMEOUT_S``."""
    body = b""
    with trio.move_on_after(LOGIN_BODY_TIMEOUT_S):
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk: bytes = message.get("body", b"")
            body += chunk
            if len(body) > MAX_LOGIN_BODY_BYTES:
                return None
            if not message.get("more_body", False):
                return body
    return None


async def _cancel_when_set(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
