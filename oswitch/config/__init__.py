"""The configuration model (attrs), and loading it from TOML, JSON or opencode.json.

Import everything from here; the modules below are the layout, not the API:

- ``model``: the attrs classes, the single schema (every key, with its default).
- ``problems``: the leaf the others share: a problem (``Invalid``), paths into the
  document and their rendering, how a value is shown in a message, the table that
  carries the problems found preparing it (``PreparedTable``) and the collector of
  one parse (``Problems``).
- ``structure``: the one cattrs converter (``forbid_extra_keys``) with its structure
  hooks, per-field range rules and whole-table checks, and the walker turning its
  ExceptionGroup into problems.
- ``opencode``: reading an opencode.json ``provider`` section and resolving a
  target's missing api, base_url, key and models from it (then from
  ``oswitch.known_providers``).
- ``load``: ``parse_config``, ``load_config``, ``validate_config`` and
  ``describe_target(s)``, the entry points over the ones above.

Imports run one way, model → problems → structure → opencode → load. A target's
resolution problems travel with its table (a ``PreparedTable``) to its structure
hook, which reports them after the target's own, so a file's problems keep
document order; no state is shared between parses.
"""

from __future__ import annotations

from oswitch.config.load import (
    describe_target,
    describe_targets,
    load_config,
    parse_config,
    validate_config,
)
from oswitch.config.model import (
    AuditConfig,
    BackoffConfig,
    CircuitBreakerConfig,
    ControlConfig,
    OtelConfig,
    RateLimitConfig,
    RoutingWeights,
    ServerConfig,
    StoreConfig,
    SwitcherConfig,
    TargetConfig,
)

__all__ = [
    "AuditConfig",
    "BackoffConfig",
    "CircuitBreakerConfig",
    "ControlConfig",
    "OtelConfig",
    "RateLimitConfig",
    "RoutingWeights",
    "ServerConfig",
    "StoreConfig",
    "SwitcherConfig",
    "TargetConfig",
    "describe_target",
    "describe_targets",
    "load_config",
    "parse_config",
    "validate_config",
]
