"""The target actor's face toward its fleet's link (``oswitch.fleet.link.FleetMember``):
the admission it asks the store for, the shared hold it adopts, the marks of its own it
shares, the blocks other replicas found. A mixin of
:class:`~oswitch.runtime.target.TargetActor`; all synchronous but the admission."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, cast

import trio

from oswitch.core.breaker import BreakerState
from oswitch.core.shared_hold import SharedHold
from oswitch.core.target_health import Cooldown, Effect, Emit, TargetCondition, TargetHealth
from oswitch.runtime.messages import AttemptOrder, AttemptOutcome, OutcomeKind

if TYPE_CHECKING:
    from oswitch.fleet.link import FleetLink
    from oswitch.fleet.member import FleetMember, Ticket
    from oswitch.runtime.exchange import TargetExchange


class FleetFace:
    _health: TargetHealth
    _notify: Callable[[], None]
    _tickets: dict[AttemptOrder, Ticket]
    _exchange: TargetExchange

    async def _fleet_admit(
        self, fleet: FleetLink, order: AttemptOrder, served: str, started: float
    ) -> AttemptOutcome | None:
        """Ask the fleet's store for this attempt (blocks at most the store's timeout,
        within the order's guard): a refusal outcome, or None to go on."""
        ticket = await fleet.admit_order(cast("FleetMember", self), order)
        if ticket is not None:
            self._tickets[order] = ticket
            if ticket.allowed:
                return None
        note = "admission cancelled" if ticket is None else f"fleet: {ticket.why}"
        return self._exchange.outcome(OutcomeKind.REFUSED, served, started, note=note)

    def _block(self, condition: TargetCondition | None, *, reason: str) -> None:
        raise NotImplementedError

    def _carry_out(self, effects: Iterable[Effect]) -> None:
        raise NotImplementedError

    @property
    def shared(self) -> SharedHold:
        return self._health.shared

    def adopt_shared(self, hold: SharedHold) -> None:
        """Take what the fleet's store says keeps this target out (see SharedHold)."""
        if hold != self._health.shared:
            self._health.shared = hold
            self._notify()

    def local_marks(self) -> tuple[Cooldown | None, float, float | None]:
        """This replica's own cooldown, quota deadline and (breaker Open) half-open time."""
        cooldown, quota_until = self._health.local_marks()
        breaker = self._health.breaker
        is_open = breaker.state(trio.current_time()) is BreakerState.OPEN
        return cooldown, quota_until, breaker.half_open_at if is_open else None

    @property
    def blocked(self) -> TargetCondition | None:
        return self._health.blocked

    def block_from_fleet(self, condition: TargetCondition | None, *, reason: str) -> None:
        """Another replica found the key bad (or a good one again)."""
        self._block(condition, reason=reason)

    def close_from_fleet(self, *, reason: str) -> None:
        """Another replica's probe succeeded: a breaker open here on this replica's own
        failures closes too (its statistics start afresh)."""
        breaker = self._health.breaker
        if breaker.state(trio.current_time()) is BreakerState.CLOSED:
            return
        breaker.reset(trio.current_time())
        self._carry_out([Emit("breaker", {"state": str(BreakerState.CLOSED), "note": reason})])
        self._notify()
