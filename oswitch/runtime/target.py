"""The target actor: one trio task per target, the only writer of that target's state.

A target is one (provider, endpoint, key, model) combination. Its actor owns the
target's :class:`~oswitch.core.target_health.TargetHealth` (breaker, token bucket,
cooldowns, health averages, lifecycle state: the pure rules), its key, its
transport and its attempts. The dispatcher reads the actor (``ready_at``,
``candidate``, ``view``) and talks to it through its inbox: attempt orders and
operator commands. Attempts run in the actor's own nursery, each in a cancel scope
the actor owns, so failover anywhere is just ``order.cancel(reason)``; the upstream
exchange itself is :class:`~oswitch.runtime.exchange.TargetExchange`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable

import attrs
import httpx
import trio

from oswitch.config import SwitcherConfig, TargetConfig
from oswitch.core.deadline_learning import DeadlinePolicies
from oswitch.core.secret import Secret
from oswitch.core.target_health import (
    Do,
    Effect,
    Emit,
    TargetCondition,
    TargetHealth,
    TargetState,
)
from oswitch.fleet.link import FleetLink
from oswitch.fleet.member import Ticket
from oswitch.runtime.attempt_tokens import TargetTokens
from oswitch.runtime.credentials import TargetKey
from oswitch.runtime.deadlines import StreamDeadlines
from oswitch.runtime.events import EventHub
from oswitch.runtime.exchange import Answer, TargetExchange
from oswitch.runtime.fleet_face import FleetFace
from oswitch.runtime.http import TargetTransport
from oswitch.runtime.inbox import Inbox
from oswitch.runtime.messages import (
    AttemptOrder,
    AttemptOutcome,
    CancelReason,
    Command,
    CommandKind,
    Grants,
    OutcomeKind,
)
from oswitch.runtime.settings import DEFAULT_POLICIES, target_settings
from oswitch.runtime.target_readings import TargetReadings
from oswitch.runtime.timings import TargetTimings
from oswitch.runtime.upstream import UpstreamStream
from oswitch.runtime.view import TargetView, target_view

__all__ = ["TargetActor", "TargetCondition", "TargetState", "TargetView"]


# How often a target waiting for a new key re-reads its key's environment variable.
CREDENTIAL_POLL_S = 5.0
# The inbox is small on purpose: the dispatcher never queues work on a busy target.
INBOX_SIZE = 16
# How many queued messages one turn of the actor applies (see TargetActor._take_turn).
TURN_MESSAGES = 2


class TargetActor(TargetReadings, FleetFace):
    """The actor for one target. Created by the switcher; run with ``nursery.start``.

    Only the actor's own tasks change its state. Other tasks may call the read-only
    methods (:class:`~oswitch.runtime.target_readings.TargetReadings`: ``eligibility``
    and what derives from it, ``candidate``, ``serves``; and ``view``) and ``send``.
    """

    def __init__(
        self,
        target: TargetConfig,
        config: SwitcherConfig,
        *,
        transport: httpx.AsyncBaseTransport | None,
        secrets: set[Secret],
        events: EventHub | None = None,
        notify: Callable[[], None] | None = None,
        rng: random.Random | None = None,
        policies: DeadlinePolicies | None = None,
        wall_clock: Callable[[], float] = time.time,
        fleet: FleetLink | None = None,
    ) -> None:
        self.target = target
        self.config = config
        self.target_id = target.target_id
        self._grants = Grants(target.target_id)
        self._events = events or EventHub()
        self._notify = notify or (lambda: None)
        self._rng = rng or random.Random()
        self._policies = policies or DEFAULT_POLICIES
        settings = target_settings(config, target, self._policies)
        # The learned deadlines per model (the dispatcher reads them; attempts feed them).
        self.timings = TargetTimings(settings)
        self._key = TargetKey(target, secrets)
        self._exchange = TargetExchange(
            target=target,
            settings=settings,
            transport=transport,
            key=self._key,
            secrets=secrets,
            timings=self.timings,
        )
        # Reserve-before, settle-after of every attempt's tokens; limits learned.
        self._tokens = TargetTokens(target, settings, wall_clock=wall_clock)
        if settings.learn_limits:
            self._exchange.on_headers = self._tokens.learn
        self._health = TargetHealth(
            settings.health,
            now=trio.current_time(),
            state=TargetState.ACTIVE if target.enabled else TargetState.DISABLED,
            blocked=TargetCondition.REAUTH_REQUIRED if self._key.missing else None,
        )
        # The attempts holding one of the target's slots (running, or a stream granted).
        self._running: set[AttemptOrder] = set()
        # The streamed ones among them whose headers are in, with their open streams.
        self._streams: dict[AttemptOrder, UpstreamStream] = {}
        self._idle = trio.lowlevel.ParkingLot()
        self._inbox = Inbox(INBOX_SIZE)
        self._nursery: trio.Nursery | None = None
        self._stream_deadlines = StreamDeadlines()
        # A fleet's shared store: admission before each attempt, transitions after.
        self._fleet = fleet
        self._tickets: dict[AttemptOrder, Ticket] = {}
        # The actor's inbox loop has ended (retired, or its switcher closed): its nursery
        # is closing and it takes no new work.
        self.stopped = False

    async def _watch_credentials(self) -> None:
        """While ReauthRequired, re-read the key's variable until a new key shows up."""
        await trio.lowlevel.checkpoint()  # unblocked before it started: nothing to watch
        while self._health.blocked is TargetCondition.REAUTH_REQUIRED:
            await trio.sleep(CREDENTIAL_POLL_S)
            if self._health.blocked is TargetCondition.REAUTH_REQUIRED and self._key.refresh():
                self._block(None, reason="credential refreshed")

    # ---- carrying out what the health rules decided ------------------------------

    def _carry_out(self, effects: Iterable[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Emit):
                self._events.emit(effect.event, target_id=self.target_id, **effect.fields)
            elif effect is Do.WATCH_CREDENTIAL:
                # Before the actor runs, run() starts it; once the actor has stopped (an
                # attempt settled afterwards by its caller's task) there is nothing to
                # watch for, and its nursery takes no new task.
                if self._nursery is not None and not self.stopped:
                    self._nursery.start_soon(self._watch_credentials)
            elif effect is Do.NOTIFY:
                self._notify()

    def _block(self, condition: TargetCondition | None, *, reason: str) -> None:
        self._carry_out(self._health.block(condition, reason=reason, now=trio.current_time()))

    def _set_state(self, state: TargetState, *, reason: str) -> None:
        self._carry_out(self._health.set_state(state, reason=reason))

    # ---- read side (any task): the rest is TargetReadings' -----------------------

    def view(self, now: float) -> TargetView:
        """The target's listing (``list-targets``, metrics). Here, not in TargetReadings,
        because the fleet's part of it reads the actor as a fleet member."""
        return target_view(
            self.target,
            self.config,
            self._health,
            now,
            in_flight=self.in_flight,
            key_source=self._key.source,
            deadlines=self.timings.deadlines(),
            budget=self._tokens.snapshot(now),
            fleet=None if self._fleet is None else self._fleet.view_of(self, now),
        )

    # ---- talking to the actor ----------------------------------------------------

    async def command(self, kind: CommandKind, payload: object = None) -> None:
        """Send an operator command and return once the actor has applied it."""
        command = Command(kind=kind, payload=payload)
        if await self.send(command):
            await command.done.wait()

    async def send(self, message: AttemptOrder | Command) -> bool:
        """Put ``message`` in the inbox (blocks only while it is full; see
        :meth:`Inbox.put`); False if the actor has stopped taking any."""
        return await self._inbox.put(message)

    # ---- the actor ---------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The actor's life: serve the inbox until retired or cancelled.

        Its nursery holds the stream deadline watcher, the credential watcher and the
        drains of finished streams; attempts run in the tasks that asked for them. On
        exit every attempt still running is cancelled and the target's client is closed.
        """
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._exchange.background = nursery
                if self._health.blocked is TargetCondition.REAUTH_REQUIRED:
                    nursery.start_soon(self._watch_credentials)
                task_status.started()
                try:
                    while (first := await self._inbox.take()) is not None:
                        if await self._take_turn(first):
                            break
                        del first  # keep no request alive while the inbox is empty
                    # Retired: nothing new gets in, and whatever was queued is answered.
                    self._inbox.close()
                    self._refuse_queued()
                finally:
                    self._inbox.close_taking()  # a sender from now on is refused
                    # From here the nursery may close at any checkpoint; an attempt its
                    # caller settles meanwhile must start nothing in it.
                    self.stopped = True
                nursery.cancel_scope.cancel()
        finally:
            self.stopped = True  # however the actor ended
            for order in list(self._running):
                order.cancel(CancelReason.OPERATOR)
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._exchange.client.aclose()

    async def _take_turn(self, first: AttemptOrder | Command) -> bool:
        """Apply ``first`` and up to ``TURN_MESSAGES - 1`` more queued behind it, in
        order; True when a command retired the actor. One per receive (a schedule point)
        made the actor pace the requests one per scheduling round; many per turn moves
        them in bursts that trip the cyclic collector (docs/bench.md measures both)."""
        message = first
        taken = 1
        while True:
            if isinstance(message, Command):
                if await self._apply_command(message):
                    return True
            else:
                self._start_attempt(message)
            if taken == TURN_MESSAGES:
                return False  # noqa: ASYNC910 (the receive that brought `first` checkpointed)
            next_message = self._inbox.take_nowait()
            if next_message is None:
                return False  # noqa: ASYNC910 (the receive that brought `first` checkpointed)
            message = next_message
            taken += 1

    def _refuse_queued(self) -> None:
        while (message := self._inbox.take_nowait()) is not None:
            if isinstance(message, Command):
                message.done.set(None)
            else:
                self._start_attempt(message)  # not Active any more: refused at once

    def _start_attempt(self, order: AttemptOrder) -> None:
        now = trio.current_time()
        served = self.upstream_model(order.model)
        load = len(self._running)  # the orders ahead of this one
        note, begun = "not eligible", None
        if order.cancelled:
            pass
        elif not self._tokens.admit(order, now):
            note = "token budget"
        else:
            begun = self._health.begin(order.model, now, load=load)
            if begun is None:
                self._tokens.release(order)
        if begun is None:
            order.reply.set(self._exchange.outcome(OutcomeKind.REFUSED, served, now, note=note))
            return
        order.epoch, effects = begun
        order.timings = self.timings.for_model(served)
        self._carry_out(effects)
        self._running.add(order)
        if order.stream:
            # The slot is held from now until the caller ends the stream, and no later
            # than the request's deadline even if the caller stops reading.
            deadlines = self._stream_deadlines
            deadlines.watch(order, open_streams=len(self._running))
            if not deadlines.served:
                deadlines.served = True
                assert self._nursery is not None
                self._nursery.start_soon(deadlines.serve, self._expire_stream)
        # The caller's task does the attempt's I/O (run_granted) under the attempt's
        # cancel scope, which this target (or anyone) can cancel: no task per attempt.
        order.reply.set(self._grants(served))

    def end_attempt(
        self, order: AttemptOrder, outcome: AttemptOutcome | None, *, started: float
    ) -> AttemptOutcome:
        """Settle a finished attempt into this target's state and free its slot.

        Synchronous (so it also runs safely in a cancelled task's ``finally``): a
        streamed attempt, read in the caller's task, ends here too. ``None`` means
        the attempt was torn down without an outcome (the actor or caller going away).
        An attempt is settled once: ending it again returns what it was settled with.
        """
        if order.settled is not None:
            return order.settled
        if outcome is None:
            reason = order.cancel_reason or CancelReason.OPERATOR
            served = self.upstream_model(order.model)
            outcome = self._exchange.outcome(
                OutcomeKind.CANCELLED, served, started, cancel_reason=reason
            )
        outcome = self._tokens.settle(order, outcome)
        outcome = self._settle(outcome, order.epoch, self._tickets.pop(order, None))
        self._running.discard(order)
        if not self._running:
            self._idle.unpark_all()
            if self.state is TargetState.DRAINING:
                self._set_state(TargetState.DISABLED, reason="drained")
        self._notify()
        order.settled = outcome
        self._streams.pop(order, None)
        return outcome

    def _settle(
        self, outcome: AttemptOutcome, epoch: int, ticket: Ticket | None = None
    ) -> AttemptOutcome:
        """Apply an attempt's outcome to the target's health and carry out the effects
        (and, in a fleet, queue what the store must learn of it)."""
        fleet = self._fleet
        # What the store must compare against, read only in a fleet (once per attempt).
        before = self.local_marks() if fleet is not None else None
        blocked_before = self._health.blocked
        effects = self._health.settle(outcome.ending(epoch), trio.current_time(), self._rng)
        for effect in effects:
            if effect is not Do.REFRESH_CREDENTIAL:
                self._carry_out((effect,))
            elif self._key.refresh():
                outcome = attrs.evolve(outcome, retry_same=True, note="credential refreshed")
            else:
                self._block(TargetCondition.REAUTH_REQUIRED, reason="authentication failed")
        if fleet is not None:
            assert before is not None
            fleet.settled(self, ticket, outcome, before=before, blocked_before=blocked_before)
        return outcome

    def _expire_stream(self, order: AttemptOrder) -> None:
        """A streamed attempt reached its request deadline.

        A read in progress ends itself (its own deadline is no later), and so does
        a caller still opening the stream. Otherwise the caller is away: the attempt
        ends here (no cost to the target), its slot is freed, its connection closed,
        and the caller's next read raises.
        """
        upstream = self._streams.get(order)
        if upstream is None or upstream.reading or upstream.closed:
            return
        upstream.expire()
        started, served = upstream.started_at, self.upstream_model(order.model)
        expired = self._exchange.outcome(
            OutcomeKind.CANCELLED, served, started, note="request deadline"
        )
        self.end_attempt(order, expired, started=started)
        assert self._nursery is not None
        self._nursery.start_soon(upstream.close_expired)

    async def run_granted(self, order: AttemptOrder) -> Answer:
        """Run a granted attempt: a whole non-streamed exchange, or a stream read up
        to its first content.

        Runs in the caller's task, every upstream wait inside the order's guard (which
        the target cancels on disable, drain or shutdown). Blocks until the reply (or
        first content) is in, the attempt's deadline passes or its guard is cancelled.
        Returns an open stream beside its OK outcome (whose reader must end the attempt
        with :meth:`end_attempt`), or an outcome settled here. Raises only the caller's
        own cancellation, after settling the attempt and closing its connection.
        """
        started = trio.current_time()
        answer: Answer | None = None
        served = self.upstream_model(order.model)
        admitted = self._fleet is None
        try:
            if self._fleet is not None:
                refused = await self._fleet_admit(self._fleet, order, served, started)
                admitted = True
                if refused is not None:
                    answer = Answer(refused)
            if answer is None:
                answer = await self._exchange.exchange(
                    order, served, started, opened=self._streams.__setitem__
                )
        finally:
            if answer is None or answer.stream is None:
                if answer is None and order.cancel_reason is None:
                    order.cancel_reason = CancelReason.CALLER  # torn down from outside
                outcome = None if answer is None else answer.outcome
                if not admitted:
                    # Cancelled while the fleet's store decided: nothing went upstream,
                    # so nothing is spent (the tokens reserved for it come back).
                    outcome = self._exchange.outcome(
                        OutcomeKind.REFUSED, served, started, note="admission cancelled"
                    )
                answer = Answer(self.end_attempt(order, outcome, started=started))
        return answer  # noqa: ASYNC910 (the fleet's admission or the exchange awaited)

    # ---- operator commands -------------------------------------------------------

    async def _apply_command(self, command: Command) -> bool:
        """Apply an operator command; True when the actor should stop."""
        kind = command.kind
        retire = False
        if kind is CommandKind.PAUSE:
            self._set_state(TargetState.PAUSED, reason="operator pause")
        elif kind is CommandKind.RESUME:
            self._resume()
        elif kind is CommandKind.DRAIN:
            self._drain(reason="operator drain")
        elif kind is CommandKind.DISABLE:
            self._set_state(TargetState.DISABLED, reason="operator disable")
            for order in list(self._running):
                order.cancel(CancelReason.OPERATOR)
        elif kind is CommandKind.RECONFIGURE:
            assert isinstance(command.payload, tuple)
            target, config = command.payload
            self._reconfigure(target, config)
        elif kind is CommandKind.RETIRE:
            self._drain(reason="removed by reload")
            # Applied once it is draining; the actor stops when its attempts are done.
            command.done.set(None)
            self._notify()
            await self._wait_idle()
            retire = True
        command.done.set(None)
        self._notify()
        await trio.lowlevel.checkpoint()  # most commands apply without waiting
        return retire

    def _drain(self, *, reason: str) -> None:
        """No new work; Disabled once the attempts in flight have ended."""
        state = TargetState.DRAINING if self._running else TargetState.DISABLED
        self._set_state(state, reason=reason)

    def _resume(self) -> None:
        """Back to Active: breaker reset, cooldowns cleared, a missing key re-read."""
        self._carry_out(self._health.clear(trio.current_time()))
        if self._health.blocked is TargetCondition.REAUTH_REQUIRED:
            self._key.use(self._key.read())
        still = TargetCondition.REAUTH_REQUIRED if self._key.missing else None
        self._block(still, reason="operator resume")
        self._set_state(TargetState.ACTIVE, reason="operator resume")

    def _reconfigure(self, target: TargetConfig, config: SwitcherConfig) -> None:
        """Take a reloaded config, keeping this target's health and state."""
        old = self.target
        self.target = target
        self.config = config
        settings = target_settings(config, target, self._policies)
        self.timings.settings = settings  # what was learned is kept
        self._health.reconfigure(settings.health, trio.current_time())
        self._tokens.reconfigure(target, settings)
        self._exchange.on_headers = self._tokens.learn if settings.learn_limits else None
        self._key.target = target
        retired = self._exchange.reconfigure(target, settings)
        if retired is not None:
            assert self._nursery is not None
            self._nursery.start_soon(self._close_when_idle, retired)
        if (target.api_key, target.api_key_env) != (old.api_key, old.api_key_env):
            self._key.use(self._key.read())
            if self._key.missing:
                self._block(TargetCondition.REAUTH_REQUIRED, reason="key missing after reload")
            else:
                self._block(None, reason="key changed by reload")
        if target.enabled != old.enabled:
            state = TargetState.ACTIVE if target.enabled else TargetState.DISABLED
            self._set_state(state, reason="reload")

    async def _wait_idle(self) -> None:
        await trio.lowlevel.checkpoint()
        while self._running:
            await self._idle.park()

    async def _close_when_idle(self, client: TargetTransport) -> None:
        await self._wait_idle()
        await client.aclose()
