"""oswitch: routing and execution resilience for LLM API calls, on trio.

Embed it with ``open_switcher(load_config(path))``; see docs/embedding.md.

``import oswitch`` loads the engine only. ``serve_control`` (the websocket control
channel: trio-websocket and wsproto) is imported on first use, so embedders who never
open it do not pay for it; the sidecar (its HTTP server) is never imported from here.
``__version__`` is read from the installed metadata on first use too (importlib.metadata
alone costs ~20-100 ms to import).
"""

from typing import TYPE_CHECKING, Any

from oswitch.config import SwitcherConfig, TargetConfig, load_config, parse_config
from oswitch.core.classify import Classification, classify
from oswitch.core.error_class import ErrorClass
from oswitch.core.secret import Secret
from oswitch.core.trace import AttemptRecord, RequestTrace
from oswitch.errors import (
    AllTargetsFailed,
    ConfigError,
    Overloaded,
    RequestFailed,
    SwitcherError,
    UnknownRequest,
    UnknownTarget,
)
from oswitch.runtime.statistics import SwitcherStatistics
from oswitch.runtime.switcher import Switcher, open_switcher
from oswitch.runtime.target import TargetView

if TYPE_CHECKING:
    from oswitch.control.server import serve_control

# Public names whose modules load on first use: name -> module.
_LAZY = {"serve_control": "oswitch.control.server"}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("oswitch")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    """Import a lazily loaded public name (``serve_control``) or read ``__version__``
    on first access.

    Raises AttributeError for any other unknown name, as a module would.
    """
    if name == "__version__":
        globals()[name] = value = _version()
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "__version__"})


__all__ = [
    "AllTargetsFailed",
    "AttemptRecord",
    "Classification",
    "ConfigError",
    "ErrorClass",
    "Overloaded",
    "RequestFailed",
    "RequestTrace",
    "Secret",
    "Switcher",
    "SwitcherConfig",
    "SwitcherError",
    "SwitcherStatistics",
    "TargetConfig",
    "TargetView",
    "UnknownRequest",
    "UnknownTarget",
    "__version__",
    "classify",
    "load_config",
    "open_switcher",
    "parse_config",
    "serve_control",
]
