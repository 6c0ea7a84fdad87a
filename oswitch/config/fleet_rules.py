"""The field rules and whole-table checks of the fleet's keys (``store``, and the
token budget of ``rate_limit``), used by ``structure.py``'s converter."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from oswitch.config.problems import Invalid
from oswitch.core.secret import Secret


def store_url(v: Secret) -> str | None:
    """Why ``v`` is not a store URL; only the scheme is checked and named, since the
    rest may hold a password."""
    ok = re.match(r"(rediss?|unix)://.", v.reveal()) is not None
    return None if ok else "must be a redis://, rediss:// or unix:// URL"


def key_prefix(v: str) -> str | None:
    """Braces would break the per-target hash tag every key carries."""
    if not v or any(c in v for c in "{} \t\r\n"):
        return "must be non-empty, without braces or whitespace"
    return None


def check_store(raw: Mapping[str, Any]) -> Iterator[Invalid]:
    given = [key for key in ("url", "url_env") if raw.get(key) is not None]
    if len(given) != 1:
        yield Invalid("give exactly one of url, url_env", ())
