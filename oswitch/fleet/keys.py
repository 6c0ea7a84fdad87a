"""Where a fleet keeps its state in the store: one hash tag per target.

Every key of one target carries ``{t:<target_id>}``, so each script touches a single
slot (Redis Cluster routes by the tag). Target ids are the operator's (config), but
are escaped anyway so that no id can close the tag early.
"""

from __future__ import annotations

import attrs

# The store holds soft state only; every key expires this long after its last write
# (a cooldown or a quota deadline longer than this is not kept).
STATE_TTL_S = 7 * 24 * 3600


def _tag(target_id: str) -> str:
    return target_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


@attrs.frozen(kw_only=True)
class TargetKeys:
    """The keys of one target: request and token GCRA, and its shared state hash."""

    requests: str
    tokens: str
    state: str

    def all(self) -> list[str]:
        return [self.requests, self.tokens, self.state]


def target_keys(prefix: str, target_id: str) -> TargetKeys:
    base = f"{prefix}:{{t:{_tag(target_id)}}}"
    return TargetKeys(requests=f"{base}:rpm", tokens=f"{base}:tpm", state=f"{base}:st")


def events_channel(prefix: str) -> str:
    """The pub/sub channel every state change is published on."""
    return f"{prefix}:ev"
