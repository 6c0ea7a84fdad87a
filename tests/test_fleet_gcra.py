"""The pure GCRA (the per-replica limiter while degraded, and the store script's
oracle) and the key layout."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from oswitch.fleet.gcra import GcraLimit, LocalGcra, gcra_adjust, gcra_check
from oswitch.fleet.keys import events_channel, target_keys
from oswitch.fleet.scripts import parse_admit, parse_state

LIMIT = GcraLimit(rate=10.0, burst=3.0)


def test_a_full_bucket_admits_the_burst_then_one_per_interval() -> None:
    """From idle, ``burst`` requests pass at once; the next waits exactly one interval."""
    limiter = LocalGcra(LIMIT)
    assert [limiter.take(0.0).allowed for _ in range(3)] == [True, True, True]
    denied = limiter.take(0.0)
    assert not denied.allowed and math.isclose(denied.retry_after, 0.1)
    assert limiter.take(0.1).allowed


def test_a_denial_changes_nothing_and_its_retry_after_is_exact() -> None:
    """Denied requests consume nothing; at ``now + retry_after`` the request passes."""
    limiter = LocalGcra(LIMIT)
    for _ in range(3):
        limiter.take(5.0)
    tat = limiter.tat
    verdict = limiter.take(5.01)
    assert not verdict.allowed and limiter.tat == tat
    assert limiter.take(5.01 + verdict.retry_after).allowed


def test_a_cost_above_the_burst_waits_for_a_full_bucket_not_forever() -> None:
    """A token request larger than the bucket is charged as a full bucket."""
    tokens = GcraLimit(rate=100.0, burst=1000.0)
    verdict, tat = gcra_check(tokens, None, 0.0, 5000.0)
    assert verdict.allowed and tat == 10.0
    verdict, _ = gcra_check(tokens, tat, 0.0, 5000.0)
    assert not verdict.allowed and math.isclose(verdict.retry_after, 10.0)


def test_settling_refunds_never_below_now_and_charges_extra() -> None:
    """A refund moves the arrival time back (not before now); extra usage moves it on."""
    tokens = GcraLimit(rate=100.0, burst=1000.0)
    assert gcra_adjust(tokens, 3.0, 2.0, -500.0) == 2.0
    assert gcra_adjust(tokens, 3.0, 2.0, 100.0) == 4.0
    assert gcra_adjust(tokens, None, 2.0, -5.0) is None


def test_a_share_scales_rate_and_burst_keeping_one_request() -> None:
    """A degraded replica's share of a limit keeps at least a burst of one."""
    assert LIMIT.scaled(0.5) == GcraLimit(rate=5.0, burst=1.5)
    assert GcraLimit(rate=1.0, burst=1.0).scaled(1 / 3).burst == 1.0


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.3), min_size=1, max_size=60),
    rate=st.floats(min_value=1.0, max_value=50.0),
    burst=st.integers(min_value=1, max_value=10),
)
def test_no_window_admits_more_than_burst_plus_rate_times_its_length(
    gaps: list[float], rate: float, burst: int
) -> None:
    """In every window [a, b] of admissions, at most ``burst + rate*(b-a)`` pass."""
    limiter = LocalGcra(GcraLimit(rate=rate, burst=float(burst)))
    now, admitted = 0.0, []
    for gap in gaps:
        now += gap
        if limiter.take(now).allowed:
            admitted.append(now)
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            assert j - i + 1 <= burst + rate * (admitted[j] - start) + 1e-6


def test_every_key_of_a_target_shares_one_hash_tag_no_id_can_break() -> None:
    """Keys are tagged per target (one Redis Cluster slot) and ids cannot close the tag."""
    keys = target_keys("osw", "a}b{c")
    assert keys.all() == [
        "osw:{t:a%7Db%7Bc}:rpm",
        "osw:{t:a%7Db%7Bc}:tpm",
        "osw:{t:a%7Db%7Bc}:st",
    ]
    assert events_channel("osw") == "osw:ev"


def test_script_replies_parse_and_no_clock_denials_wait_forever() -> None:
    """An operator or block denial (-1) reads as an infinite wait; hashes as state."""
    reply = parse_admit([0, b"-1", b"4", 0, b"1700000000000000", b"op:Paused"])
    assert (reply.allowed, reply.wait_s, reply.gen, reply.why) == (False, math.inf, 4, "op:Paused")
    state = parse_state([b"brk", b"open", b"open_until", b"17", b"by", b"r1", b"junk", b"x"])
    assert (state.breaker, state.open_until_us, state.by, state.gen) == ("open", 17, "r1", 0)
