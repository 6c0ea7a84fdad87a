"""oswitch: routing and execution resilience for LLM API calls, on trio.

Embed it with ``open_switcher(load_config(path))``; see docs/embedding.md.
"""

from importlib.metadata import PackageNotFoundError, version

from oswitch.config import SwitcherConfig, TargetConfig, load_config, parse_config
from oswitch.control.server import serve_control
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
from oswitch.runtime.switcher import Switcher, SwitcherStatistics, open_switcher
from oswitch.runtime.target import TargetView

try:
    __version__ = version("oswitch")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

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
