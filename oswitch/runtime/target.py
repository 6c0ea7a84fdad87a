"""The target actor: one trio task per target, the only writer of that target's state.

A target is one (provider, endpoint, key, model) combination. Its actor owns the
circuit breaker, token bucket, concurrency limiter, health and latency averages,
cooldowns and lifecycle state. The dispatcher reads the actor (``ready_at``,
``candidate``, ``view``) and talks to it through its inbox: attempt orders and
operator commands. Attempts run in the actor's own nursery, each in a cancel scope
the actor owns, so failover anywhere is just ``order.cancel(reason)``.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import os
import random
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import httpx
import trio

from oswitch.config import SwitcherConfig, TargetConfig
from oswitch.core.backoff import BackoffSettings, backoff_delay
from oswitch.core.breaker import BreakerSettings, BreakerState, CircuitBreaker, Transition
from oswitch.core.bucket import TokenBucket
from oswitch.core.classify import Classification, classify, classify_stream_error
from oswitch.core.clip import MAX_TEXT_CHARS, clip
from oswitch.core.error_class import ErrorClass
from oswitch.core.policy import SHORT_COOLDOWN_S, TargetEffect, recovery_for
from oswitch.core.scoring import Candidate, HealthTracker
from oswitch.core.secret import Secret, scrub
from oswitch.providers import adapter_for
from oswitch.providers.base import MalformedReply, ProviderAdapter, UpstreamCall
from oswitch.runtime.deadlines import StreamDeadlines
from oswitch.runtime.events import EventHub
from oswitch.runtime.http import TargetTransport
from oswitch.runtime.messages import (
    AttemptOrder,
    AttemptOutcome,
    CancelReason,
    Command,
    CommandKind,
    OutcomeKind,
)
from oswitch.runtime.upstream import StreamedChunk, StreamInterrupted, UpstreamStream

log = logging.getLogger("oswitch.target")

# How often a target waiting for a new key re-reads its key's environment variable.
CREDENTIAL_POLL_S = 5.0
# The inbox is small on purpose: the dispatcher never queues work on a busy target.
INBOX_SIZE = 16
# A reply body larger than this is refused as malformed rather than buffered.
MAX_REPLY_BYTES = 32 * 1024 * 1024
# A passthrough target keeps a cooldown per model it served; past this many models
# cooling at once, the ones ending soonest are forgotten (model names are the
# callers' choice: they must not grow the table without bound).
MAX_MODEL_COOLDOWNS = 1024


class TargetState(enum.StrEnum):
    """The operator-controlled lifecycle of a target."""

    ACTIVE = "Active"
    PAUSED = "Paused"
    DRAINING = "Draining"
    DISABLED = "Disabled"


class TargetCondition(enum.StrEnum):
    """The health condition of a target, as routing sees it."""

    HEALTHY = "Healthy"
    HALF_OPEN = "HalfOpen"
    CIRCUIT_OPEN = "CircuitOpen"
    COOLING_DOWN = "CoolingDown"
    QUOTA_EXHAUSTED = "QuotaExhausted"
    REAUTH_REQUIRED = "ReauthRequired"
    POLICY_BLOCKED = "PolicyBlocked"


@attrs.frozen(kw_only=True)
class TargetView:
    """A read-only snapshot of one target, as ``Switcher.list_targets`` returns it.

    Times (``cooldown_until``) are on the switcher's trio clock;
    ``cooldown_remaining_s`` is relative to when the view was taken. Never
    contains a key: ``key_source`` says only where the key comes from.
    """

    target_id: str
    provider_id: str
    api: str
    base_url: str
    model: str | None
    serves: tuple[str, ...]
    state: str
    condition: str
    breaker_state: str
    health: float
    latency_ms: float | None
    failure_rate: float
    in_flight: int
    concurrency_limit: int
    operator_priority: int
    enabled: bool
    capabilities: tuple[str, ...] | None
    policy_tags: tuple[str, ...]
    context_window: int | None
    deployment_mode_hint: str
    cooldown_until: float | None
    cooldown_remaining_s: float | None
    model_cooldowns: Mapping[str, float]
    attempts: int
    successes: int
    failures_by_class: Mapping[str, int]
    breaker_trips: int
    key_source: str


def breaker_settings(config: SwitcherConfig, target: TargetConfig) -> BreakerSettings:
    cb = target.circuit_breaker or config.circuit_breaker
    return BreakerSettings(
        failure_threshold=cb.failure_threshold,
        failure_rate_threshold=cb.failure_rate_threshold,
        sliding_window_size=cb.sliding_window_size,
        half_open_after_s=cb.half_open_after_ms / 1000.0,
        half_open_max_probes=cb.half_open_max_probes,
        success_threshold=cb.success_threshold,
    )


def backoff_settings(config: SwitcherConfig) -> BackoffSettings:
    b = config.backoff
    return BackoffSettings(
        base_s=b.base_ms / 1000.0,
        multiplier=b.multiplier,
        max_s=b.max_ms / 1000.0,
        jitter=b.jitter,
    )


def _make_bucket(target: TargetConfig, now: float) -> TokenBucket | None:
    if target.rate_limit is None:
        return None
    rate = target.rate_limit.requests_per_minute / 60.0
    burst = target.rate_limit.burst or max(1, math.ceil(rate))
    return TokenBucket(rate_per_s=rate, burst=float(burst), now=now)


class TargetActor:
    """The actor for one target. Created by the switcher; run with ``nursery.start``.

    Only the actor's own tasks change its state. Other tasks may call the read-only
    methods (``ready_at``, ``candidate``, ``view``, ``serves``) and ``send``.
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
    ) -> None:
        now = trio.current_time()
        self.target = target
        self.config = config
        self.target_id = target.target_id
        self._transport = transport
        self._secrets = secrets
        self._events = events or EventHub()
        self._notify = notify or (lambda: None)
        self._rng = rng or random.Random()
        self._adapter: ProviderAdapter = adapter_for(target.api)
        self._client = TargetTransport(
            max_connections=target.concurrency_limit, transport=transport
        )
        self._limiter = trio.CapacityLimiter(target.concurrency_limit)
        self._breaker = CircuitBreaker(breaker_settings(config, target))
        self._bucket = _make_bucket(target, now)
        self._health = self._new_health()
        self._backoff = backoff_settings(config)
        self.state = TargetState.ACTIVE if target.enabled else TargetState.DISABLED
        self._blocked: TargetCondition | None = None  # PolicyBlocked / ReauthRequired
        self._quota_until = -math.inf
        self._cooldown_until = -math.inf
        self._model_cooldowns: dict[str, float] = {}
        self._cooldown_causes: dict[str, ErrorClass] = {}  # served model → why it cools
        self._rate_limit_streak = 0
        self._unavailable_streak = 0
        self._in_flight: set[AttemptOrder] = set()
        self._idle = trio.lowlevel.ParkingLot()
        self._attempts = 0
        self._successes = 0
        self._failures: Counter[str] = Counter()
        self._send_inbox, self._inbox = trio.open_memory_channel[AttemptOrder | Command](INBOX_SIZE)
        self._nursery: trio.Nursery | None = None
        self._stream_deadlines = StreamDeadlines()
        self.stopped = False  # the actor has ended (retired, or its switcher closed)
        self._api_key: str | None = None
        self._load_key(initial=True)

    # ---- credentials -------------------------------------------------------------

    @property
    def key_source(self) -> str:
        if self.target.api_key is not None:
            return "inline"
        if self.target.api_key_env:
            present = bool(os.environ.get(self.target.api_key_env))
            return f"env {self.target.api_key_env} ({'set' if present else 'missing'})"
        return "none"

    def _load_key(self, *, initial: bool = False) -> bool:
        """Read the key from config or its environment variable; True if it changed."""
        if self.target.api_key is not None:
            new_key: str | None = self.target.api_key.reveal()
        elif self.target.api_key_env:
            new_key = os.environ.get(self.target.api_key_env) or None
            if new_key is None:
                if initial:
                    log.warning(
                        "key_missing",
                        extra={"target_id": self.target_id, "note": self.target.api_key_env},
                    )
                self._blocked = TargetCondition.REAUTH_REQUIRED
        else:
            new_key = None
        changed = new_key != self._api_key
        self._api_key = new_key
        if new_key is not None:
            self._secrets.add(Secret(new_key))  # a set: the same key re-read adds nothing
        return changed

    async def _watch_credentials(self) -> None:
        """While ReauthRequired, re-read the key's variable until a new key shows up."""
        while self._blocked is TargetCondition.REAUTH_REQUIRED:
            await trio.sleep(CREDENTIAL_POLL_S)
            env = self.target.api_key_env
            if self._blocked is TargetCondition.REAUTH_REQUIRED and env:
                fresh = os.environ.get(env)
                if fresh and fresh != self._api_key:
                    self._api_key = fresh
                    self._secrets.add(Secret(fresh))
                    self._set_blocked(None, reason="credential refreshed")

    def _set_blocked(self, condition: TargetCondition | None, *, reason: str) -> None:
        if condition is self._blocked:
            return
        self._blocked = condition
        self._events.emit(
            "target_condition",
            target_id=self.target_id,
            condition=str(condition or self.condition(trio.current_time())),
            note=reason,
        )
        if condition is TargetCondition.REAUTH_REQUIRED and self._nursery is not None:
            self._nursery.start_soon(self._watch_credentials)
        self._notify()

    # ---- read side (any task) ----------------------------------------------------

    def serves(self, model: str) -> bool:
        serves = self.target.serves or ((self.target.model,) if self.target.model else ("*",))
        return "*" in serves or model in serves

    def upstream_model(self, model: str) -> str:
        """The model name sent upstream: the target's own, or the requested one."""
        return self.target.model or model

    @property
    def in_flight(self) -> int:
        """Attempts running, plus orders sent but not yet picked up from the inbox
        (so requests dispatched in the same tick see each other's load)."""
        return len(self._in_flight) + self._send_inbox.statistics().current_buffer_used

    def condition(self, now: float) -> TargetCondition:
        if self._blocked is not None:
            return self._blocked
        if self._quota_until > now:
            return TargetCondition.QUOTA_EXHAUSTED
        breaker = self._breaker.state(now)
        if breaker is BreakerState.OPEN:
            return TargetCondition.CIRCUIT_OPEN
        if breaker is BreakerState.HALF_OPEN:
            return TargetCondition.HALF_OPEN
        if self._cooldown_until > now:
            return TargetCondition.COOLING_DOWN
        return TargetCondition.HEALTHY

    def ready_at(self, model: str, now: float) -> float:
        """When this target can take an attempt for ``model``: ``<= now`` means now,
        ``math.inf`` means not by the clock alone (an operator, a free slot or a
        finished probe must change something first). Counts orders still in the inbox."""
        return self._ready_at(model, now, self.in_flight)

    def _ready_at(self, model: str, now: float, load: int) -> float:
        if self.state is not TargetState.ACTIVE or self._blocked is not None:
            return math.inf
        ready = max(self._quota_until, self._cooldown_until)
        if self.target.model is None:
            ready = max(ready, self._model_cooldowns.get(clip(model), -math.inf))
        if not self._breaker.can_attempt(now):
            half_open_at = self._breaker.half_open_at
            if half_open_at is None or half_open_at <= now:
                return math.inf  # half-open, probe slots busy
            ready = max(ready, half_open_at)
        if load >= self.target.concurrency_limit:
            return math.inf
        if self._bucket is not None:
            ready = max(ready, now + self._bucket.wait_time(now))
        return ready

    def busy(self, model: str, now: float) -> bool:
        """Out only because its slots (or its half-open probe) are taken: the end of an
        attempt, not the clock or an operator, will make it eligible again."""
        if self.state is not TargetState.ACTIVE or self._blocked is not None:
            return False
        if max(self._quota_until, self._cooldown_until) > now:
            return False
        if self.target.model is None and self._model_cooldowns.get(clip(model), -math.inf) > now:
            return False
        if self.in_flight >= self.target.concurrency_limit:
            return True
        state = self._breaker.state(now)
        return state is BreakerState.HALF_OPEN and not self._breaker.can_attempt(now)

    def wants_probe(self, now: float) -> bool:
        """Half-open with a probe slot free: the next request should probe it."""
        return self._breaker.state(now) is BreakerState.HALF_OPEN and self._breaker.can_attempt(now)

    def candidate(self, now: float) -> Candidate:
        return Candidate(
            target_id=self.target_id,
            tier=self.target.operator_priority,
            health=self._health.health_at(now),
            latency_s=self._health.latency_at(now),
            failure_rate=self._health.failure_rate_at(now),
            priority=float(self.target.operator_priority),
            in_flight=self.in_flight,
        )

    def view(self, now: float) -> TargetView:
        cooldown = max(self._cooldown_until, self._quota_until)
        latency = self._health.latency_at(now)
        return TargetView(
            target_id=self.target_id,
            provider_id=self.target.provider_id,
            api=self.target.api,
            base_url=self.target.base_url,
            model=self.target.model,
            serves=self.target.serves,
            state=str(self.state),
            condition=str(self.condition(now)),
            breaker_state=str(self._breaker.state(now)),
            health=self._health.health_at(now),
            latency_ms=None if latency is None else latency * 1000.0,
            failure_rate=self._health.failure_rate_at(now),
            in_flight=len(self._in_flight),
            concurrency_limit=self.target.concurrency_limit,
            operator_priority=self.target.operator_priority,
            enabled=self.target.enabled,
            capabilities=self.target.capabilities,
            policy_tags=self.target.policy_tags,
            context_window=self.target.context_window,
            deployment_mode_hint=self.config.deployment_mode_hint,
            cooldown_until=cooldown if cooldown > now else None,
            cooldown_remaining_s=cooldown - now if cooldown > now else None,
            model_cooldowns={m: t for m, t in self._model_cooldowns.items() if t > now},
            attempts=self._attempts,
            successes=self._successes,
            failures_by_class=dict(self._failures),
            breaker_trips=self._breaker.statistics(now).trips,
            key_source=self.key_source,
        )

    # ---- talking to the actor ----------------------------------------------------

    async def command(self, kind: CommandKind, payload: object = None) -> None:
        """Send an operator command and return once the actor has applied it."""
        command = Command(kind=kind, payload=payload)
        if await self.send(command):
            await command.done.wait()

    # ---- the actor ---------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The actor's life: serve the inbox until retired or cancelled.

        Attempts run in a nursery owned here; on exit every attempt still running
        is cancelled and the target's client is closed.
        """
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self._blocked is TargetCondition.REAUTH_REQUIRED:
                    nursery.start_soon(self._watch_credentials)
                task_status.started()
                async with self._inbox:
                    async for message in self._inbox:
                        if isinstance(message, Command):
                            retired = await self._apply_command(message)
                            if retired:
                                break
                        else:
                            self._start_attempt(message)
                        del message  # keep no request alive while the inbox is empty
                    # Retired: nothing new gets in, and whatever was queued is answered.
                    self._send_inbox.close()
                    self._refuse_queued()
                nursery.cancel_scope.cancel()
        finally:
            self.stopped = True
            for order in list(self._in_flight):
                order.cancel(CancelReason.OPERATOR)
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._client.aclose()

    def _refuse_queued(self) -> None:
        while True:
            try:
                message = self._inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return
            if isinstance(message, Command):
                message.done.set(None)
            else:
                self._start_attempt(message)  # not Active any more: refused at once

    async def send(self, message: AttemptOrder | Command) -> bool:
        """Put ``message`` in the inbox; False if the actor has stopped taking any.

        Blocks only while the inbox is full.
        """
        try:
            await self._send_inbox.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def _start_attempt(self, order: AttemptOrder) -> None:
        now = trio.current_time()
        if self._ready_at(order.model, now, len(self._in_flight)) > now or order.cancelled:
            order.reply.set(
                self._outcome(
                    OutcomeKind.REFUSED,
                    self.upstream_model(order.model),
                    now,
                    note="not eligible",
                )
            )
            return
        transition = self._breaker.begin_attempt(now)
        self._report_transition(transition)
        order.epoch = self._breaker.epoch
        if self._bucket is not None:
            self._bucket.try_take(now)
        self._limiter.acquire_on_behalf_of_nowait(order)
        self._in_flight.add(order)
        self._attempts += 1
        if order.stream:
            # The caller's task reads the stream (open_stream); the slot is held now,
            # and no later than the request's deadline.
            deadlines = self._stream_deadlines
            deadlines.watch(order, open_streams=len(self._in_flight))
            if not deadlines.served:
                deadlines.served = True
                assert self._nursery is not None
                self._nursery.start_soon(deadlines.serve, self._expire_stream)
            order.reply.set(
                self._outcome(
                    OutcomeKind.GRANTED,
                    self.upstream_model(order.model),
                    now,
                )
            )
            return
        assert self._nursery is not None
        self._nursery.start_soon(self._run_attempt, order)

    async def _run_attempt(self, order: AttemptOrder) -> None:
        started = trio.current_time()
        served_model = self.upstream_model(order.model)
        outcome: AttemptOutcome | None = None
        try:
            with order.guard(order.deadline):
                try:
                    outcome = await self._call_upstream(order, served_model, started)
                except Exception as exc:
                    # A bug here must cost one attempt, never the actor and its switcher.
                    log.exception("attempt_crashed", extra={"target_id": self.target_id})
                    outcome = self._failed(
                        served_model, started, _transient(f"internal error: {exc!r}")
                    )
            if outcome is None:
                outcome = self._cancelled_outcome(order, served_model, started)
        finally:
            order.reply.set(self.end_attempt(order, outcome, started=started))

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
            self._breaker.release(trio.current_time(), epoch=order.epoch)
            outcome = self._outcome(
                OutcomeKind.CANCELLED,
                self.upstream_model(order.model),
                started,
                cancel_reason=order.cancel_reason or CancelReason.OPERATOR,
            )
        else:
            outcome = self._settle(outcome, order.epoch)
        if order in self._in_flight:
            self._in_flight.discard(order)
            self._limiter.release_on_behalf_of(order)
        if not self._in_flight:
            self._idle.unpark_all()
            if self.state is TargetState.DRAINING:
                self._set_state(TargetState.DISABLED, reason="drained")
        self._notify()
        order.settled = outcome
        order.upstream = None  # the stream refers to its order: no cycle left behind
        return outcome

    def _expire_stream(self, order: AttemptOrder) -> None:
        """A streamed attempt reached its request deadline.

        A read in progress ends itself (its own deadline is no later), and so does
        a caller still opening the stream. Otherwise the caller is away: the attempt
        ends here (no cost to the target), its slot is freed, its connection closed,
        and the caller's next read raises.
        """
        upstream = order.upstream
        if upstream is None or upstream.reading or upstream.closed:
            return
        upstream.expire()
        self.end_attempt(
            order,
            self._outcome(
                OutcomeKind.CANCELLED,
                self.upstream_model(order.model),
                upstream.started_at,
                note="request deadline",
            ),
            started=upstream.started_at,
        )
        assert self._nursery is not None
        self._nursery.start_soon(upstream.close_expired)

    # ---- streamed attempts (run in the caller's task) --------------------------------

    def _stream_limits(self) -> tuple[float, float]:
        first_token_ms = (
            self.target.first_token_timeout_ms
            or self.config.first_token_timeout_ms
            or self.config.max_expected_latency_ms
        )
        idle_ms = self.target.stream_idle_timeout_ms or self.config.stream_idle_timeout_ms
        return first_token_ms / 1000.0, idle_ms / 1000.0

    async def open_stream(self, order: AttemptOrder) -> AttemptOutcome:
        """Open a granted streamed attempt and read it up to its first content.

        Runs in the caller's task. Returns OK with ``outcome.stream`` (the open
        :class:`UpstreamStream`, whose reader must end the attempt with
        :meth:`end_attempt`), or a FAILED / CANCELLED outcome already settled here.
        Cancelling the caller settles the attempt and closes the connection.
        """
        started = trio.current_time()
        served_model = self.upstream_model(order.model)
        outcome: AttemptOutcome | None = None
        upstream: UpstreamStream | None = None
        try:
            outcome, upstream = await self._send_stream_request(order, served_model, started)
            if upstream is not None:
                outcome = await self._read_to_first_content(upstream, served_model, started)
        finally:
            if outcome is None or outcome.kind is not OutcomeKind.OK:
                if upstream is not None:
                    await upstream.aclose()
                if outcome is None and order.cancel_reason is None:
                    order.cancel_reason = CancelReason.CALLER  # torn down from outside
                outcome = self.end_attempt(order, outcome, started=started)
        return outcome

    async def _send_stream_request(
        self, order: AttemptOrder, served_model: str, started: float
    ) -> tuple[AttemptOutcome | None, UpstreamStream | None]:
        """Send a streamed request: ``(None, stream)`` once an event stream began,
        else ``(failed or cancelled outcome, None)`` with the response closed."""
        first_token_s, idle_s = self._stream_limits()
        first_token_deadline = min(started + first_token_s, order.deadline)
        call = self._translate(order, served_model, started, stream=True)
        if isinstance(call, AttemptOutcome):
            return call, None
        quota_after_s = self.config.quota_delay_cap_ms / 1000.0
        response: httpx.Response | None = None
        handed_over = False
        try:
            with order.guard(first_token_deadline):
                response = await self._client.post(call.url, call.headers, call.body)
                status = response.status_code
                if 200 <= status < 300 and "text/event-stream" in response.headers.get(
                    "content-type", ""
                ):
                    upstream = UpstreamStream(
                        order=order,
                        response=response,
                        decoder=self._adapter.stream_decoder(
                            model=served_model, secrets=self._secrets
                        ),
                        started_at=started,
                        first_token_deadline=first_token_deadline,
                        idle_timeout_s=idle_s,
                        request_deadline=order.deadline,
                        background=self._nursery,
                    )
                    order.upstream = upstream
                    handed_over = True  # the stream closes the response from here on
                    return None, upstream
                body = await _read_limited(response, MAX_REPLY_BYTES)
                if not 200 <= status < 300:
                    classification = classify(
                        status,
                        response.headers,
                        body,
                        quota_after_s=quota_after_s,
                        secrets=self._secrets,
                    )
                    return self._failed(served_model, started, classification), None
                return self._unstreamed_reply(body, served_model, started), None
        except MalformedReply as exc:
            return self._failed(served_model, started, _transient(str(exc))), None
        except Exception as exc:
            classification = classify(
                None, None, None, exc, quota_after_s=quota_after_s, secrets=self._secrets
            )
            return self._failed(
                served_model, started, classification, note=type(exc).__name__
            ), None
        finally:
            if response is not None and not handed_over:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await response.aclose()
        # The guard fired: no headers in time, or cancelled from outside the attempt.
        outcome = self._cancelled_outcome(order, served_model, started)
        if outcome.silent:
            outcome = attrs.evolve(outcome, note="abandoned: no headers in time")
        return outcome, None

    def _translate(
        self, order: AttemptOrder, served_model: str, started: float, *, stream: bool
    ) -> UpstreamCall | AttemptOutcome:
        """The upstream call for ``order``, or a failed outcome when the caller's
        request cannot be expressed in this target's protocol (InvalidRequest)."""
        try:
            return self._adapter.build_call(
                order.request,
                base_url=self.target.base_url,
                model=served_model,
                api_key=self._api_key,
                stream=stream,
            )
        except Exception as exc:
            return self._untranslatable(exc, served_model, started)

    def _untranslatable(self, exc: Exception, served_model: str, started: float) -> AttemptOutcome:
        # The exception may quote the caller's request: keep a bounded piece of it.
        reason = clip(f"{type(exc).__name__}: {exc}", MAX_TEXT_CHARS)
        log.warning("request_untranslatable", extra={"target_id": self.target_id, "note": reason})
        return self._failed(
            served_model,
            started,
            Classification(
                error_class=ErrorClass.INVALID_REQUEST,
                retry_after=None,
                message=f"the request cannot be sent to a {self.target.api} target: {reason}",
            ),
        )

    async def _read_to_first_content(
        self, upstream: UpstreamStream, served_model: str, started: float
    ) -> AttemptOutcome:
        buffered: list[StreamedChunk] = []
        try:
            while True:
                chunks = await upstream.next_chunks()
                if chunks is None:
                    # A clean end with no content at all is an (empty) answer too.
                    break
                buffered.extend(chunks)
                if any(chunk.progress for chunk in chunks):
                    break
        except StreamInterrupted as interrupted:
            if interrupted.cancel_reason is not None:
                return self._outcome(
                    OutcomeKind.CANCELLED,
                    served_model,
                    started,
                    cancel_reason=interrupted.cancel_reason,
                )
            return attrs.evolve(
                self._failed(served_model, started, interrupted.classification),
                silent=interrupted.silent,
                note="before first content",
            )
        upstream.first_chunks = buffered
        return self._outcome(
            OutcomeKind.OK,
            served_model,
            started,
            stream=upstream,
        )

    def _unstreamed_reply(self, body: bytes, served_model: str, started: float) -> AttemptOutcome:
        """A 2xx that is not an event stream: an error object, or a whole reply."""
        try:
            payload = json.loads(body)
        except ValueError:
            return self._failed(served_model, started, _transient("stream is not SSE or JSON"))
        if isinstance(payload, dict) and "error" in payload and "choices" not in payload:
            classification = classify_stream_error(
                payload,
                quota_after_s=self.config.quota_delay_cap_ms / 1000.0,
                secrets=self._secrets,
            )
            return self._failed(served_model, started, classification, note="200 error")
        return self._failed(
            served_model, started, _transient("asked for a stream, got a whole reply")
        )

    def _cancelled_outcome(
        self, order: AttemptOrder, served_model: str, started: float
    ) -> AttemptOutcome:
        now = trio.current_time()
        if order.cancel_reason is not None:
            return self._outcome(
                OutcomeKind.CANCELLED,
                served_model,
                started,
                cancel_reason=order.cancel_reason,
            )
        return self._outcome(
            OutcomeKind.FAILED,
            served_model,
            started,
            classification=Classification(
                error_class=ErrorClass.TRANSPORT_FAILURE,
                retry_after=None,
                message=f"no answer within {now - started:.3f}s",
            ),
            silent=True,
            note="abandoned: no answer in time",
        )

    async def _call_upstream(
        self, order: AttemptOrder, served_model: str, started: float
    ) -> AttemptOutcome:
        call = self._translate(order, served_model, started, stream=False)
        if isinstance(call, AttemptOutcome):
            return call
        status: int | None = None
        try:
            response = await self._client.post(call.url, call.headers, call.body)
            try:
                status = response.status_code
                body = await _read_limited(response, MAX_REPLY_BYTES)
                headers = response.headers
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await response.aclose()
        except MalformedReply as exc:
            classification = Classification(
                error_class=ErrorClass.TRANSIENT_SERVER_FAILURE,
                retry_after=None,
                message=str(exc),
                status=status,
            )
            return self._failed(served_model, started, classification, note="malformed")
        except Exception as exc:  # every transport fault is classified, never raised
            classification = classify(
                status,
                None,
                None,
                exc,
                quota_after_s=self.config.quota_delay_cap_ms / 1000.0,
                secrets=self._secrets,
            )
            return self._failed(served_model, started, classification, note=type(exc).__name__)
        if 200 <= status < 300:
            try:
                payload = json.loads(body)
                if isinstance(payload, dict) and "error" in payload and "choices" not in payload:
                    # Some gateways (OpenRouter) answer 200 with an error object.
                    classification = classify_stream_error(
                        payload,
                        quota_after_s=self.config.quota_delay_cap_ms / 1000.0,
                        secrets=self._secrets,
                    )
                    return self._failed(served_model, started, classification, note="200 error")
                reply = self._adapter.parse_reply(payload, model=served_model)
            except Exception as exc:  # a reply no adapter check foresaw must not kill the actor
                # A 2xx that is not a reply is the provider's fault, like a 5xx.
                classification = Classification(
                    error_class=ErrorClass.TRANSIENT_SERVER_FAILURE,
                    retry_after=None,
                    message=f"malformed reply: {exc}",
                    status=status,
                )
                return self._failed(served_model, started, classification, note="malformed")
            return self._outcome(
                OutcomeKind.OK,
                str(reply.get("model") or served_model),
                started,
                reply=reply,
            )
        classification = classify(
            status,
            headers,
            body,
            quota_after_s=self.config.quota_delay_cap_ms / 1000.0,
            secrets=self._secrets,
        )
        return self._failed(served_model, started, classification)

    def _outcome(
        self, kind: OutcomeKind, served_model: str, started: float, **fields: Any
    ) -> AttemptOutcome:
        """An outcome of this target's attempt begun at ``started``, lasting until now."""
        return AttemptOutcome(
            kind=kind,
            target_id=self.target_id,
            served_model=served_model,
            started_at=started,
            duration_s=trio.current_time() - started,
            **fields,
        )

    def _failed(
        self,
        served_model: str,
        started: float,
        classification: Classification,
        *,
        note: str = "",
    ) -> AttemptOutcome:
        if classification.message:
            classification = attrs.evolve(
                classification, message=scrub(classification.message, tuple(self._secrets))
            )
        return self._outcome(
            OutcomeKind.FAILED,
            served_model,
            started,
            classification=classification,
            note=note,
        )

    def _settle(self, outcome: AttemptOutcome, epoch: int) -> AttemptOutcome:
        """Apply an attempt's outcome to this target's state (the actor's writes)."""
        now = trio.current_time()
        if outcome.kind is OutcomeKind.OK:
            self._successes += 1
            self._rate_limit_streak = 0
            self._unavailable_streak = 0
            self._health.record_success(outcome.duration_s, now)
            self._report_transition(self._breaker.record_success(now, epoch=epoch))
            return outcome
        if outcome.kind is not OutcomeKind.FAILED or outcome.classification is None:
            self._breaker.release(now, epoch=epoch)
            return outcome
        classification = outcome.classification
        error_class = outcome.error_class
        assert error_class is not None
        self._failures[str(error_class)] += 1
        if classification.local_fault:
            self._breaker.release(now, epoch=epoch)
            return outcome
        recovery = recovery_for(error_class)
        if recovery.breaker_failure:
            self._health.record_failure(now)
            self._report_transition(self._breaker.record_failure(now, epoch=epoch))
        else:
            self._breaker.release(now, epoch=epoch)
        delay = classification.retry_after
        effect = recovery.target_effect
        if effect is TargetEffect.COOLDOWN:
            if delay is None:
                delay = backoff_delay(self._backoff, self._rate_limit_streak, self._rng)
            self._rate_limit_streak += 1
            self._cool_down(outcome.served_model, now + delay, error_class)
        elif effect is TargetEffect.SHORT_COOLDOWN:
            if delay is None:
                # An overloaded model: a short pause that grows while it stays overloaded,
                # never longer than SHORT_COOLDOWN_S (one stray 529 must not take a key
                # out for long).
                delay = min(
                    SHORT_COOLDOWN_S,
                    backoff_delay(self._backoff, self._unavailable_streak, self._rng),
                )
            self._unavailable_streak += 1
            self._cool_down(outcome.served_model, now + delay, error_class)
        elif effect is TargetEffect.QUOTA_EXHAUSTED:
            quota_s = delay if delay is not None else self.config.quota_cooldown_ms / 1000.0
            self._quota_until = max(self._quota_until, now + quota_s)
            self._events.emit(
                "target_condition",
                target_id=self.target_id,
                condition=str(TargetCondition.QUOTA_EXHAUSTED),
                retry_after=quota_s,
            )
        elif effect is TargetEffect.REAUTH:
            if self.target.api_key is None and self.target.api_key_env and self._load_key():
                return attrs.evolve(outcome, retry_same=True, note="credential refreshed")
            self._set_blocked(TargetCondition.REAUTH_REQUIRED, reason="authentication failed")
        elif effect is TargetEffect.POLICY_BLOCKED:
            self._set_blocked(TargetCondition.POLICY_BLOCKED, reason=str(error_class))
        return outcome

    def _cool_down(self, served_model: str, until: float, cause: ErrorClass) -> None:
        # A passthrough target serves many models: one model's limit must not take
        # the key down for all of them. Its models are the callers' names: clipped,
        # and the table bounded (MAX_MODEL_COOLDOWNS).
        served_model = clip(served_model)
        if self.target.model is None:
            current = self._model_cooldowns.get(served_model, -math.inf)
            self._model_cooldowns[served_model] = max(current, until)
            if len(self._model_cooldowns) > MAX_MODEL_COOLDOWNS:
                self._forget_cooldowns(trio.current_time())
        else:
            self._cooldown_until = max(self._cooldown_until, until)
        self._cooldown_causes[served_model] = cause

    def _forget_cooldowns(self, now: float) -> None:
        """Drop cooldowns that ended; if still too many, those ending soonest."""
        live = sorted(
            ((until, model) for model, until in self._model_cooldowns.items() if until > now),
            reverse=True,
        )[: MAX_MODEL_COOLDOWNS // 2]
        self._model_cooldowns = {model: until for until, model in live}
        self._cooldown_causes = {
            model: cause
            for model, cause in self._cooldown_causes.items()
            if model in self._model_cooldowns
        }

    def rate_limited(self, model: str, now: float) -> bool:
        """Whether this target is out for ``model`` only because a rate limit cools it."""
        if self.state is not TargetState.ACTIVE or self._blocked is not None:
            return False
        if self._quota_until > now:
            return False
        until = (
            self._model_cooldowns.get(clip(model), -math.inf)
            if self.target.model is None
            else (self._cooldown_until)
        )
        served = clip(self.upstream_model(model))
        return until > now and self._cooldown_causes.get(served) is ErrorClass.RATE_LIMITED

    def _new_health(self) -> HealthTracker:
        return HealthTracker(forget_half_life_s=self.config.health_half_life_ms / 1000.0)

    def _report_transition(self, transition: Transition | None) -> None:
        if transition is not None:
            if (transition.from_state, transition.to_state) == (
                BreakerState.HALF_OPEN,
                BreakerState.CLOSED,
            ):
                # The probes proved it recovered: its old averages would only keep
                # starving it of the traffic it can take again.
                self._health = self._new_health()
            self._events.emit(
                "breaker",
                target_id=self.target_id,
                state=str(transition.to_state),
                note=transition.reason,
            )

    def _set_state(self, state: TargetState, *, reason: str) -> None:
        if state is self.state:
            return
        self.state = state
        self._events.emit("target_state", target_id=self.target_id, state=str(state), note=reason)
        self._notify()

    async def _apply_command(self, command: Command) -> bool:
        """Apply an operator command; True when the actor should stop."""
        now = trio.current_time()
        kind = command.kind
        retire = False
        if kind is CommandKind.PAUSE:
            self._set_state(TargetState.PAUSED, reason="operator pause")
        elif kind is CommandKind.RESUME:
            self._report_transition(self._breaker.reset(now))
            self._cooldown_until = -math.inf
            self._quota_until = -math.inf
            self._model_cooldowns.clear()
            self._cooldown_causes.clear()
            self._rate_limit_streak = 0
            if self._blocked is TargetCondition.REAUTH_REQUIRED:
                self._load_key()
            self._set_blocked(
                None
                if self._api_key or not self.target.api_key_env
                else TargetCondition.REAUTH_REQUIRED,
                reason="operator resume",
            )
            self._set_state(TargetState.ACTIVE, reason="operator resume")
        elif kind is CommandKind.DRAIN:
            self._set_state(
                TargetState.DRAINING if self._in_flight else TargetState.DISABLED,
                reason="operator drain",
            )
        elif kind is CommandKind.DISABLE:
            self._set_state(TargetState.DISABLED, reason="operator disable")
            for order in list(self._in_flight):
                order.cancel(CancelReason.OPERATOR)
        elif kind is CommandKind.RECONFIGURE:
            assert isinstance(command.payload, tuple)
            target, config = command.payload
            self._reconfigure(target, config, now)
        elif kind is CommandKind.RETIRE:
            self._set_state(
                TargetState.DRAINING if self._in_flight else TargetState.DISABLED,
                reason="removed by reload",
            )
            # Applied once it is draining; the actor stops when its attempts are done.
            command.done.set(None)
            self._notify()
            await self._wait_idle()
            retire = True
        command.done.set(None)
        self._notify()
        return retire

    def _reconfigure(self, target: TargetConfig, config: SwitcherConfig, now: float) -> None:
        """Take a reloaded config, keeping this target's health and state."""
        old = self.target
        self.target = target
        self.config = config
        self._backoff = backoff_settings(config)
        self._health.forget_half_life_s = config.health_half_life_ms / 1000.0
        if target.api != old.api:
            self._adapter = adapter_for(target.api)
        new_breaker = breaker_settings(config, target)
        if new_breaker != self._breaker.settings:
            self._breaker = CircuitBreaker(new_breaker)
        if target.rate_limit != old.rate_limit:
            self._bucket = _make_bucket(target, now)
        if target.concurrency_limit != old.concurrency_limit:
            # A new pool sized to the new limit; in-flight attempts finish on the old one.
            old_client = self._client
            self._client = TargetTransport(
                max_connections=target.concurrency_limit, transport=self._transport
            )
            self._limiter.total_tokens = target.concurrency_limit
            assert self._nursery is not None
            self._nursery.start_soon(self._close_when_idle, old_client)
        if (target.api_key, target.api_key_env) != (old.api_key, old.api_key_env):
            self._load_key()
            if self._api_key or not target.api_key_env:
                self._set_blocked(None, reason="key changed by reload")
        if target.enabled != old.enabled:
            self._set_state(
                TargetState.ACTIVE if target.enabled else TargetState.DISABLED,
                reason="reload",
            )

    async def _wait_idle(self) -> None:
        while self._in_flight:
            await self._idle.park()

    async def _close_when_idle(self, client: TargetTransport) -> None:
        await self._wait_idle()
        await client.aclose()


def _transient(message: str) -> Classification:
    return Classification(
        error_class=ErrorClass.TRANSIENT_SERVER_FAILURE, retry_after=None, message=message
    )


async def _read_limited(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise MalformedReply(f"reply body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
