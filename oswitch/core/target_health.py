"""A target's health: its state and the rules that move it, with time passed in.

The target actor (``oswitch.runtime.target``) owns one :class:`TargetHealth` and is
its only writer. It holds everything that decides whether the target may take an
attempt: the lifecycle state an operator sets, ReauthRequired / PolicyBlocked, the
quota deadline, cooldowns (one per served model on a passthrough target), the
rate-limit and overload streaks that lengthen them, the circuit breaker (the
``CircuitBreaker`` object, driven from here), the token bucket, the health averages
and the target's counters.

Two questions, each answered in one place:

- :meth:`TargetHealth.eligibility`: may this target take this model now, and if
  not, why and until when. Every other reading (``ready_at``, ``busy``,
  ``rate_limited``, ``condition``, ``wants_probe``, the listing's cooldown fields)
  is derived from it.
- :meth:`TargetHealth.settle`: what the end of an attempt does to the target. It
  updates the state and returns the effects (plain data) the actor must carry
  out: events to emit, the credential to re-read, the credential watch to start,
  waiters to wake.

Like the breaker it is pure bookkeeping: no trio, no httpx, no I/O; time is a float
passed in and randomness is injected.
"""

from __future__ import annotations

import enum
import math
import random
from collections import Counter
from collections.abc import Mapping

import attrs

from oswitch.core.backoff import BackoffSettings, backoff_delay
from oswitch.core.breaker import BreakerSettings, BreakerState, CircuitBreaker, Transition
from oswitch.core.bucket import TokenBucket
from oswitch.core.clip import clip
from oswitch.core.eligibility import ELIGIBLE, EVENT_ONLY, Eligibility, Unready
from oswitch.core.error_class import ErrorClass
from oswitch.core.immutable import immutable
from oswitch.core.policy import SHORT_COOLDOWN_S, TargetEffect, recovery_for
from oswitch.core.scoring import HealthTracker
from oswitch.core.shared_hold import NO_HOLD, SharedHold

# The eligibility vocabulary (Unready, Eligibility, EVENT_ONLY) lives in
# oswitch.core.eligibility; it stays importable from here with the rules that use it.
__all__ = [
    "EVENT_ONLY",
    "MAX_MODEL_COOLDOWNS",
    "AttemptEnd",
    "Cooldown",
    "Do",
    "Effect",
    "Eligibility",
    "Emit",
    "HealthSettings",
    "RateLimit",
    "TargetCondition",
    "TargetHealth",
    "TargetState",
    "Unready",
]

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
class RateLimit:
    """A target's own token bucket: ``rate_per_s`` refilled, at most ``burst`` at once."""

    rate_per_s: float
    burst: int


@attrs.frozen(kw_only=True)
class HealthSettings:
    """One target's health rules in seconds, as the runtime derives them from the config
    (``oswitch.runtime.settings``). ``passthrough``: the target has no ``model`` of its
    own and keeps its cooldowns per served model. ``rate_limit`` None: no bucket."""

    passthrough: bool
    concurrency_limit: int
    breaker: BreakerSettings
    backoff: BackoffSettings
    quota_cooldown_s: float
    health_half_life_s: float
    rate_limit: RateLimit | None


@attrs.frozen
class Cooldown:
    """A cooldown's end and the error class that started (or last extended) it."""

    until: float
    cause: ErrorClass


@immutable(kw_only=True)
class AttemptEnd:
    """How an attempt ended, in the terms the health rules use.

    ``succeeded``: a success. Otherwise ``error_class`` is a failure's class (with the
    provider's ``retry_after`` and whether it was a ``local_fault``), and None is an
    end with no verdict on the target (cancelled, refused, torn down).
    ``epoch`` is the breaker epoch :meth:`TargetHealth.begin` returned.
    """

    epoch: int
    served_model: str = ""
    duration_s: float = 0.0
    succeeded: bool = False
    error_class: ErrorClass | None = None
    retry_after: float | None = None
    local_fault: bool = False


@attrs.frozen
class Emit:
    """Emit the audit event ``event`` for this target with ``fields``."""

    event: str
    fields: Mapping[str, object]


class Do(enum.Enum):
    """An effect with no data of its own."""

    REFRESH_CREDENTIAL = "refresh_credential"
    """Re-read the key once (an AuthFailure). Unchanged: call
    ``block(REAUTH_REQUIRED, ...)``; changed: send the request here again."""
    WATCH_CREDENTIAL = "watch_credential"
    """Start re-reading the key's variable until a new key shows up."""
    NOTIFY = "notify"
    """Eligibility changed outside an attempt's end: wake requests waiting for it."""


