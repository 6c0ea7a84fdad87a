"""oswitch: routing and execution resilience for LLM API calls, on trio."""

from oswitch.config import SwitcherConfig, TargetConfig
from oswitch.core.error_class import ErrorClass
from oswitch.core.secret import Secret
from oswitch.errors import (
    AllTargetsFailed,
    ConfigError,
    Overloaded,
    RequestFailed,
    SwitcherError,
    UnknownRequest,
    UnknownTarget,
)

__all__ = [
    "AllTargetsFailed",
    "ConfigError",
    "ErrorClass",
    "Overloaded",
    "RequestFailed",
    "Secret",
    "SwitcherConfig",
    "SwitcherError",
    "TargetConfig",
    "UnknownRequest",
    "UnknownTarget",
]
