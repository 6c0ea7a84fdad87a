"""The dashboard's guard: sessions, the login rate bound, cookies, the origin check.

Pure: no trio, no I/O; time is a float passed in. The control token is exchanged
once for a session id held only in an HttpOnly, SameSite=Strict cookie; the store
keeps a digest of each id (never the id), so nothing in memory or a log replays.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

COOKIE_NAME = "oswitch_dashboard"
SESSION_TTL_S = 12 * 3600.0
"""A session ends this long after its login (the operator logs in again)."""
MAX_SESSIONS = 64
"""Sessions kept at once; a login past it ends the oldest session."""
LOGIN_FAILURES_PER_MINUTE = 10
"""Wrong tokens accepted per minute (all clients together); more are refused with 429
until the minute has passed, so the token cannot be guessed at line rate."""

Headers = Iterable[tuple[bytes, bytes]]


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    """Live sessions by digest, each with its expiry, oldest first."""

    def __init__(
        self,
        *,
        ttl_s: float = SESSION_TTL_S,
        max_sessions: int = MAX_SESSIONS,
        new_id: Callable[[], str] = lambda: secrets.token_urlsafe(32),
    ) -> None:
        self._ttl_s = ttl_s
        self._max = max_sessions
        self._new_id = new_id
        self._expiry: OrderedDict[str, float] = OrderedDict()

    def open(self, now: float) -> str:
        """A new session's id (for the cookie), valid until ``now + ttl_s``; the
        oldest session ends when ``max_sessions`` are open."""
        self._expire(now)
        session_id = self._new_id()
        self._expiry[_digest(session_id)] = now + self._ttl_s
        while len(self._expiry) > self._max:
            self._expiry.popitem(last=False)
        return session_id

    def valid(self, session_id: str | None, now: float) -> bool:
        """Whether ``session_id`` names a session open at ``now``."""
        if not session_id:
            return False
        expiry = self._expiry.get(_digest(session_id))
        return expiry is not None and expiry > now

    def close(self, session_id: str | None) -> None:
        """End the session (logout); an unknown id is ignored."""
        if session_id:
            self._expiry.pop(_digest(session_id), None)

    def _expire(self, now: float) -> None:
        for digest in [d for d, expiry in self._expiry.items() if expiry <= now]:
            del self._expiry[digest]

    def __len__(self) -> int:
        return len(self._expiry)


class LoginGuard:
    """Counts wrong tokens over the last minute; past the bound, logins wait."""

    def __init__(self, *, per_minute: int = LOGIN_FAILURES_PER_MINUTE) -> None:
        self._per_minute = per_minute
        self._failures: deque[float] = deque()

    def retry_after(self, now: float) -> float | None:
        """Seconds until a login may be tried again, or None when one may be now."""
        while self._failures and self._failures[0] <= now - 60.0:
            self._failures.popleft()
        if len(self._failures) < self._per_minute:
            return None
        return self._failures[0] + 60.0 - now

    def failed(self, now: float) -> None:
        self._failures.append(now)


def header(headers: Headers, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case) as text, or None."""
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def cookie(headers: Headers, name: str = COOKIE_NAME) -> str | None:
    """The value of cookie ``name`` in the request's Cookie headers, or None."""
    for key, value in headers:
        if key.lower() != b"cookie":
            continue
        for pair in value.decode("latin-1").split(";"):
            key_text, _, found = pair.strip().partition("=")
            if key_text == name:
                return found
    return None


def session_cookie(session_id: str, *, secure: bool, max_age_s: float = SESSION_TTL_S) -> bytes:
    """The Set-Cookie value for a session: HttpOnly (scripts cannot read it),
    SameSite=Strict (no other site's page sends it), Secure behind https. No Path:
    it defaults to the login's directory, so the cookie also fits a dashboard
    mounted under a reverse proxy's prefix."""
    attributes = [f"{COOKIE_NAME}={session_id}", f"Max-Age={int(max_age_s)}"]
    attributes += ["HttpOnly", "SameSite=Strict"]
    if secure:
        attributes.append("Secure")
    return "; ".join(attributes).encode()


def cleared_cookie(*, secure: bool) -> bytes:
    """The Set-Cookie value that deletes the session cookie (logout)."""
    return session_cookie("", secure=secure, max_age_s=0)


def same_origin(headers: Headers) -> bool:
    """Whether a state-changing request comes from the dashboard's own page.

    The ``Origin`` header (browsers send it on every POST) must name the host the
    request was sent to: ``X-Forwarded-Host`` when a reverse proxy set it (a page
    on another site cannot add that header without a CORS preflight, which the
    dashboard never grants), else ``Host``. Without ``Origin``, only a
    ``Sec-Fetch-Site: same-origin`` request passes.
    """
    origin = header(headers, b"origin")
    if origin is None:
        return header(headers, b"sec-fetch-site") == "same-origin"
    if origin == "null":
        return False
    host = header(headers, b"x-forwarded-host") or header(headers, b"host")
    if not host:
        return False
    netloc = urlsplit(origin).netloc.lower()
    return bool(netloc) and netloc == host.split(",")[0].strip().lower()


def behind_https(headers: Headers, scheme: str) -> bool:
    """Whether the browser reached us over https (directly, or through a proxy that
    says so with ``X-Forwarded-Proto``): the cookie is then marked Secure."""
    forwarded = header(headers, b"x-forwarded-proto")
    return scheme == "https" or (forwarded or "").split(",")[0].strip().lower() == "https"
