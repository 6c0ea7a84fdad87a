"""The pure target core: one eligibility rule, one settle function, and their invariants."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from oswitch.core.backoff import BackoffSettings
from oswitch.core.breaker import BreakerSettings, BreakerState
from oswitch.core.error_class import ErrorClass
from oswitch.core.target_health import (
    EVENT_ONLY,
    AttemptEnd,
    Do,
    Emit,
    HealthSettings,
    RateLimit,
    TargetCondition,
    TargetHealth,
    TargetState,
    Unready,
)

RNG = random.Random(0)


def health_settings(**fields: Any) -> HealthSettings:
    base: dict[str, Any] = {
        "passthrough": False,
        "concurrency_limit": 2,
        "breaker": BreakerSettings(failure_threshold=2, half_open_after_s=10.0),
        "backoff": BackoffSettings(base_s=1.0, multiplier=2.0, max_s=8.0, jitter="none"),
        "quota_cooldown_s": 3600.0,
        "health_half_life_s": 30.0,
        "rate_limit": None,
    }
    base.update(fields)
    return HealthSettings(**base)


def new_health(now: float = 0.0, **fields: Any) -> TargetHealth:
    return TargetHealth(health_settings(**fields), now=now)


def fail(
    health: TargetHealth,
    error_class: ErrorClass,
    now: float,
    *,
    model: str = "m",
    retry_after: float | None = None,
) -> list[Any]:
    """Begin one attempt at ``now`` and settle it as a failure of ``error_class``."""
    begun = health.begin(model, now, load=0)
    assert begun is not None
    end = AttemptEnd(
        epoch=begun[0], served_model=model, error_class=error_class, retry_after=retry_after
    )
    return health.settle(end, now, RNG)


# ---- the reasons, one by one --------------------------------------------------------


def test_a_fresh_target_is_eligible_now() -> None:
    """A new active target has no reason to wait: eligible, until in the past."""
    eligibility = new_health().eligibility("m", 5.0, load=0)
    assert (eligibility.ok, eligibility.reason, eligibility.until <= 5.0) == (True, None, True)


def test_an_inactive_target_waits_for_an_operator() -> None:
    """Paused (or Draining, Disabled): inactive, and no clock ends it."""
    health = new_health()
    health.set_state(TargetState.PAUSED, reason="test")
    eligibility = health.eligibility("m", 0.0, load=0)
    assert (eligibility.reasons, eligibility.until) == ((Unready.INACTIVE,), math.inf)


def test_a_blocked_target_waits_for_an_operator_or_a_new_key() -> None:
    """ReauthRequired: blocked, no clock ends it, and its condition says which block."""
    health = new_health()
    effects = health.block(TargetCondition.REAUTH_REQUIRED, reason="test", now=0.0)
    assert effects == [
        Emit("target_condition", {"condition": "ReauthRequired", "note": "test"}),
        Do.WATCH_CREDENTIAL,
        Do.NOTIFY,
    ]
    eligibility = health.eligibility("m", 0.0, load=0)
    assert (eligibility.reasons, eligibility.until) == ((Unready.BLOCKED,), math.inf)
    assert health.condition(0.0) is TargetCondition.REAUTH_REQUIRED


def test_a_quota_waits_for_the_providers_delay() -> None:
    """QuotaExhausted with a delay: out until then, and the event carries the delay."""
    health = new_health()
    effects = fail(health, ErrorClass.QUOTA_EXHAUSTED, 10.0, retry_after=60.0)
    assert effects == [
        Emit("target_condition", {"condition": "QuotaExhausted", "retry_after": 60.0})
    ]
    eligibility = health.eligibility("m", 10.0, load=0)
    assert (eligibility.reasons, eligibility.until) == ((Unready.QUOTA,), 70.0)
    assert health.condition(10.0) is TargetCondition.QUOTA_EXHAUSTED
    assert health.eligibility("m", 70.0, load=0).ok


def test_a_quota_without_a_delay_lasts_the_quota_cooldown() -> None:
    """QuotaExhausted with no delay: out for quota_cooldown_s."""
    health = new_health()
    fail(health, ErrorClass.QUOTA_EXHAUSTED, 0.0)
    assert health.eligibility("m", 0.0, load=0).until == 3600.0


def test_a_rate_limit_cools_until_the_delay_and_says_it_is_a_rate_limit() -> None:
    """RateLimited with a delay: cooling until then, and rate_limited (not a breaker failure)."""
    health = new_health()
    assert fail(health, ErrorClass.RATE_LIMITED, 0.0, retry_after=3.0) == []
    eligibility = health.eligibility("m", 1.0, load=0)
    assert (eligibility.reasons, eligibility.until) == ((Unready.COOLING,), 3.0)
    assert (eligibility.rate_limited, eligibility.busy) == (True, False)
    assert health.condition(1.0) is TargetCondition.COOLING_DOWN
    assert health.cooldown_until(1.0) == 3.0


def test_a_shorter_delay_never_shortens_a_running_cooldown() -> None:
    """Two attempts in flight both rate-limited, the later with a shorter delay: the
    cooldown keeps the longer end (on a passthrough target's model too)."""
    for passthrough in (False, True):
        health = new_health(passthrough=passthrough)
        first, second = health.begin("m", 0.0, load=0), health.begin("m", 0.0, load=1)
        assert first is not None and second is not None
        for begun, delay in ((first, 60.0), (second, 1.0)):
            end = AttemptEnd(
                epoch=begun[0],
                served_model="m",
                error_class=ErrorClass.RATE_LIMITED,
                retry_after=delay,
            )
            health.settle(end, 0.0, RNG)
        assert health.eligibility("m", 0.0, load=0).until == 60.0


def test_a_shorter_quota_delay_never_shortens_the_quota() -> None:
    """Two attempts in flight both out of quota, the later with a shorter delay: the
    quota deadline keeps the longer end."""
    health = new_health()
    first, second = health.begin("m", 0.0, load=0), health.begin("m", 0.0, load=1)
    assert first is not None and second is not None
    for begun, delay in ((first, 600.0), (second, 60.0)):
        end = AttemptEnd(epoch=begun[0], error_class=ErrorClass.QUOTA_EXHAUSTED, retry_after=delay)
        health.settle(end, 0.0, RNG)
    assert (health.eligibility("m", 0.0, load=0).until, health.cooldown_until(0.0)) == (
        600.0,
        600.0,
    )


def test_rate_limits_without_a_delay_back_off_longer_each_time() -> None:
    """Consecutive rate limits with no delay cool for the backoff of the streak: 1 s, 2 s,
    4 s; a success resets the streak."""
    health = new_health()
    untils = []
    for now in (0.0, 10.0, 20.0):
        fail(health, ErrorClass.RATE_LIMITED, now)
        untils.append(health.eligibility("m", now, load=0).until - now)
    assert untils == [1.0, 2.0, 4.0]
    begun = health.begin("m", 30.0, load=0)
    assert begun is not None
    health.settle(AttemptEnd(epoch=begun[0], succeeded=True), 30.0, RNG)
    fail(health, ErrorClass.RATE_LIMITED, 40.0)
    assert health.eligibility("m", 40.0, load=0).until == 41.0


def test_an_overloaded_model_cools_at_most_the_short_cooldown() -> None:
    """ModelUnavailable without a delay: a growing pause capped at 5 s, and a breaker failure."""
    health = new_health(
        breaker=BreakerSettings(failure_threshold=100),
        backoff=BackoffSettings(base_s=4.0, multiplier=2.0, max_s=30.0, jitter="none"),
    )
    fail(health, ErrorClass.MODEL_UNAVAILABLE, 0.0)
    assert health.eligibility("m", 0.0, load=0).until == 4.0
    fail(health, ErrorClass.MODEL_UNAVAILABLE, 10.0)
    assert health.eligibility("m", 10.0, load=0).until == 15.0
    assert health.breaker.statistics(10.0).consecutive_failures == 2


def test_a_passthrough_target_cools_only_the_model_that_failed() -> None:
    """Passthrough: a rate limit on one model leaves its other models, and the whole target,
    eligible."""
    health = new_health(passthrough=True)
    fail(health, ErrorClass.RATE_LIMITED, 0.0, model="slow-model", retry_after=30.0)
    assert health.eligibility("slow-model", 1.0, load=0).reasons == (Unready.COOLING,)
    assert health.eligibility("other-model", 1.0, load=0).ok
    assert health.eligibility(None, 1.0, load=0).ok
    assert health.condition(1.0) is TargetCondition.HEALTHY
    assert health.model_cooldowns(1.0) == {"slow-model": 30.0}
    assert health.cooldown_until(1.0) is None


def test_an_open_breaker_waits_until_it_turns_half_open() -> None:
    """Two breaker failures open it: out until half_open_after_s later, then a probe."""
    health = new_health()
    fail(health, ErrorClass.TRANSIENT_SERVER_FAILURE, 0.0)
    effects = fail(health, ErrorClass.TRANSIENT_SERVER_FAILURE, 1.0)
    assert effects == [Emit("breaker", {"state": "Open", "note": "2 consecutive failures"})]
    eligibility = health.eligibility("m", 2.0, load=0)
    assert (eligibility.reasons, eligibility.until) == ((Unready.BREAKER_OPEN,), 11.0)
    assert health.condition(2.0) is TargetCondition.CIRCUIT_OPEN
    probe = health.eligibility("m", 11.0, load=0)
    assert (probe.ok, probe.probe) == (True, True)
    assert health.condition(11.0) is TargetCondition.HALF_OPEN


def test_a_busy_probe_waits_for_the_probe_to_end() -> None:
    """Half-open with its one probe slot taken: probe_busy, no clock ends it, busy."""
    health = new_health()
    fail(health, ErrorClass.TRANSIENT_SERVER_FAILURE, 0.0)
    fail(health, ErrorClass.TRANSIENT_SERVER_FAILURE, 0.0)
    assert health.begin("m", 10.0, load=0) is not None
    eligibility = health.eligibility("m", 10.0, load=1)
    assert (eligibility.reasons, eligibility.until) == ((Unready.PROBE_BUSY,), math.inf)
    assert eligibility.busy
    assert health.begin("m", 10.0, load=1) is None


def test_full_slots_wait_for_an_attempt_to_end() -> None:
    """concurrency_limit attempts ahead: slots_full, no clock ends it, busy."""
    eligibility = new_health().eligibility("m", 0.0, load=2)
    assert (eligibility.reasons, eligibility.until, eligibility.busy) == (
        (Unready.SLOTS_FULL,),
        math.inf,
        True,
    )


def test_full_slots_on_a_cooling_target_are_not_worth_waiting_for() -> None:
    """busy is only for a target an attempt's end frees: one also cooling is not busy."""
    health = new_health()
    fail(health, ErrorClass.RATE_LIMITED, 0.0, retry_after=60.0)
    assert not health.eligibility("m", 0.0, load=2).busy


def test_an_empty_bucket_waits_for_the_next_token() -> None:
    """rate_limit with burst 1 at 1 per second: after one attempt, no token for 1 s."""
    health = new_health(rate_limit=RateLimit(rate_per_s=1.0, burst=1))
    assert health.begin("m", 0.0, load=0) is not None
    eligibility = health.eligibility("m", 0.25, load=0)
    assert (eligibility.reasons, eligibility.until) == ((Unready.NO_TOKEN,), 1.0)
    assert health.eligibility("m", 1.0, load=0).ok


def test_every_reason_that_holds_is_listed_in_order() -> None:
    """A paused, blocked, cooling target with full slots lists all four, inactive first."""
    health = new_health()
    fail(health, ErrorClass.RATE_LIMITED, 0.0, retry_after=60.0)
    health.set_state(TargetState.PAUSED, reason="test")
    health.block(TargetCondition.POLICY_BLOCKED, reason="test", now=0.0)
    eligibility = health.eligibility("m", 0.0, load=2)
    assert eligibility.reasons == (
        Unready.INACTIVE,
        Unready.BLOCKED,
        Unready.COOLING,
        Unready.SLOTS_FULL,
    )
    assert (eligibility.reason, eligibility.rate_limited) == (Unready.INACTIVE, False)


# ---- settling: the effects the actor carries out -------------------------------------


def test_an_auth_failure_asks_for_the_credential_to_be_re_read() -> None:
    """AuthFailure: the actor is asked to re-read the key once; nothing is blocked yet."""
    health = new_health()
    assert fail(health, ErrorClass.AUTH_FAILURE, 0.0) == [Do.REFRESH_CREDENTIAL]
    assert health.blocked is None


def test_a_permission_failure_blocks_the_target() -> None:
    """PermissionFailure: PolicyBlocked, announced, waiters woken, no credential watch."""
    health = new_health()
    assert fail(health, ErrorClass.PERMISSION_FAILURE, 0.0) == [
        Emit("target_condition", {"condition": "PolicyBlocked", "note": "PermissionFailure"}),
        Do.NOTIFY,
    ]
    assert health.blocked is TargetCondition.POLICY_BLOCKED


def test_a_local_fault_is_counted_but_not_held_against_the_target() -> None:
    """A local fault (our own pool) is counted by class, changes no health and frees the probe."""
    health = new_health()
    begun = health.begin("m", 0.0, load=0)
    assert begun is not None
    end = AttemptEnd(epoch=begun[0], error_class=ErrorClass.TRANSPORT_FAILURE, local_fault=True)
    assert health.settle(end, 0.0, RNG) == []
    assert health.failures == {"TransportFailure": 1}
    assert health.breaker.statistics(0.0).consecutive_failures == 0


def test_probes_that_close_the_breaker_start_the_averages_afresh() -> None:
    """HalfOpen → Closed after success_threshold probe successes: the old failures are
    forgotten (health 1.0 again)."""
    health = new_health(breaker=BreakerSettings(failure_threshold=1, success_threshold=1))
    fail(health, ErrorClass.TRANSIENT_SERVER_FAILURE, 0.0)
    begun = health.begin("m", 30.0, load=0)
    assert begun is not None
    assert health.health.health_at(30.0) < 1.0
    effects = health.settle(AttemptEnd(epoch=begun[0], succeeded=True), 30.0, RNG)
    assert effects == [Emit("breaker", {"state": "Closed", "note": "1 probe successes"})]
    assert health.health.health_at(30.0) == 1.0


def test_clear_resets_breaker_cooldowns_and_quota() -> None:
    """An operator's resume clears every cooldown, the quota and the open breaker."""
    health = new_health(passthrough=True, breaker=BreakerSettings(failure_threshold=1))
    fail(health, ErrorClass.RATE_LIMITED, 0.0, model="x", retry_after=50.0)
    fail(health, ErrorClass.TRANSIENT_SERVER_FAILURE, 0.0)
    assert health.condition(1.0) is TargetCondition.CIRCUIT_OPEN
    assert health.clear(1.0) == [Emit("breaker", {"state": "Closed", "note": "reset"})]
    assert health.eligibility("x", 1.0, load=0).ok
    fail(health, ErrorClass.QUOTA_EXHAUSTED, 1.0)
    health.clear(2.0)
    assert health.eligibility("x", 2.0, load=0).ok
    assert health.model_cooldowns(2.0) == {}


def test_reconfigure_keeps_the_state_and_takes_new_rules() -> None:
    """A reload with a new breaker and bucket starts those afresh and keeps cooldowns."""
    health = new_health()
    fail(health, ErrorClass.RATE_LIMITED, 0.0, retry_after=50.0)
    limited = health_settings(rate_limit=RateLimit(rate_per_s=1.0, burst=1))
    health.reconfigure(limited, 1.0)
    assert health.eligibility("m", 1.0, load=0).reasons == (Unready.COOLING,)
    assert health.begin("m", 50.0, load=0) is not None
    assert health.eligibility("m", 50.0, load=0).reasons == (Unready.NO_TOKEN,)


# ---- invariants over random histories ------------------------------------------------

# Weighted towards the classes that cool a target down or count against its breaker.
_COOLING = [ErrorClass.RATE_LIMITED, ErrorClass.MODEL_UNAVAILABLE]
_BREAKER = [ErrorClass.TRANSIENT_SERVER_FAILURE, ErrorClass.TRANSPORT_FAILURE]
ERROR_CLASSES = st.sampled_from(_COOLING * 3 + _BREAKER * 6 + list(ErrorClass))
MODELS = ("a", "b")
DELAYS = st.none() | st.floats(min_value=0.0, max_value=30.0)
LATER = (0.001, 0.5, 5.0, 31.0)  # looks ahead, for the monotonicity invariant
OPERATOR_CHANGES: list[TargetState | TargetCondition | None] = [
    *[TargetState.ACTIVE, None] * 4,
    TargetState.PAUSED,
    TargetState.DRAINING,
    TargetState.DISABLED,
    TargetCondition.REAUTH_REQUIRED,
    TargetCondition.POLICY_BLOCKED,
]


class TargetHealthHistory(RuleBasedStateMachine):
    """Random histories of one target: attempts begun and ended (with any class, delay
    and timing), time passing, operators pausing and blocking it. After every step the
    invariants below must hold."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.open: list[tuple[int, str]] = []  # (epoch, model) of attempts not yet ended
        self.seen: dict[str | None, float] = {}  # the latest end seen of each cooldown
        self.rng = random.Random(1)
        self.health = new_health()

    @initialize(passthrough=st.booleans(), probes=st.integers(1, 2), bucket=st.booleans())
    def start(self, passthrough: bool, probes: int, bucket: bool) -> None:
        self.health = new_health(
            passthrough=passthrough,
            concurrency_limit=3,
            quota_cooldown_s=20.0,  # short, so that a history does not end at its first quota
            breaker=BreakerSettings(
                failure_threshold=2,
                half_open_after_s=5.0,
                half_open_max_probes=probes,
                success_threshold=2,
            ),
            rate_limit=RateLimit(rate_per_s=0.5, burst=2) if bucket else None,
        )

    @rule(seconds=st.floats(min_value=0.0, max_value=20.0))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule(model=st.sampled_from(MODELS), count=st.integers(1, 3))
    def begin(self, model: str, count: int) -> None:
        for _ in range(count):
            begun = self.health.begin(model, self.now, load=len(self.open))
            if begun is not None:
                self.open.append((begun[0], model))

    @precondition(lambda self: self.open)
    @rule(
        slot=st.integers(0, 5),
        verdict=st.sampled_from(["failure"] * 3 + ["success", "none"]),
        error_class=ERROR_CLASSES,
        delay=DELAYS,
    )
    def end(self, slot: int, verdict: str, error_class: ErrorClass, delay: float | None) -> None:
        epoch, model = self.open.pop(slot % len(self.open))
        end = AttemptEnd(
            epoch=epoch,
            served_model=model,
            succeeded=verdict == "success",
            error_class=error_class if verdict == "failure" else None,
            retry_after=delay,
        )
        self.health.settle(end, self.now, self.rng)

    @rule(change=st.sampled_from(OPERATOR_CHANGES))
    def operator(self, change: TargetState | TargetCondition | None) -> None:
        # Mostly back to service: otherwise a history stalls out of it.
        if isinstance(change, TargetState):
            self.health.set_state(change, reason="test")
        else:
            self.health.block(change, reason="test", now=self.now)

    @invariant()
    def a_cooldown_never_shortens(self) -> None:
        running: dict[str | None, float] = dict(self.health.model_cooldowns(self.now))
        whole = self.health.cooldown_until(self.now)
        if whole is not None:
            running[None] = whole
        for model, until in running.items():
            assert until >= self.seen.get(model, -math.inf)
            self.seen[model] = until

    @invariant()
    def an_ineligible_target_says_until_when(self) -> None:
        load = len(self.open)
        for model in MODELS:
            eligibility = self.health.eligibility(model, self.now, load=load)
            assert eligibility.ok == (eligibility.until <= self.now)
            assert eligibility.ok == (eligibility.reason is None)
            if eligibility.ok:
                continue
            needs_an_event = any(reason in EVENT_ONLY for reason in eligibility.reasons)
            assert math.isinf(eligibility.until) == needs_an_event
            if not needs_an_event:
                later = self.health.eligibility(model, eligibility.until, load=load)
                assert later.ok, (eligibility, later)

    @invariant()
    def eligibility_is_monotone_in_time(self) -> None:
        load = len(self.open)
        for model in MODELS:
            before = self.health.eligibility(model, self.now, load=load)
            for wait in LATER:
                after = self.health.eligibility(model, self.now + wait, load=load)
                assert set(after.reasons) <= set(before.reasons)
                assert after.ok or not before.ok
                # A token bucket's refill time is now + deficit / rate, so reading it a
                # moment later may round one ulp later; anything more is a real regression.
                slack = 1e-9 * max(1.0, abs(before.until)) if math.isfinite(before.until) else 0
                assert after.until <= before.until + slack or before.until <= self.now + wait

    @invariant()
    def a_probe_slot_is_never_granted_twice(self) -> None:
        stats = self.health.breaker.statistics(self.now)
        limit = self.health.settings.breaker.half_open_max_probes
        assert stats.probes_in_flight <= limit
        if stats.state is BreakerState.HALF_OPEN and stats.probes_in_flight == limit:
            for model in MODELS:
                assert (
                    Unready.PROBE_BUSY in self.health.eligibility(model, self.now, load=0).reasons
                )


TargetHealthHistory.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None
)
test_target_health_invariants = TargetHealthHistory.TestCase


@pytest.mark.parametrize("limit", [1, 2])
def test_concurrent_probes_take_the_slots_one_each(limit: int) -> None:
    """Two requests in the same instant on a half-open target: the slots are taken once each."""
    health = new_health(breaker=BreakerSettings(failure_threshold=1, half_open_max_probes=limit))
    fail(health, ErrorClass.TRANSIENT_SERVER_FAILURE, 0.0)
    granted = [health.begin("m", 30.0, load=0) is not None for _ in range(3)]
    assert granted == [True] * limit + [False] * (3 - limit)
