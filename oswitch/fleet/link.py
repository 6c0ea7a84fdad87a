"""One switcher's link to its fleet's store: admission, shared transitions,
propagation and loud degradation.

- :meth:`FleetLink.admit` runs before every attempt: one atomic script on the
  store's clock (shared cooldown, breaker and probe lease, operator state, GCRA for
  requests and tokens). A denial holds the target locally until the exact
  retry-after, so routing moves on without asking again.
- :meth:`FleetLink.settled` runs after every attempt (synchronously, from the
  target): it queues the writes the attempt implies — token usage settled, a
  cooldown or quota deadline seen, a breaker opened, the fleet's probe closed,
  reopened or released, a key blocked — for the writer task.
- A subscriber applies every change other replicas publish within milliseconds;
  a resync every ``RESYNC_S`` is the backstop (pub/sub loses messages across
  reconnects) and, while the store is unreachable, its probe.
- The store breaker (``degrade.StoreBreaker``) trips after consecutive failures:
  then no request waits on the store, ``on_store_error`` decides the limits, an
  event, a metric and ``/healthz`` say so, and on recovery the link resyncs and
  re-publishes this replica's cooldowns and open breakers.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from oswitch.config import CircuitBreakerConfig, StoreConfig, SwitcherConfig, TargetConfig
from oswitch.core.policy import recovery_for
from oswitch.core.target_health import Cooldown, TargetCondition
from oswitch.core.tokens import TokenEstimate, estimate_request, read_usage
from oswitch.fleet.degrade import StoreBreaker, StoreHealth
from oswitch.fleet.gcra import GcraLimit, LocalGcra
from oswitch.fleet.keys import TargetKeys, events_channel, target_keys
from oswitch.fleet.member import FleetMember, Ticket
from oswitch.fleet.scripts import (
    ScriptArg,
    SharedState,
    admit_args,
    parse_admit,
    transition_args,
)
from oswitch.fleet.store import Store, StoreError
from oswitch.fleet.sync import OP_COMMANDS, RESYNC_S, FleetSync
from oswitch.runtime.events import EventHub
from oswitch.runtime.messages import AttemptOrder, AttemptOutcome, CommandKind, OutcomeKind

log = logging.getLogger("oswitch.fleet")

# Writes queued for the store beyond this are dropped and counted (the resync and
# the re-publish on recovery repair what they carried).
WRITE_QUEUE = 256


@attrs.frozen
class _Write:
    target_id: str
    script: str
    keys: list[str]
    args: list[ScriptArg]


@attrs.frozen(kw_only=True)
class FleetStatistics:
    """The link's counters, for ``/healthz``, metrics and listings."""

    replica_id: str
    mode: str  # on_store_error
    store: StoreHealth
    admitted: int
    denied: int
    degraded_decisions: int
    dropped_writes: int
    writes: int  # store writes done (transitions, token settlements)
    resyncs: int
    events_applied: int


def fleet_link(
    config: SwitcherConfig, events: EventHub, members: Callable[[], Mapping[str, FleetMember]]
) -> FleetLink | None:
    """The link for a switcher with ``config``: None without a ``store``."""
    if config.store is None:
        return None
    return FleetLink(config.store, events=events, members=members, breaker=config.circuit_breaker)


