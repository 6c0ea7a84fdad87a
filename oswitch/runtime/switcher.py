"""The public facade: ``open_switcher`` and the ``Switcher`` it yields."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import trio

from oswitch.config import SwitcherConfig, validate_config
from oswitch.core.clip import clip
from oswitch.core.deadline_learning import DeadlinePolicies
from oswitch.core.secret import Secret
from oswitch.core.trace import RequestTrace, TraceBuilder, TraceStore
from oswitch.errors import (
    AllTargetsFailed,
    ConfigError,
    RequestFailed,
    SwitcherError,
    UnknownRequest,
    UnknownTarget,
)
from oswitch.fleet.link import fleet_link
from oswitch.runtime.admission import Admission, Held, QueueTimeout
from oswitch.runtime.dispatcher import ChangeSignal, RequestRun
from oswitch.runtime.entry import (
    as_model_not_found,
    check_request_id,
    new_request_id,
    prompt_chars,
    route_refusal,
    validate_request,
)
from oswitch.runtime.events import EventHub
from oswitch.runtime.keys import warn_missing_key
from oswitch.runtime.messages import CommandKind
from oswitch.runtime.router import RequestNeeds, Router, request_needs
from oswitch.runtime.settings import Settings
from oswitch.runtime.statistics import SwitcherStatistics
from oswitch.runtime.streaming import ChatStream, StreamContext, is_cancellation
from oswitch.runtime.target import TargetActor, TargetState, TargetView


class Switcher:
    """Routes chat requests over targets. Get one from ``open_switcher``.

    Requests run in the caller's task: cancelling the caller cancels the request and its
    upstream attempt. Operator methods return once the target's actor applied the change.
    """

    def __init__(
        self,
        config: SwitcherConfig,
        nursery: trio.Nursery,
        *,
        transport: httpx.AsyncBaseTransport | None,
        rng: random.Random,
    ) -> None:
        self._config = config
        self._nursery = nursery
        self._transport = transport
        self._rng = rng
        self._policies: DeadlinePolicies | None = None  # None: docs/deadlines.md's
        # Every key value seen, once each (a set: re-reading the same key adds nothing).
        self._secrets: set[Secret] = set()
        self._changed = ChangeSignal()
        self.events = EventHub()
        self._settings = Settings(config)
        self._admission = Admission(
            concurrency_limit=config.concurrency_limit,
            queue_limit=config.queue_limit,
            backpressure_threshold=config.backpressure_threshold,
            events=self.events,
        )
        self._traces = TraceStore(
            capacity=config.trace_capacity, max_bytes=config.trace_store_bytes
        )
        self._router = Router(())
        self._retiring: list[TargetActor] = []  # removed by a reload, still draining
        self._requests = self._succeeded = self._failed = self._cancelled = 0
        # A fleet's shared store, when ``store`` is configured (started by _start).
        self.fleet = fleet_link(config, self.events, lambda: self._router.actors)

    @property
    def config(self) -> SwitcherConfig:
        return self._config

    async def _start_actor(self, target: Any, config: SwitcherConfig) -> TargetActor:
        warn_missing_key(target, os.environ)
        actor = TargetActor(
            target,
            config,
            transport=self._transport,
            secrets=self._secrets,
            events=self.events,
            notify=self._changed.notify,
            rng=self._rng,
            policies=self._policies,
            fleet=self.fleet,
        )
        await self._nursery.start(actor.run)
        return actor

    async def _start(self) -> None:
        if self.fleet is not None:
            await self._nursery.start(self.fleet.serve)
        actors = [await self._start_actor(t, self._config) for t in self._config.targets]
        self._router = Router(actors, fallbacks=self._config.fallbacks)
        await trio.lowlevel.checkpoint()  # with no targets nothing above waited

    # ---- requests ----------------------------------------------------------------

    async def complete(
        self, request: Mapping[str, Any], *, request_id: str | None = None
    ) -> dict[str, Any]:
        """Send one chat request and return the OpenAI-shaped reply.

        Blocks until a target answered, waiting in the admission queue, for cooldowns
        (at most ``max_wait_ms``) and for backoff, never past ``request_timeout_ms`` or
        the caller's own trio deadline. Cancelling the caller cancels the attempt in
        flight. The reply gains ``"oswitch": {"request_id", "target_id", "attempts"}``
        and its ``model`` is the upstream model that served.

        Raises ``Overloaded`` (at once, queue full), ``AllTargetsFailed`` (budgets or
        deadline spent, nothing eligible in time) or ``RequestFailed`` (the request
        cannot succeed as sent: InvalidRequest, RequestTooLarge, PolicyFailure).
        """
        run = self._new_run(request, request_id, stream=False)
        try:
            held = await self._slot(run)
            try:
                outcome = (await run.run()).outcome
            finally:
                self._admission.release(held)
        except BaseException as exc:
            error = as_model_not_found(run.trace, run.model, run.request_id, exc)
            self._request_ended(run.trace, run.model, error)
            if error is not exc:
                raise error from None
            raise
        run.trace.finish(
            trio.current_time(),
            "ok",
            served_by=outcome.target_id,
            served_model=outcome.served_model,
        )
        self._request_ended(run.trace, run.model, None)
        reply = dict(outcome.reply or {})
        reply["model"] = outcome.served_model
        reply["oswitch"] = {
            "request_id": run.request_id,
            "target_id": outcome.target_id,
            "attempts": len(run.trace.attempts),
        }
        return reply

    def stream(self, request: Mapping[str, Any], *, request_id: str | None = None) -> StreamContext:
        """Stream one chat request: ``async with switcher.stream(req) as chunks:``.

        A plain call returning an async context manager. Entering it blocks until the
        first content chunk is in hand (queue, cooldown waits and failovers included),
        so ``Overloaded``, ``AllTargetsFailed`` and ``RequestFailed`` raise there. It
        yields a :class:`ChatStream` of OpenAI ``chat.completion.chunk`` dicts (with
        ``.request_id``); the last one carries ``finish_reason`` and an ``"oswitch"``
        key. A stream that breaks after content is resumed on another target from the
        text already delivered (``stream_resume = "continue"``). Leaving the block
        early cancels the upstream attempt and closes its connection.
        """
        return StreamContext(lambda stack: self._open_stream(stack, request, request_id))

    async def _open_stream(
        self, stack: AsyncExitStack, request: Mapping[str, Any], request_id: str | None
    ) -> ChatStream:
        run = self._new_run(request, request_id, stream=True)
        try:
            stack.callback(self._admission.release, await self._slot(run))
            first = await run.run()
        except BaseException as exc:
            error = as_model_not_found(run.trace, run.model, run.request_id, exc)
            self._request_ended(run.trace, run.model, error)
            if error is not exc:
                raise error from None
            raise
        return ChatStream(
            run=run,
            first=first,
            trace=run.trace,
            resume_strategy=self._config.stream_resume,
            on_finish=lambda stream, error: self._request_ended(run.trace, run.model, error),
        )

    def _new_run(
        self, request: Mapping[str, Any], request_id: str | None, *, stream: bool
    ) -> RequestRun:
        """Validate a request and set up its run and trace (nothing waits yet).

        Raises RequestFailed(InvalidRequest) for a request that is not a chat request,
        and for a caller's ``request_id`` that is not 1-128 printable ASCII characters.
        """
        if request_id:
            check_request_id(request_id)  # untraced: ids key the trace store
        rid = request_id or new_request_id()
        model = self._admit_shape(request, rid)
        needs = request_needs(request)
        now = trio.current_time()
        self._admit_route(model, needs, rid, stream=stream, now=now)
        own_deadline = now + self._settings.request_timeout_s
        deadline = min(own_deadline, trio.current_effective_deadline())
        trace = TraceBuilder(
            request_id=rid,
            model=model,
            stream=stream,
            started_at=now,
            prompt_chars=prompt_chars(request),
        )
        self._traces.add(trace)
        self._requests += 1
        settings = self._settings
        if stream and self._config.stream_resume == "off":
            settings = settings.without_budgets()
        return RequestRun(
            request=request,
            request_id=rid,
            model=model,
            needs=needs,
            deadline=deadline,
            own_deadline=own_deadline,
            settings=settings,
            router=self._router,
            changed=self._changed,
            trace=trace,
            rng=self._rng,
            events=self.events,
            stream=stream,
        )

    async def _slot(self, run: RequestRun) -> Held:
        """Take an admission slot for ``run`` (give it back with the admission's
        ``release``); a deadline passed in the queue is AllTargetsFailed (deadline
        exceeded), a full queue Overloaded at once."""
        try:
            held = await self._admission.acquire(deadline=run.deadline, request_id=run.request_id)
        except QueueTimeout:
            raise AllTargetsFailed(
                "deadline exceeded while queued for admission",
                request_id=run.request_id,
                deadline_exceeded=True,
                retry_after=self._admission.retry_after_hint(),
            ) from None
        run.trace.queue_wait_s = held.waited
        return held

    def _request_ended(self, trace: TraceBuilder, model: str, error: BaseException | None) -> None:
        now = trio.current_time()
        if error is None:
            if trace.outcome == "in_progress":
                if trace.stream:
                    self._request_cancelled(trace, model, "cancelled")  # left the block early
                else:
                    trace.finish(now, "ok")
            self._succeeded += trace.outcome == "ok"
            return
        if isinstance(error, SwitcherError):
            self._failed += 1
            error.request_id = trace.request_id
            error_class = getattr(error, "error_class", None)
            trace.finish(now, type(error).__name__, error_class=error_class)
            self.events.emit(
                "request_failed",
                request_id=trace.request_id,
                model=model,
                error_class=str(error_class or ""),
                note=type(error).__name__,
            )
        elif is_cancellation(error):
            self._request_cancelled(trace, model, "client_cancelled")
        else:
            self._request_cancelled(trace, model, "cancelled")

    def _request_cancelled(self, trace: TraceBuilder, model: str, outcome: str) -> None:
        """The caller ended the request before it finished: trace it and tell the audit
        log and metrics (``request_cancelled``). ``client_cancelled``: trio cancelled
        the caller (its cancel scope, a sidecar client gone); ``cancelled``: it left a
        stream's block early on its own."""
        now = trio.current_time()
        trace.finish(now, outcome)
        self._cancelled += 1
        last = trace.attempts[-1] if trace.attempts else None
        self.events.emit(
            "request_cancelled",
            request_id=trace.request_id,
            model=model,
            outcome=outcome,
            target_id=None if last is None else last.target_id,
            attempt=len(trace.attempts),
            latency_ms=round((now - trace.started_at) * 1000.0, 3),
            stream=trace.stream,
        )

    def _admit_shape(self, request: object, request_id: str) -> str:
        """The request's model; a request that is not a chat request oswitch can send is
        traced and refused (RequestFailed, InvalidRequest, status 400) before any attempt,
        so no target is charged for it."""
        try:
            return validate_request(request, request_id)
        except RequestFailed as error:
            self._refused(request_id, "", error, stream=False)
            raise

    def _admit_route(
        self, model: str, needs: RequestNeeds, request_id: str, *, stream: bool, now: float
    ) -> None:
        """Refuse, before any waiting and with no target charged, a request that no
        target can ever take as things stand (:func:`route_refusal`). The refusal is
        traced and counted as a failed request."""
        error = route_refusal(
            model,
            needs,
            request_id,
            router=self._router,
            now=now,
        )
        if error is not None:
            self._refused(request_id, model, error, stream=stream)
            raise error

    def _refused(self, request_id: str, model: str, error: SwitcherError, *, stream: bool) -> None:
        trace = TraceBuilder(
            request_id=request_id, model=model, stream=stream, started_at=trio.current_time()
        )
        self._traces.add(trace)
        self._requests += 1
        self._request_ended(trace, model, error)

    # ---- operator surface --------------------------------------------------------

    def list_targets(self) -> list[TargetView]:
        """Snapshot every target (never a key). Does not block.

        A target removed by a reload is listed, ``Draining``, until its last
        in-flight attempt has ended (then it is gone); one drained by an operator
        stays listed, ``Draining`` then ``Disabled``.
        """
        now = trio.current_time()
        actors = self._router.actors
        views = [actor.view(now) for actor in actors.values()]
        if self._retiring:
            self._retiring = [
                a for a in self._retiring if a.state is TargetState.DRAINING and not a.stopped
            ]
            views.extend(a.view(now) for a in self._retiring if a.target_id not in actors)
        return views

    def inspect_request(self, request_id: str) -> RequestTrace:
        """The trace of a request still kept in the ring buffer; raises UnknownRequest."""
        kept_as = clip(str(request_id))
        trace = self._traces.get(kept_as)
        if trace is None:
            raise UnknownRequest(kept_as)
        return trace

    def _actor(self, target_id: str) -> TargetActor:
        try:
            return self._router.actors[target_id]
        except KeyError:
            raise UnknownTarget(target_id) from None

    async def pause_target(self, target_id: str) -> None:
        """Stop routing new work to the target; in-flight attempts finish. Returns once
        the actor applied it. Raises UnknownTarget."""
        await self._command(target_id, CommandKind.PAUSE)

    async def resume_target(self, target_id: str) -> None:
        """Back to Active: breaker reset, cooldowns cleared, key re-read. Raises UnknownTarget."""
        await self._command(target_id, CommandKind.RESUME)

    async def drain_target(self, target_id: str) -> None:
        """No new work; in-flight attempts finish, then the target is Disabled.

        Returns once draining has begun (not when it ends). Raises UnknownTarget.
        """
        await self._command(target_id, CommandKind.DRAIN)

    async def disable_target(self, target_id: str) -> None:
        """No new work; in-flight attempts are cancelled and their requests fail over
        at no cost to their budgets. Raises UnknownTarget."""
        await self._command(target_id, CommandKind.DISABLE)

    async def _command(self, target_id: str, kind: CommandKind) -> None:
        """Apply a command here, then (with a store) fleet-wide. Raises UnknownTarget."""
        await self._actor(target_id).command(kind)
        if self.fleet is not None:
            await self.fleet.operator(target_id, kind)

    async def reload_config(self, config: SwitcherConfig) -> None:
        """Swap in ``config``: unchanged targets keep their state, changed ones keep
        health and take the new settings, removed ones drain then stop, new ones start.

        Raises ConfigError (and changes nothing) when ``config`` is not valid.
        Requests in flight finish under the settings they started with.
        """
        if not isinstance(config, SwitcherConfig):
            raise ConfigError([("$", f"expected a SwitcherConfig (got {type(config).__name__})")])
        validate_config(config)
        old_router = self._router
        new_ids = {t.target_id for t in config.targets}
        actors: list[TargetActor] = []
        for target in config.targets:
            actor = old_router.actors.get(target.target_id)
            if actor is None:
                actor = await self._start_actor(target, config)
            elif actor.target != target or self._config != config:
                await actor.command(CommandKind.RECONFIGURE, (target, config))
            actors.append(actor)
        for target_id, actor in old_router.actors.items():
            if target_id not in new_ids:
                # Returns once it is draining (or disabled, when idle); it stops by itself.
                await actor.command(CommandKind.RETIRE)
                self._retiring.append(actor)
        self._config = config
        self._settings = Settings(config)
        self._admission.reconfigure(
            concurrency_limit=config.concurrency_limit,
            queue_limit=config.queue_limit,
            backpressure_threshold=config.backpressure_threshold,
        )
        self._traces.resize(config.trace_capacity, max_bytes=config.trace_store_bytes)
        self._router = Router(actors, fallbacks=self._config.fallbacks)
        self._changed.notify()
        self.events.emit("config_reloaded", note=f"{len(actors)} targets")
        await trio.lowlevel.checkpoint()  # an unchanged config sends no command

    def models(self) -> list[str]:
        """The model names served now, for ``GET /v1/models``: each name a target
        serves by name (its ``model``, ``serves`` or discovered opencode ``models``)
        while one of its targets is neither Disabled nor Draining, and each
        ``fallbacks`` source whose chain reaches such a name. A passthrough target
        (serving ``"*"``) adds no name of its own. Calls no upstream; does not block.
        """
        return self._router.listed_models(self._config.fallbacks)

    def ready(self) -> bool:
        """True while at least one target could take a request now (for ``/readyz``)."""
        now = trio.current_time()
        return any(
            actor.ready_at(actor.target.model or "", now) <= now
            for actor in self._router.actors.values()
        )

    def statistics(self) -> SwitcherStatistics:
        return SwitcherStatistics(
            targets=len(self._router.actors),
            requests=self._requests,
            succeeded=self._succeeded,
            failed=self._failed,
            cancelled=self._cancelled,
            traces_kept=len(self._traces),
            trace_bytes=self._traces.bytes_kept,
            admission=self._admission.statistics(),
        )


@asynccontextmanager
async def open_switcher(
    config: SwitcherConfig,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    rng: random.Random | None = None,
    deadline_policies: DeadlinePolicies | None = None,
) -> AsyncIterator[Switcher]:
    """Start a switcher: one supervisor nursery running one actor per target.

    Opens no listening socket. With ``transport`` every target's client uses it (tests
    pass ``httpx.MockTransport``) and oswitch never closes it; without it each target owns
    a real connection pool. On exit every attempt still running is cancelled and every
    client oswitch created is closed. ``rng`` seeds jitter and load spreading (tests pass
    a seeded one); ``deadline_policies`` replaces the learned deadlines' defaults.
    """
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        switcher = Switcher(config, nursery, transport=transport, rng=rng or random.Random())
        switcher._policies = deadline_policies
        await switcher._start()
        try:
            yield switcher
        except BaseException as exc:
            # Raised by the caller's own code: re-raise it as it is once the actors
            # are shut down, not wrapped in the supervisor nursery's ExceptionGroup.
            body_error = exc
        finally:
            nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error
