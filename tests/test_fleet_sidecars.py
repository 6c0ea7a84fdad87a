"""Three real ``oswitch serve`` processes sharing one redis-server behind a fake
provider that logs every arrival (bench/fleet.py). Per-second limits keep each
run short; counts of arrivals are asserted, never durations. One replica's clocks
run 5 s ahead in every store-backed run: decisions are on the store's clock."""

from __future__ import annotations

import itertools
from pathlib import Path

import httpx
import trio
from redis_server import RedisServer, prefix

from bench.fleet import (
    FleetTarget,
    drive,
    fleet_config,
    healthz,
    max_in_window,
    open_fleet,
    open_provider,
    window_bound,
)
from oswitch.testing.provider import FakeProvider
from oswitch.testing.replies import rate_limited, reply, server_error

RATE, BURST = 10.0, 2  # per second: requests_per_minute 600
LIMITED = FleetTarget(target_id="limited", key="key-limited", requests_per_minute=600, burst=2)
SKEWS = (0.0, 0.0, 5.0)


def _arrivals(fake: FakeProvider, key: str) -> list[float]:
    return [call.at for call in fake.calls if call.route == key]


# Admission happens on the store's clock, arrival a moment later at the provider: two
# admissions an interval apart may arrive closer by the spread of that delay.
JITTER_S = 0.05


def _worst_excess(times: list[float]) -> float:
    """How far the busiest window of each length is over the limit's bound (<= 0: within)."""
    return max(
        max_in_window(times, window) - window_bound(RATE, BURST, window + JITTER_S)
        for window in (0.25, 0.5, 1.0, 2.0)
    )


async def test_the_fleet_keeps_a_keys_limit_that_separate_replicas_exceed_three_times(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Sharing the store, three replicas never exceed burst + rate × W in any window
    (one of them 5 s skewed); each on its own, they send about three times as much."""
    shared, alone = FakeProvider().on(LIMITED.key, reply()), FakeProvider().on(LIMITED.key, reply())
    with trio.fail_after(60):
        for fake, store in ((shared, redis_server.url), (alone, None)):
            async with open_provider(fake) as port:
                toml = fleet_config([LIMITED], provider_port=port, store_url=store, prefix=prefix())
                async with open_fleet(toml, tmp_path, skews=SKEWS if store else ()) as fleet:
                    result = await drive(fleet, "limited", duration=1.5, per_replica=2)
            assert set(result.statuses) <= {200}
    assert _worst_excess(_arrivals(shared, LIMITED.key)) <= 0
    busiest_second = max_in_window(_arrivals(alone, LIMITED.key), 1.0)
    assert busiest_second > 2 * window_bound(RATE, BURST, 1.0)


async def test_one_429_stops_every_replica_and_a_dead_key_gets_one_probe_per_interval(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A 429 with Retry-After 2 s seen by one replica: no replica sends to that key
    until it ends, then they resume. A failing key's breaker, opened by one replica,
    lets one probe through per half-open interval for the whole fleet."""
    cooled = FleetTarget(target_id="cooled", key="key-cooled")
    dead = FleetTarget(
        target_id="dead", key="key-dead", failure_threshold=2, half_open_after_ms=500.0
    )
    fake = FakeProvider()
    fake.on(cooled.key, rate_limited(2.0), reply())
    fake.on(dead.key, server_error())
    with trio.fail_after(60):
        async with open_provider(fake) as port:
            toml = fleet_config(
                [cooled, dead], provider_port=port, store_url=redis_server.url, prefix=prefix()
            )
            async with open_fleet(toml, tmp_path, skews=SKEWS) as fleet:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(lambda: drive(fleet, "cooled", duration=3.0, per_replica=1))
                    nursery.start_soon(lambda: drive(fleet, "dead", duration=3.0, per_replica=1))
    cooled_at = _arrivals(fake, cooled.key)
    first = cooled_at[0]
    # Attempts admitted before the 429's cooldown was written may still land just
    # after it; from then (the write plus propagation, 100 ms) to its end, nothing.
    during = [round(at - first, 3) for at in cooled_at[1:] if first + 0.1 < at < first + 1.95]
    assert during == []
    assert any(at >= first + 2.0 - 0.05 for at in cooled_at[1:])  # they resumed
    dead_at = sorted(_arrivals(fake, dead.key))
    # The first failures (two on some replica) open the fleet's breaker at once; the
    # attempts already admitted land within a few ms. From then on: probes only.
    probes = [at for at in dead_at if at > dead_at[0] + 0.3]
    for earlier, later in itertools.pairwise(probes):
        assert later - earlier >= 0.5 - 0.05
    assert probes  # and the fleet kept probing, one at a time
    assert len(dead_at) - len(probes) <= 3 * 2  # before: at most two per replica


async def test_store_faults_fail_no_request_and_keep_the_limit_within_the_local_share(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """SCRIPT FLUSH, SIGSTOP/SIGCONT and finally SIGKILL of the store mid-run, under
    a load the limit can carry: no client request fails because of it; once killed,
    every replica reports the store degraded in /healthz and the fleet stays within
    the sum of the local shares."""
    fake = FakeProvider().on(LIMITED.key, reply())
    with trio.fail_after(60):
        async with open_provider(fake) as port:
            toml = fleet_config(
                [LIMITED], provider_port=port, store_url=own_redis.url, prefix=prefix()
            )
            async with open_fleet(toml, tmp_path, skews=SKEWS) as fleet:
                async with trio.open_nursery() as nursery:

                    async def faults() -> None:
                        await trio.sleep(0.6)
                        await trio.to_thread.run_sync(own_redis.command, "SCRIPT", "FLUSH")
                        await trio.sleep(0.6)
                        own_redis.pause()
                        await trio.sleep(0.6)
                        own_redis.resume()
                        await trio.sleep(0.6)
                        own_redis.kill()

                    nursery.start_soon(faults)
                    result = await drive(fleet, "limited", duration=4.5, per_replica=1)
                killed_at = result.started_at + 2.4
                async with httpx.AsyncClient() as client:
                    health = [await healthz(client, replica) for replica in fleet]
    assert result.failures == []
    assert all(h["store"]["degraded"] for h in health)  # type: ignore[index]
    after = [at for at in _arrivals(fake, LIMITED.key) if at > killed_at + 0.5]
    # Three replicas, each at a third of 10/s with a burst of 1: 10/s for the fleet.
    assert max_in_window(after, 1.0) <= 3 * (1 + RATE / 3 * 1.0) + 1