def new_replica_id() -> str:
    """Host, process and a random tag: unique per process, readable in listings."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(2)}"


def _limits(target: TargetConfig) -> tuple[GcraLimit | None, GcraLimit | None]:
    limit = target.rate_limit
    if limit is None:
        return None, None
    requests = None
    if limit.requests_per_minute is not None:
        requests = GcraLimit(rate=limit.requests_per_minute / 60.0, burst=float(limit.burst))
    tokens = None
    if limit.tokens_per_minute is not None:
        burst = limit.burst_tokens if limit.burst_tokens is not None else limit.tokens_per_minute
        tokens = GcraLimit(rate=limit.tokens_per_minute / 60.0, burst=burst)
    return requests, tokens


class FleetLink(FleetSync):
    """The fleet side of one switcher. Run :meth:`serve` in the switcher's nursery;
    targets call :meth:`admit` and :meth:`settled`; the switcher calls
    :meth:`operator` for an operator's command."""

    def __init__(
        self,
        config: StoreConfig,
        *,
        events: EventHub,
        members: Callable[[], Mapping[str, FleetMember]],
        breaker: CircuitBreakerConfig | None = None,
        replica_id: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.replica_id = replica_id or new_replica_id()
        self._events = events
        self._members = members
        self._environ = os.environ if environ is None else environ
        self._timeout_s = config.timeout_ms / 1000.0
        self._default_breaker = breaker or CircuitBreakerConfig()
        self._share = 1.0 / config.expected_replicas
        self._breaker = StoreBreaker()
        self._store: Store | None = None
        self._send_writes, self._writes = trio.open_memory_channel[_Write](WRITE_QUEUE)
        self._local: dict[str, tuple[LocalGcra | None, LocalGcra | None]] = {}
        self._seen: dict[str, SharedState] = {}
        self._fleet_blocked: set[str] = set()
        self._resync_now = trio.Event()
        self._subscription: trio.CancelScope | None = None
        self._admitted = self._denied = self._degraded_decisions = 0
        self._dropped = self._resyncs = self._applied = self._written = 0

    # ---- reading -----------------------------------------------------------------

    @property
    def degraded(self) -> bool:
        return self._breaker.degraded

    def statistics(self) -> FleetStatistics:
        return FleetStatistics(
            replica_id=self.replica_id,
            mode=self.config.on_store_error,
            store=self._breaker.statistics(),
            admitted=self._admitted,
            denied=self._denied,
            degraded_decisions=self._degraded_decisions,
            dropped_writes=self._dropped,
            writes=self._written,
            resyncs=self._resyncs,
            events_applied=self._applied,
        )

    def shared_state(self, target_id: str) -> SharedState | None:
        """The last shared state seen for ``target_id`` (listings)."""
        return self._seen.get(target_id)

    def view_of(self, member: FleetMember, now: float) -> dict[str, object]:
        """The fleet-wide state of ``member`` for listings: the shared breaker,
        operator state and block as last seen, the replica that made the last change
        and what it was, the hold's remaining seconds, and whether the store is
        unreachable now (then all of it may be stale)."""
        state = self._seen.get(member.target_id)
        hold = member.shared

        def left(until: float) -> float | None:
            return round(until - now, 3) if until > now else None

        return {
            "replica": self.replica_id,
            "store_degraded": self._breaker.degraded,
            "breaker": state.breaker if state else "closed",
            "generation": state.gen if state else 0,
            "op": state.op if state else "",
            "blocked": state.blocked if state else "",
            "set_by": state.by if state else "",
            "change": state.what if state else "",
            "cooldown_remaining_s": left(max(hold.cool_until, hold.quota_until)),
            "open_remaining_s": left(hold.open_until),
            "bucket_wait_s": left(hold.no_token_until),
        }

    def _half_open_after_s(self, target: TargetConfig) -> float:
        """The breaker's open interval, which is also the fleet's probe lease."""
        breaker = target.circuit_breaker or self._default_breaker
        return breaker.half_open_after_ms / 1000.0

    def _keys(self, target_id: str) -> TargetKeys:
        return target_keys(self.config.key_prefix, target_id)

    # ---- store health ------------------------------------------------------------

    def _failed(self, error: str) -> None:
        if self._breaker.record_error(trio.current_time(), error):
            log.warning("store_degraded", extra={"note": error})
            self._events.emit("store_degraded", note=error, state=self.config.on_store_error)
            if self._subscription is not None:
                self._subscription.cancel()  # resubscribe (and resync) once it is back

    def _ok(self) -> None:
        if self._breaker.record_ok():
            log.warning("store_recovered")
            self._events.emit("store_recovered", state=self.config.on_store_error)
            self._republish()
            if self._subscription is not None:
                self._subscription.cancel()

    # ---- admission ---------------------------------------------------------------

    async def admit_order(self, member: FleetMember, order: AttemptOrder) -> Ticket | None:
        """:meth:`admit` within the order's guard: None when the order was cancelled
        (or reached its deadline) meanwhile."""
        ticket = None
        with order.guard(order.deadline):
            ticket = await self.admit(member, order.request, estimate=order.estimate)
        return ticket

    async def admit(
        self,
        member: FleetMember,
        request: Mapping[str, Any],
        *,
        estimate: TokenEstimate | None = None,
    ) -> Ticket:
        """Admit one attempt of ``member``; blocks at most ``timeout_ms`` on the
        store (not at all while it is unreachable). ``estimate``: the request's token
        estimate the dispatcher already made (else it is made here). A denial holds
        the target until its retry-after. Never raises but for cancellation."""
        requests, tokens_limit = _limits(member.target)
        tokens = 0
        if tokens_limit is not None:
            tokens = (estimate or estimate_request(request)).total_tokens
        store = self._store
        if store is not None and not self._breaker.degraded:
            keys = self._keys(member.target_id)
            args = admit_args(
                requests=requests,
                tokens=tokens_limit,
                cost=tokens,
                replica=self.replica_id,
                lease_s=self._half_open_after_s(member.target),
                channel=events_channel(self.config.key_prefix),
                target_id=member.target_id,
            )
            try:
                reply = parse_admit(await store.script("admit", keys.all(), args))
            except (StoreError, ValueError) as exc:
                self._failed(str(exc))
                await trio.lowlevel.checkpoint()  # it may have failed before any wait
            else:
                self._ok()
                ticket = Ticket(
                    via="store",
                    allowed=reply.allowed,
                    wait_s=reply.wait_s,
                    why=reply.why,
                    probe=reply.probe,
                    gen=reply.gen,
                    tokens=tokens if reply.allowed else 0,
                )
                self._count(ticket)
                if not ticket.allowed:
                    self._hold(member, ticket)
                elif member.shared.open_until > trio.current_time():
                    member.adopt_shared(attrs.evolve(member.shared, open_until=-math.inf))
                return ticket
        else:
            await trio.lowlevel.checkpoint()
        ticket = self._admit_degraded(member, requests, tokens_limit, tokens)
        self._count(ticket)
        if not ticket.allowed:
            self._hold(member, ticket)
        return ticket

    def _count(self, ticket: Ticket) -> None:
        if ticket.allowed:
            self._admitted += 1
        else:
            self._denied += 1
        if ticket.via != "store":
            self._degraded_decisions += 1

    def _admit_degraded(
        self,
        member: FleetMember,
        requests: GcraLimit | None,
        tokens_limit: GcraLimit | None,
        tokens: int,
    ) -> Ticket:
        mode = self.config.on_store_error
        if mode == "open":
            return Ticket(via="open", allowed=True)
        if mode == "closed":
            return Ticket(via="closed", allowed=False, wait_s=RESYNC_S, why="store unreachable")
        local = self._local.get(member.target_id)
        wanted = requests.scaled(self._share) if requests else None
        if local is None or (local[0].limit if local[0] else None) != wanted:
            local = (
                LocalGcra(requests.scaled(self._share)) if requests else None,
                LocalGcra(tokens_limit.scaled(self._share)) if tokens_limit else None,
            )
            self._local[member.target_id] = local
        now = trio.current_time()
        wait = 0.0
        for limiter, cost in ((local[0], 1.0), (local[1], float(tokens))):
            if limiter is not None and cost > 0:
                wait = max(wait, limiter.check(now, cost).retry_after)
        if wait > 0:
            return Ticket(via="local", allowed=False, wait_s=wait, why="rate")
        for limiter, cost in ((local[0], 1.0), (local[1], float(tokens))):
            if limiter is not None and cost > 0:
                limiter.take(now, cost)
        return Ticket(via="local", allowed=True, tokens=tokens)

    def _hold(self, member: FleetMember, ticket: Ticket) -> None:
        """Keep routing off a denied target until the denial's retry-after."""
        now = trio.current_time()
        until = now + ticket.wait_s
        hold = member.shared
        why = ticket.why
        if why == "cool":
            hold = attrs.evolve(hold, cool_until=max(hold.cool_until, until))
        elif why == "quota":
            hold = attrs.evolve(hold, quota_until=max(hold.quota_until, until))
        elif why in ("open", "probe"):
            hold = attrs.evolve(hold, open_until=max(hold.open_until, until))
        elif math.isinf(ticket.wait_s):
            # An operator's state or a block this replica has not applied yet: out
            # until the resync (asked for now) brings it.
            hold = attrs.evolve(hold, no_token_until=now + RESYNC_S)
            self._resync_now.set()
        else:
            hold = attrs.evolve(hold, no_token_until=max(hold.no_token_until, until))
        member.adopt_shared(hold)

    # ---- after an attempt ----------------------------------------------------------

    def settled(
        self,
        member: FleetMember,
        ticket: Ticket | None,
        outcome: AttemptOutcome,
        *,
        before: tuple[Cooldown | None, float, float | None],
        blocked_before: TargetCondition | None,
    ) -> None:
        """Queue the store writes one settled attempt implies. Synchronous, never
        blocks, never raises. ``before``: the target's :meth:`local_marks` before
        the outcome was applied."""
        now = trio.current_time()
        target_id = member.target_id
        keys = self._keys(target_id)
        cool_before, quota_before, open_before = before
        cool_after, quota_after, open_after = member.local_marks()
        refused_by_provider = (
            outcome.kind is OutcomeKind.FAILED
            and outcome.classification is not None
            and outcome.classification.status is not None
        )
        if ticket is not None and ticket.tokens and ticket.allowed:
            delta = 0
            if outcome.kind is OutcomeKind.OK:
                # The exchange has read the usage already (a stream's from its last chunk).
                usage = outcome.usage if outcome.usage is not None else read_usage(outcome.reply)
                delta = 0 if usage is None else usage.counted_tokens - ticket.tokens
            elif refused_by_provider or outcome.kind is OutcomeKind.REFUSED:
                # Refused with a status (used nothing) or never sent: refunded whole, as
                # the replica's own budget refunds it (runtime/attempt_tokens.py).
                delta = -ticket.tokens
            _, tokens_limit = _limits(member.target)
            if delta and tokens_limit is not None:
                if ticket.via == "store":
                    args: list[ScriptArg] = [round(tokens_limit.interval * 1e6, 3), delta]
                    self._queue(_Write(target_id, "settle", [keys.tokens], args))
                elif ticket.via == "local":
                    local = self._local.get(target_id)
                    if local is not None and local[1] is not None:
                        local[1].adjust(now, float(delta))
        if cool_after is not None and (cool_before is None or cool_after.until > cool_before.until):
            self._transition(target_id, "cool", cool_after.until - now, str(cool_after.cause))
        if quota_after > quota_before and quota_after > now:
            self._transition(target_id, "quota", quota_after - now, "")
        opened = open_after is not None and (open_before is None or open_after > open_before)
        if opened and open_after is not None:
            self._transition(target_id, "open", max(0.0, open_after - now), "")
        if ticket is not None and ticket.probe and ticket.via == "store":
            failure = outcome.classification if outcome.kind is OutcomeKind.FAILED else None
            error_class = outcome.error_class if failure is not None else None
            if outcome.kind is OutcomeKind.OK:
                self._transition(target_id, "close", float(ticket.gen), "")
            elif (
                error_class is not None
                and not failure.local_fault  # type: ignore[union-attr]
                and recovery_for(error_class).breaker_failure
            ):
                if not opened:
                    half_open_after = self._half_open_after_s(member.target)
                    self._transition(target_id, "open", half_open_after, "")
            else:
                self._transition(target_id, "release", float(ticket.gen), "")
        blocked = member.blocked
        if blocked is not blocked_before and target_id not in self._fleet_blocked:
            self._transition(target_id, "block", 0.0, str(blocked) if blocked else "")

    def _transition(self, target_id: str, kind: str, number: float, text: str) -> None:
        args = transition_args(
            kind,
            replica=self.replica_id,
            number=number,
            text=text,
            channel=events_channel(self.config.key_prefix),
            target_id=target_id,
        )
        self._queue(_Write(target_id, "transition", [self._keys(target_id).state], args))

    def _queue(self, write: _Write) -> None:
        if self._breaker.degraded or self._store is None:
            return  # re-published from the targets' own state once the store is back
        try:
            self._send_writes.send_nowait(write)
        except trio.WouldBlock:
            self._dropped += 1

    def _republish(self) -> None:
        """After an outage: this replica's running cooldowns, quota deadlines and
        open breakers, re-sent (the store keeps the later of two)."""
        now = trio.current_time()
        for target_id, member in self._members().items():
            cooldown, quota_until, open_until = member.local_marks()
            if cooldown is not None and cooldown.until > now:
                self._transition(target_id, "cool", cooldown.until - now, str(cooldown.cause))
            if quota_until > now:
                self._transition(target_id, "quota", quota_until - now, "")
            if open_until is not None and open_until > now:
                self._transition(target_id, "open", open_until - now, "")

    # ---- operator commands -----------------------------------------------------------

    async def operator(self, target_id: str, kind: CommandKind) -> bool:
        """Make an operator's command on ``target_id`` fleet-wide: pause, drain and
        disable set the shared operator state, resume clears it with the shared
        cooldowns and breaker. Blocks at most ``timeout_ms``; False (and an event)
        when the store could not take it, so it applied to this replica only."""
        store = self._store
        if kind is CommandKind.RESUME:
            kind_text, text = "resume", ""
        else:
            kind_text = "op"
            text = {v: k for k, v in OP_COMMANDS.items()}[kind]
        args = transition_args(
            kind_text,
            replica=self.replica_id,
            number=0,
            text=text,
            channel=events_channel(self.config.key_prefix),
            target_id=target_id,
        )
        if store is not None and not self._breaker.degraded:
            try:
                await store.script("transition", [self._keys(target_id).state], args)
            except StoreError as exc:
                self._failed(str(exc))
                await trio.lowlevel.checkpoint()  # it may have failed before any wait
            else:
                self._ok()
                return True
        else:
            await trio.lowlevel.checkpoint()
        self._events.emit("fleet_command_local_only", target_id=target_id, note=str(kind))
        return False