Effect = Emit | Do


def _new_bucket(settings: HealthSettings, now: float) -> TokenBucket | None:
    limit = settings.rate_limit
    if limit is None:
        return None
    return TokenBucket(rate_per_s=limit.rate_per_s, burst=float(limit.burst), now=now)


class TargetHealth:
    """One target's health state and rules (see the module doc). Not thread- or
    task-safe by design: the target's actor is its only writer; others only read."""

    def __init__(
        self,
        settings: HealthSettings,
        *,
        now: float,
        state: TargetState = TargetState.ACTIVE,
        blocked: TargetCondition | None = None,
    ) -> None:
        self.settings = settings
        self._state = state
        self._blocked = blocked  # ReauthRequired / PolicyBlocked
        self._quota_until = -math.inf
        self._cooldown: Cooldown | None = None  # the whole target's
        self._model_cooldowns: dict[str, Cooldown] = {}  # a passthrough target's, by model
        self._rate_limit_streak = 0
        self._unavailable_streak = 0
        self.breaker = CircuitBreaker(settings.breaker)
        self._bucket = _new_bucket(settings, now)
        self.health = HealthTracker(forget_half_life_s=settings.health_half_life_s)
        self.attempts = 0
        self.successes = 0
        self.failures: Counter[str] = Counter()
        # The class of the latest failed attempt and when it ended, for operators
        # (``ctl list-targets``, the dashboard); None until one fails.
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.shared: SharedHold = NO_HOLD  # set by a fleet's link (oswitch.fleet)

    @property
    def state(self) -> TargetState:
        return self._state

    @property
    def blocked(self) -> TargetCondition | None:
        """ReauthRequired or PolicyBlocked, else None."""
        return self._blocked

    # ---- the one eligibility rule ------------------------------------------------

    def eligibility(self, model: str | None, now: float, *, load: int) -> Eligibility:
        """May the target take an attempt for ``model`` at ``now`` with ``load``
        attempts ahead of it? ``model`` None asks about the whole target (a passthrough
        target's per-model cooldowns left out). Never raises."""
        reasons: list[Unready] = []
        if self._state is not TargetState.ACTIVE:
            reasons.append(Unready.INACTIVE)
        if self._blocked is not None:
            reasons.append(Unready.BLOCKED)
        shared = self.shared
        until = max(self._quota_until, shared.quota_until)
        if until > now:
            reasons.append(Unready.QUOTA)
        cause, cooldown = None, self._cooldown_for(model)
        if shared.cool_until > now and (cooldown is None or shared.cool_until > cooldown.until):
            cooldown = Cooldown(shared.cool_until, shared.cool_cause)
        if cooldown is not None:
            if cooldown.until > now:
                reasons.append(Unready.COOLING)
                cause = cooldown.cause
            until = max(until, cooldown.until)
        probe, breaker = False, self.breaker
        breaker_state = breaker.state(now)
        if breaker_state is BreakerState.OPEN or shared.open_until > now:
            reasons.append(Unready.BREAKER_OPEN)
            half_open_at = breaker.half_open_at  # set whenever the breaker is Open
            local_open = half_open_at if breaker_state is BreakerState.OPEN else None
            until = max(until, shared.open_until, -math.inf if local_open is None else local_open)
        elif breaker_state is BreakerState.HALF_OPEN:
            probe = self.wants_probe(now)
            if not probe:
                reasons.append(Unready.PROBE_BUSY)
        if load >= self.settings.concurrency_limit:
            reasons.append(Unready.SLOTS_FULL)
        if self._bucket is not None or shared.no_token_until > now:
            wait = self._bucket.wait_time(now) if self._bucket is not None else 0.0
            wait = max(wait, shared.no_token_until - now)  # the fleet's bucket too
            if wait > 0.0:
                reasons.append(Unready.NO_TOKEN)
            until = max(until, now + wait)
        if not reasons and not probe and until == -math.inf:
            return ELIGIBLE
        if any(reason in EVENT_ONLY for reason in reasons):
            until = math.inf
        return Eligibility(reasons=tuple(reasons), until=until, probe=probe, cooling_cause=cause)

    def _cooldown_for(self, model: str | None) -> Cooldown | None:
        cooldown = self._cooldown
        if model is None or not self.settings.passthrough:
            return cooldown
        own = self._model_cooldowns.get(clip(model))
        if own is None or (cooldown is not None and cooldown.until > own.until):
            return cooldown
        return own

    def wants_probe(self, now: float) -> bool:
        """Half-open with a probe slot free: an attempt now would be a probe (the
        ``probe`` of :meth:`eligibility`, readable alone because routing asks it of
        every candidate)."""
        breaker = self.breaker
        return breaker.state(now) is BreakerState.HALF_OPEN and breaker.can_attempt(now)

    # ---- readings derived from it -------------------------------------------------

    def condition(self, now: float) -> TargetCondition:
        """The target's condition at ``now`` (whatever its lifecycle state)."""
        if self._blocked is not None:
            return self._blocked
        whole = self.eligibility(None, now, load=0)
        if Unready.QUOTA in whole.reasons:
            return TargetCondition.QUOTA_EXHAUSTED
        if Unready.BREAKER_OPEN in whole.reasons:
            return TargetCondition.CIRCUIT_OPEN
        if whole.probe or Unready.PROBE_BUSY in whole.reasons:
            return TargetCondition.HALF_OPEN
        if Unready.COOLING in whole.reasons:
            return TargetCondition.COOLING_DOWN
        return TargetCondition.HEALTHY

    def cooldown_until(self, now: float) -> float | None:
        """When the whole target's cooldown or quota deadline ends, if one runs."""
        until = max(self._quota_until, self._cooldown.until if self._cooldown else -math.inf)
        until = max(until, self.shared.quota_until, self.shared.cool_until)
        return until if until > now else None

    def local_marks(self) -> tuple[Cooldown | None, float]:
        """Its own cooldown and quota deadline (a fleet's shared ones left out)."""
        return self._cooldown, self._quota_until

    def model_cooldowns(self, now: float) -> dict[str, float]:
        """A passthrough target's running cooldowns, by model."""
        return {m: c.until for m, c in self._model_cooldowns.items() if c.until > now}

    # ---- attempts -------------------------------------------------------------------

    def begin(self, model: str, now: float, *, load: int) -> tuple[int, list[Effect]] | None:
        """Start an attempt if :meth:`eligibility` allows it: take a half-open probe
        slot and a bucket token. Returns the breaker epoch to settle it with and the
        effects, or None (nothing changed) when the target may not take it."""
        if not self.eligibility(model, now, load=load).ok:
            return None
        effects = self._transition(self.breaker.begin_attempt(now))
        if self._bucket is not None:
            self._bucket.try_take(now)
        self.attempts += 1
        return self.breaker.epoch, effects

    def settle(self, end: AttemptEnd, now: float, rng: random.Random) -> list[Effect]:
        """Apply the end of an attempt begun with :meth:`begin` and return the effects
        the actor must carry out. Never raises."""
        breaker = self.breaker
        if end.succeeded:
            self.successes += 1
            self._rate_limit_streak = 0
            self._unavailable_streak = 0
            self.health.record_success(end.duration_s, now)
            return self._transition(breaker.record_success(now, epoch=end.epoch))
        error_class = end.error_class
        if error_class is not None:
            self.last_error, self.last_error_at = str(error_class), now
        if error_class is None or end.local_fault:
            breaker.release(now, epoch=end.epoch)
            if error_class is not None:
                self.failures[str(error_class)] += 1
            return []
        self.failures[str(error_class)] += 1
        recovery = recovery_for(error_class)
        effects: list[Effect] = []
        # On a passthrough target the caller names the model: a model the provider does
        # not have (a typo) says nothing of the key, and cools down that model alone.
        model_only = self.settings.passthrough and error_class is ErrorClass.MODEL_UNAVAILABLE
        if recovery.breaker_failure and not model_only:
            self.health.record_failure(now)
            effects = self._transition(breaker.record_failure(now, epoch=end.epoch))
        else:
            breaker.release(now, epoch=end.epoch)
        delay = end.retry_after
        effect = recovery.target_effect
        if effect is TargetEffect.COOLDOWN:
            if delay is None:
                delay = backoff_delay(self.settings.backoff, self._rate_limit_streak, rng)
            self._rate_limit_streak += 1
            self._cool_down(end.served_model, now + delay, error_class, now)
        elif effect is TargetEffect.SHORT_COOLDOWN:
            if delay is None:
                # An overloaded model: a short pause that grows while it stays overloaded,
                # never longer than SHORT_COOLDOWN_S (one stray 529 must not take a key
                # out for long).
                streak = self._unavailable_streak
                delay = min(SHORT_COOLDOWN_S, backoff_delay(self.settings.backoff, streak, rng))
            self._unavailable_streak += 1
            self._cool_down(end.served_model, now + delay, error_class, now)
        elif effect is TargetEffect.QUOTA_EXHAUSTED:
            quota_s = delay if delay is not None else self.settings.quota_cooldown_s
            self._quota_until = max(self._quota_until, now + quota_s)
            condition = str(TargetCondition.QUOTA_EXHAUSTED)
            effects.append(
                Emit("target_condition", {"condition": condition, "retry_after": quota_s})
            )
        elif effect is TargetEffect.REAUTH:
            effects.append(Do.REFRESH_CREDENTIAL)
        elif effect is TargetEffect.POLICY_BLOCKED:
            effects.extend(
                self.block(TargetCondition.POLICY_BLOCKED, reason=str(error_class), now=now)
            )
        return effects

    def _cool_down(self, served_model: str, until: float, cause: ErrorClass, now: float) -> None:
        # A passthrough target serves many models: one model's limit must not take the
        # key down for all of them. A cooldown never shortens.
        if not self.settings.passthrough:
            current = self._cooldown.until if self._cooldown else until
            self._cooldown = Cooldown(max(current, until), cause)
            return
        name = clip(served_model)  # a caller's name: clipped, and the table bounded
        own = self._model_cooldowns.get(name)
        self._model_cooldowns[name] = Cooldown(max(own.until, until) if own else until, cause)
        if len(self._model_cooldowns) > MAX_MODEL_COOLDOWNS:
            self._forget_cooldowns(now)

    def _forget_cooldowns(self, now: float) -> None:
        """Drop cooldowns that ended; if still too many, those ending soonest."""
        live = sorted(
            ((c.until, model) for model, c in self._model_cooldowns.items() if c.until > now),
            reverse=True,
        )[: MAX_MODEL_COOLDOWNS // 2]
        kept = {model for _, model in live}
        self._model_cooldowns = {m: c for m, c in self._model_cooldowns.items() if m in kept}

    def _transition(self, transition: Transition | None) -> list[Effect]:
        if transition is None:
            return []
        if (transition.from_state, transition.to_state) == (
            BreakerState.HALF_OPEN,
            BreakerState.CLOSED,
        ):
            # The probes proved it recovered: its old averages would only keep starving
            # it of the traffic it can take again.
            self.health = HealthTracker(forget_half_life_s=self.settings.health_half_life_s)
        fields = {"state": str(transition.to_state), "note": transition.reason}
        return [Emit("breaker", fields)]

    # ---- operator and credential changes -------------------------------------------

    def block(self, condition: TargetCondition | None, *, reason: str, now: float) -> list[Effect]:
        """Set (or with None, lift) ReauthRequired / PolicyBlocked."""
        if condition is self._blocked:
            return []
        self._blocked = condition
        shown = str(condition or self.condition(now))
        effects: list[Effect] = [Emit("target_condition", {"condition": shown, "note": reason})]
        if condition is TargetCondition.REAUTH_REQUIRED:
            effects.append(Do.WATCH_CREDENTIAL)
        effects.append(Do.NOTIFY)
        return effects

    def set_state(self, state: TargetState, *, reason: str) -> list[Effect]:
        """Move the lifecycle state (an operator, a reload, a drain that ended)."""
        if state is self._state:
            return []
        self._state = state
        return [Emit("target_state", {"state": str(state), "note": reason}), Do.NOTIFY]

    def clear(self, now: float) -> list[Effect]:
        """An operator's resume: breaker reset; cooldowns and the quota deadline gone."""
        effects = self._transition(self.breaker.reset(now))
        self.shared = NO_HOLD
        self._cooldown = None
        self._quota_until = -math.inf
        self._model_cooldowns.clear()
        self._rate_limit_streak = 0
        return effects

    def reconfigure(self, settings: HealthSettings, now: float) -> None:
        """Take reloaded settings, keeping the state: a breaker whose settings changed
        starts afresh, as does a bucket whose rate or burst changed."""
        old = self.settings
        self.settings = settings
        self.health.forget_half_life_s = settings.health_half_life_s
        if settings.breaker != self.breaker.settings:
            self.breaker = CircuitBreaker(settings.breaker)
        if settings.rate_limit != old.rate_limit:
            self._bucket = _new_bucket(settings, now)
