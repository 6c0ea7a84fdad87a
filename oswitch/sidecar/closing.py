"""What the connections of one HTTP server share: whether it is shutting down, and
which of them wait idle for their next request (those close at once at shutdown)."""

from __future__ import annotations

import trio


class ConnectionClosing:
    """What the connections of one server share: whether it is shutting down."""

    def __init__(self) -> None:
        self.closing = False
        self._idle: dict[object, trio.CancelScope] = {}

    def enter_idle(self, connection: object, scope: trio.CancelScope) -> None:
        """``connection`` waits for a request under ``scope`` (cancelled on shutdown)."""
        self._idle[connection] = scope

    def leave_idle(self, connection: object) -> None:
        del self._idle[connection]

    def close_idle(self) -> None:
        """Stop serving: connections waiting for a request close now, the others once
        their response is sent."""
        self.closing = True
        for scope in self._idle.values():
            scope.cancel()
