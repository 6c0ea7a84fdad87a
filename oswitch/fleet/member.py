"""What the fleet link needs of a target, and what it answers for one attempt."""

from __future__ import annotations

from typing import Protocol

import attrs

from oswitch.config import TargetConfig
from oswitch.core.shared_hold import SharedHold
from oswitch.core.target_health import Cooldown, TargetCondition, TargetState
from oswitch.runtime.messages import CommandKind


class FleetMember(Protocol):
    """What the link needs of a target actor (``runtime.target.TargetActor``)."""

    target_id: str
    target: TargetConfig

    @property
    def state(self) -> TargetState: ...

    @property
    def shared(self) -> SharedHold: ...

    def adopt_shared(self, hold: SharedHold) -> None: ...

    def local_marks(self) -> tuple[Cooldown | None, float, float | None]: ...

    @property
    def blocked(self) -> TargetCondition | None: ...

    def block_from_fleet(self, condition: TargetCondition | None, *, reason: str) -> None: ...

    def close_from_fleet(self, *, reason: str) -> None: ...

    async def command(self, kind: CommandKind, payload: object = None) -> None: ...


@attrs.frozen(kw_only=True)
class Ticket:
    """One attempt's admission. ``via``: ``store`` (decided by the store), ``local``
    (this replica's share, store unreachable), ``open`` / ``closed`` (the policy
    while unreachable). ``probe``: the fleet's half-open probe, under breaker
    generation ``gen``. ``tokens``: the estimate reserved."""

    via: str
    allowed: bool
    wait_s: float = 0.0
    why: str = ""
    probe: bool = False
    gen: int = 0
    tokens: int = 0
