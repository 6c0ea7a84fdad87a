"""Targets without their API key: what the operator is told at start, and what a
request is told when no target for its model has a key.

A target whose key variable is unset starts ReauthRequired (a warning, not a config
error: demos and CI run without keys) and picks the key up once it is set. When every
target a request could go to is in that state, the switcher refuses the request at
its entry, naming the variables to set, instead of routing it to wait for a key that
will not appear in time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from oswitch.config import TargetConfig
from oswitch.core.clip import clip
from oswitch.runtime.target import TargetActor, TargetCondition, TargetState

log = logging.getLogger("oswitch.keys")

# How many variables (and targets per variable) a refusal names before it says how
# many more there are: the message stays short with a thousand keyless targets.
MAX_NAMED = 5


def missing_key_variable(target: TargetConfig, environ: Mapping[str, str]) -> str | None:
    """The variable ``target`` reads its key from, when it is unset or empty in
    ``environ``; None when the key is inline, present, or none is needed. Looks
    only at whether the variable is set, never at its value."""
    if target.api_key is None and target.api_key_env and not environ.get(target.api_key_env):
        return target.api_key_env
    return None


def warn_missing_key(target: TargetConfig, environ: Mapping[str, str]) -> None:
    """Log ``key_missing`` for an enabled ``target`` whose key variable is unset.

    The message itself names the target and the variable, so a program that
    configured no logging still sees what to set (Python prints a bare message);
    the ``event``, ``target_id`` and ``note`` fields carry them for log formatters.
    """
    variable = missing_key_variable(target, environ)
    if variable is None or not target.enabled:
        return
    log.warning(
        "key_missing: target %s has no API key: set %s",
        target.target_id,
        variable,
        extra={"event": "key_missing", "target_id": target.target_id, "note": variable},
    )


def keyless_candidates(
    actors: Iterable[TargetActor], now: float, environ: Mapping[str, str]
) -> list[tuple[str, str]] | None:
    """``(target_id, variable)`` for ``actors`` when none can take a request for lack
    of a key: every one not Disabled is ReauthRequired with its key variable unset.

    None as soon as one target could serve (or none is keyless), so the usual case
    looks at one target. A target listed twice is counted once.
    """
    missing: list[tuple[str, str]] = []
    seen: set[str] = set()
    for actor in actors:
        if actor.target_id in seen:
            continue
        seen.add(actor.target_id)
        if actor.state is TargetState.DISABLED:
            continue
        variable = missing_key_variable(actor.target, environ)
        if variable is None or actor.condition(now) is not TargetCondition.REAUTH_REQUIRED:
            return None
        missing.append((actor.target_id, variable))
    return missing or None


def _named(names: Sequence[str]) -> list[str]:
    if len(names) <= MAX_NAMED:
        return list(names)
    return [*names[:MAX_NAMED], f"+{len(names) - MAX_NAMED} more"]


def no_api_key_message(model: str, missing: Sequence[tuple[str, str]]) -> str:
    """``no target for 'm' has an API key: set OPENAI_API_KEY (openai-work), ...``:
    each variable once, with the targets that read it; at most :data:`MAX_NAMED` of
    each, then how many more. ``model`` is quoted clipped (it is the caller's)."""
    by_variable: dict[str, list[str]] = {}
    for target_id, variable in missing:
        by_variable.setdefault(variable, []).append(target_id)
    parts = [f"{variable} ({', '.join(_named(ids))})" for variable, ids in by_variable.items()]
    if len(parts) > MAX_NAMED:
        parts = [*parts[:MAX_NAMED], f"and {len(parts) - MAX_NAMED} more"]
    return f"no target for {clip(model)!r} has an API key: set {', '.join(parts)}"
