"""Propagation: the fleet link's subscriber, resync and writer tasks, and how a
target's shared state, as the store holds it, becomes that target's hold here.

A mixin of :class:`~oswitch.fleet.link.FleetLink` (the attributes below are the
link's). Store times are converted to this replica's trio clock by their distance
from the store's own ``now`` in the same reply or message, so no replica's wall
clock is ever read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import trio

from oswitch.config import StoreConfig
from oswitch.core.error_class import ErrorClass
from oswitch.core.shared_hold import SharedHold
from oswitch.core.target_health import TargetCondition, TargetState
from oswitch.fleet.degrade import StoreBreaker
from oswitch.fleet.keys import TargetKeys, events_channel
from oswitch.fleet.member import FleetMember
from oswitch.fleet.scripts import SharedState, parse_state
from oswitch.fleet.store import Store, StoreError, open_store
from oswitch.runtime.events import EventHub
from oswitch.runtime.messages import CommandKind

# How often every target's shared state is read back (the pub/sub backstop) and, while
# the store is unreachable, how often it is probed (fixed constant, seconds).
RESYNC_S = 1.0

OP_COMMANDS: Mapping[str, CommandKind] = {
    "Paused": CommandKind.PAUSE,
    "Draining": CommandKind.DRAIN,
    "Disabled": CommandKind.DISABLE,
}
_BLOCKS = {str(TargetCondition.REAUTH_REQUIRED), str(TargetCondition.POLICY_BLOCKED)}


def _cause(reason: str) -> ErrorClass:
    try:
        return ErrorClass(reason)
    except ValueError:
        return ErrorClass.RATE_LIMITED


def _client_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("coredis") is not None


def hold_from_state(
    state: SharedState, *, store_now_us: int, now: float, no_token_until: float
) -> SharedHold:
    """The hold ``state`` puts on its target at trio time ``now``, the store's clock
    reading ``store_now_us`` at that moment. A half-open breaker holds every replica
    until its probe lease ends (the lease's holder too: its probe is in flight)."""

    def local(at_us: int) -> float:
        return -math.inf if at_us <= store_now_us else now + (at_us - store_now_us) / 1e6

    open_until = -math.inf
    if state.breaker == "open":
        open_until = local(state.open_until_us)
    elif state.breaker == "half_open":
        open_until = local(state.probe_until_us)
    return SharedHold(
        cool_until=local(state.cool_until_us),
        cool_cause=_cause(state.cool_reason),
        quota_until=local(state.quota_until_us),
        open_until=open_until,
        no_token_until=no_token_until,
    )


class FleetSync:
    config: StoreConfig
    replica_id: str
    _events: EventHub
    _members: Callable[[], Mapping[str, FleetMember]]
    _environ: Mapping[str, str]
    _timeout_s: float
    _breaker: StoreBreaker
    _store: Store | None
    _writes: trio.MemoryReceiveChannel[Any]
    _seen: dict[str, SharedState]
    _fleet_blocked: set[str]
    _resync_now: trio.Event
    _subscription: trio.CancelScope | None
    _resyncs: int
    _applied: int
    _written: int

    def _failed(self, error: str) -> None:
        raise NotImplementedError

    def _ok(self) -> None:
        raise NotImplementedError

    def _keys(self, target_id: str) -> TargetKeys:
        raise NotImplementedError

    # ---- applying what the store says ------------------------------------------------

    async def _apply(self, target_id: str, state: SharedState, store_now_us: int) -> None:
        member = self._members().get(target_id)
        if member is None:
            await trio.lowlevel.checkpoint()
            return
        self._applied += 1
        member.adopt_shared(
            hold_from_state(
                state,
                store_now_us=store_now_us,
                now=trio.current_time(),
                no_token_until=member.shared.no_token_until,
            )
        )
        previous = self._seen.get(target_id)
        self._seen[target_id] = state
        fresh = previous is None or state.ver > previous.ver
        mine = state.by == self.replica_id
        if state.blocked in _BLOCKS and member.blocked is None and not mine:
            self._fleet_blocked.add(target_id)
            member.block_from_fleet(TargetCondition(state.blocked), reason=f"fleet: {state.by}")
        elif not state.blocked and target_id in self._fleet_blocked:
            self._fleet_blocked.discard(target_id)
            if member.blocked is not None:
                member.block_from_fleet(None, reason=f"fleet: {state.by}")
        if mine:
            await trio.lowlevel.checkpoint()
            return
        if fresh and state.what == "close" and previous is not None:
            member.close_from_fleet(reason=f"fleet: probe by {state.by} succeeded")
        command = OP_COMMANDS.get(state.op)
        if command is not None and member.state is TargetState.ACTIVE:
            await member.command(command)
        elif fresh and state.what == "resume" and previous is not None:
            await member.command(CommandKind.RESUME)
        else:
            await trio.lowlevel.checkpoint()

    async def _resync(self, store: Store) -> None:
        """Read every target's shared state back and apply it. Raises StoreError."""
        for target_id in list(self._members()):
            reply = await store.script("read", [self._keys(target_id).state], [])
            if not isinstance(reply, list | tuple) or len(reply) != 2:
                raise StoreError("unexpected read reply")
            store_now = int(float(reply[0]))
            await self._apply(target_id, parse_state(reply[1]), store_now)
        self._resyncs += 1
        await trio.lowlevel.checkpoint()

    # ---- the tasks -------------------------------------------------------------------

    def _url(self) -> str | None:
        if self.config.url is not None:
            return self.config.url.reveal()
        assert self.config.url_env is not None
        return self._environ.get(self.config.url_env) or None

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the link until cancelled: the writer, the subscriber and the resync.
        Reports readiness at once (the store is never waited for at start)."""
        url = self._url()
        problem = None if url is not None else f"${self.config.url_env} is not set"
        if not _client_installed():
            problem = "coredis is not installed (pip install 'oswitch[fleet]')"
        if problem is not None or url is None:
            # Degraded for good, and said so: on_store_error applies from the start.
            self._breaker.trip(trio.current_time(), problem or "no store")
            self._events.emit("store_degraded", note=problem, state=self.config.on_store_error)
            task_status.started()
            await trio.sleep_forever()
            return
        opened = open_store(url, timeout_s=self._timeout_s)
        async with opened as store, trio.open_nursery() as nursery:
            self._store = store
            nursery.start_soon(self._write_loop, store)
            nursery.start_soon(self._subscribe_loop, store)
            nursery.start_soon(self._resync_loop, store)
            task_status.started()

    async def _write_loop(self, store: Store) -> None:
        async with self._writes:
            async for write in self._writes:
                if self._breaker.degraded:
                    await trio.lowlevel.checkpoint()
                    continue
                try:
                    await store.script(write.script, write.keys, write.args)
                except StoreError as exc:
                    self._failed(str(exc))
                else:
                    self._written += 1
                    self._ok()

    async def _subscribe_loop(self, store: Store) -> None:
        channel = events_channel(self.config.key_prefix)
        while True:
            with trio.CancelScope() as scope:
                self._subscription = scope
                try:
                    async with store.subscribe(channel) as messages:
                        await self._resync(store)  # subscribed first: nothing falls between
                        self._ok()
                        async for message in messages:
                            await self._on_message(message)
                except StoreError as exc:
                    self._failed(str(exc))
            self._subscription = None
            await trio.sleep(RESYNC_S)

    async def _on_message(self, message: Mapping[str, Any]) -> None:
        target_id, state, now = message.get("t"), message.get("s"), message.get("now")
        if not isinstance(target_id, str) or not isinstance(state, Mapping):
            await trio.lowlevel.checkpoint()
            return
        try:
            store_now = int(float(str(now)))
        except ValueError:
            await trio.lowlevel.checkpoint()
            return
        await self._apply(target_id, parse_state(state), store_now)

    async def _resync_loop(self, store: Store) -> None:
        while True:
            with trio.move_on_after(RESYNC_S):
                await self._resync_now.wait()
            self._resync_now = trio.Event()
            try:
                await self._resync(store)
            except StoreError as exc:
                self._failed(str(exc))
            else:
                self._ok()
