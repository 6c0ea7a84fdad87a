"""One target's API key: where it comes from, its value now, and re-reading it.

A key is inline in the config or read from an environment variable. The variable is
read when the target starts, after an AuthFailure (once: "the credential refresh"),
while the target waits ReauthRequired, on an operator's resume and on a reload that
changed the key. Every value read joins the switcher's set of secrets, which are
scrubbed from whatever travels.
"""

from __future__ import annotations

import os

from oswitch.config import TargetConfig
from oswitch.core.secret import Secret


class TargetKey:
    """The key of one target; its actor is the only writer."""

    def __init__(self, target: TargetConfig, secrets: set[Secret]) -> None:
        self.target = target
        self._secrets = secrets
        self.value: str | None = None
        # A missing key is logged once, by name, by the switcher (runtime/keys.py);
        # the target starts ReauthRequired.
        self.use(self.read())

    @property
    def source(self) -> str:
        """Where the key comes from, for listings: never the key itself."""
        if self.target.api_key is not None:
            return "inline"
        if self.target.api_key_env:
            present = bool(os.environ.get(self.target.api_key_env))
            return f"env {self.target.api_key_env} ({'set' if present else 'missing'})"
        return "none"

    @property
    def missing(self) -> bool:
        """The key's variable held no key when last read."""
        return self.value is None and bool(self.target.api_key_env)

    def read(self) -> str | None:
        """The key as configured now: inline, or its variable's value (None if unset)."""
        if self.target.api_key is not None:
            return self.target.api_key.reveal()
        if self.target.api_key_env:
            return os.environ.get(self.target.api_key_env) or None
        return None

    def use(self, key: str | None) -> None:
        """Send ``key`` from now on (and scrub it wherever it could travel)."""
        self.value = key
        if key is not None:
            self._secrets.add(Secret(key))  # a set: the same key re-read adds nothing

    def refresh(self) -> bool:
        """Re-read the key's variable once; True (and the key taken) if it holds a new key."""
        if self.target.api_key is not None or not self.target.api_key_env:
            return False
        fresh = self.read()
        if fresh is None or fresh == self.value:
            return False
        self.use(fresh)
        return True
