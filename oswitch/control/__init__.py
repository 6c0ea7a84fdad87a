"""The operator control channel: a token-guarded websocket serving the seven
operator commands and a live event feed (docs/control-protocol.md).

``serve_control`` runs the server beside a switcher; ``open_control`` is the
client ``oswitch ctl`` uses. ``oswitch.control.protocol`` is the pure wire format.
"""

from oswitch.control.client import (
    CommandRefused,
    ControlClient,
    ControlConnectionError,
    ControlError,
    open_control,
)
from oswitch.control.server import ControlServer, ControlStatistics, control_token, serve_control

__all__ = [
    "CommandRefused",
    "ControlClient",
    "ControlConnectionError",
    "ControlError",
    "ControlServer",
    "ControlStatistics",
    "control_token",
    "open_control",
    "serve_control",
]
