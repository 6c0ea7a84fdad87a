"""Running one scenario: fake upstream, switcher, load, observations, checked expectations.

A :class:`Scenario` is data plus two functions: ``script`` tells the fake upstream
how each key behaves over time, ``expect`` turns what was observed into pass/fail
:class:`Check` values. :func:`run_scenario` runs it in one of two modes:

* ``virtual`` — in-process (``httpx.MockTransport``) on trio's ``MockClock``: a
  two-minute scenario takes a second or two and its timings are exact.
* ``wire`` — real clock, real sockets: callers → sidecar (HTTP) → oswitch →
  loopback fake upstream (HTTP). Every duration in the scenario, config and fault
  script is multiplied by ``time_scale`` so it finishes in seconds.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import httpx
import trio
import trio.testing

from bench.callers import Caller, EmbeddedCaller, WireCaller
from bench.progress import Progress
from bench.record import Figures, Recorder
from bench.upstream import LoopbackFake
from oswitch import SwitcherConfig, TargetView, open_switcher, parse_config
from oswitch.core.deadline_learning import DeadlinePolicies
from oswitch.metrics import SwitcherMetrics
from oswitch.testing import FakeProvider, serve_fake_provider

MODEL = "gpt-4o-mini"
VIRTUAL_BASE_URL = "https://upstream.bench.test/v1"


@attrs.frozen(kw_only=True)
class Mode:
    """How a scenario runs: virtual time in-process, or real time over the wire.

    ``time_scale`` multiplies every duration and ``load_scale`` every request rate
    (so a compressed wire run sends fewer requests, not ten times as many per real
    second); ``tolerance_s`` is the timing slack, in scenario seconds, that real
    sockets and a real scheduler need (zero in virtual time, where timings are exact).
    """

    name: str
    time_scale: float
    load_scale: float
    tolerance_s: float

    @property
    def wire(self) -> bool:
        return self.name == "wire"


VIRTUAL = Mode(name="virtual", time_scale=1.0, load_scale=1.0, tolerance_s=0.0)
WIRE = Mode(name="wire", time_scale=0.25, load_scale=0.25, tolerance_s=0.4)


@attrs.frozen(kw_only=True)
class Env:
    """What a fault script needs: the time scale and the run's seeded randomness."""

    s: float
    rng: random.Random
    wire: bool = False


@attrs.frozen(kw_only=True)
class Check:
    """One expectation of a scenario, and whether the run met it."""

    name: str
    passed: bool
    detail: str


@attrs.frozen(kw_only=True)
class TargetSpec:
    """One target of a scenario: its id, key (the fake routes by key) and extra config."""

    target_id: str
    key: str
    priority: int = 0
    extra: Mapping[str, Any] = attrs.field(factory=dict)
    model: str = MODEL  # what it serves (a scenario's fallback model differs)


@attrs.frozen(kw_only=True)
class Observed:
    """Everything ``expect`` may look at once a scenario has run."""

    mode: Mode
    recorder: Recorder
    figures: Figures
    views: Mapping[str, TargetView]
    fake: FakeProvider
    config: SwitcherConfig
    metrics: SwitcherMetrics | None = None  # the switcher's metrics, as scraped at the end

    @property
    def s(self) -> float:
        return self.mode.time_scale

    def calls_to(self, key: str, *, after: float = 0.0) -> int:
        """Requests the fake upstream received for ``key`` at or after ``after`` (scenario s)."""
        origin = self.recorder.origin
        since = origin + after * self.s
        return sum(1 for call in self.fake.calls if call.route == key and call.at >= since)


@attrs.frozen(kw_only=True)
class Scenario:
    """A fault scenario: targets, fault script, load and expectations.

    ``load`` is a list of ``(until_s, requests_per_second)`` phases with Poisson
    arrivals; ``stream_share`` the fraction of requests that stream; ``answer`` the
    text every call must receive, whole. Times are scenario seconds (scaled by the
    mode, as is every ``*_ms`` setting of the config). ``outages`` lists, per key,
    windows in which that key's server is shut down over the wire (connections
    refused); the script plays the same windows as ``connect_error`` in virtual time.
    ``scale_capacity`` scales concurrency limits and the queue with the load (for
    the overload scenario, whose point is the ratio of load to capacity).
    ``request`` builds the ``n``-th request (default: a one-line question).
    """

    name: str
    title: str
    proves: str
    targets: tuple[TargetSpec, ...]
    settings: Mapping[str, Any]
    load: tuple[tuple[float, float], ...]
    stream_share: float
    answer: str
    script: Callable[[FakeProvider, Env], None]
    expect: Callable[[Observed], list[Check]]
    bucket_s: float = 2.0
    seed: int = 7
    outages: Mapping[str, tuple[tuple[float, float], ...]] = attrs.field(factory=dict)
    scale_capacity: bool = False
    request: Callable[[int], dict[str, Any]] = attrs.field(factory=lambda: _chat)

    @property
    def duration_s(self) -> float:
        return self.load[-1][0]

    @property
    def planned_requests(self) -> int:
        total, start = 0.0, 0.0
        for until, rate in self.load:
            total += (until - start) * rate
            start = until
        return round(total)


@attrs.frozen(kw_only=True)
class ScenarioResult:
    """A scenario's run: its mode, figures and checked expectations."""

    name: str
    title: str
    proves: str
    mode: str
    figures: Figures
    checks: tuple[Check, ...]
    target_ids: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)


def scale_times(value: Any, s: float) -> Any:
    """``value`` (a config object) with every ``*_ms`` setting multiplied by ``s``.

    Defaults included, so a compressed run keeps every ratio between its clocks.
    """
    if isinstance(value, tuple):
        return tuple(scale_times(item, s) for item in value)
    if not attrs.has(type(value)):
        return value
    changes: dict[str, Any] = {}
    for field in attrs.fields(type(value)):
        current = getattr(value, field.name)
        if field.name.endswith("_ms") and isinstance(current, int | float):
            changes[field.name] = current * s
        elif isinstance(current, tuple) or attrs.has(type(current)):
            scaled = scale_times(current, s)
            if scaled != current:
                changes[field.name] = scaled
    return attrs.evolve(value, **changes) if changes else value


def _scaled_count(value: int, factor: float) -> int:
    return max(1, round(value * factor))


def build_config(scenario: Scenario, *, base_urls: Mapping[str, str], mode: Mode) -> SwitcherConfig:
    """The scenario's switcher config for ``mode``: every millisecond setting scaled by
    its time scale, and (for ``scale_capacity`` scenarios) every concurrency limit and
    queue by its load scale. ``base_urls`` maps target ids to their upstream.

    Raises ConfigError if the scenario's settings are invalid.
    """
    targets = [
        {
            "target_id": spec.target_id,
            "provider_id": "openai",
            "base_url": base_urls[spec.target_id],
            "api_key": spec.key,
            "model": spec.model,
            "operator_priority": spec.priority,
            **spec.extra,
        }
        for spec in scenario.targets
    ]
    config = parse_config({**scenario.settings, "targets": targets})
    if scenario.scale_capacity and mode.load_scale != 1.0:
        factor = mode.load_scale
        config = attrs.evolve(
            config,
            concurrency_limit=_scaled_count(config.concurrency_limit, factor),
            queue_limit=_scaled_count(config.queue_limit, factor),
            backpressure_threshold=_scaled_count(config.backpressure_threshold, factor),
            targets=tuple(
                attrs.evolve(t, concurrency_limit=_scaled_count(t.concurrency_limit, factor))
                for t in config.targets
            ),
        )
    return scale_times(config, mode.time_scale)  # type: ignore[no-any-return]


def _chat(n: int) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": f"question {n}"}]}


def _condition(view: TargetView) -> str:
    return view.condition if view.state == "Active" else view.state


async def _drive(
    scenario: Scenario,
    mode: Mode,
    caller: Caller,
    recorder: Recorder,
    rng: random.Random,
    progress: Progress | None,
) -> None:
    """Send the scenario's load (open loop, Poisson arrivals) and record every call."""
    s = mode.time_scale
    origin = recorder.origin
    planned = round(scenario.planned_requests * mode.load_scale)

    async def one(n: int, stream: bool) -> None:
        sent = trio.current_time()
        recorder.in_flight += 1
        try:
            answer = await caller.call(scenario.request(n), stream=stream)
        finally:
            recorder.in_flight -= 1
        recorder.call_ended(
            sent_at=(sent - origin) / s,
            latency_s=(trio.current_time() - sent) / s,
            answer=attrs.evolve(
                answer, ttft_s=None if answer.ttft_s is None else answer.ttft_s / s
            ),
            expected=scenario.answer,
        )
        if progress is not None:
            progress.update(
                scenario.name,
                done=recorder.requests,
                total=planned,
                note=f"t={recorder.now():5.1f}s ok {recorder.outcomes['ok']}",
            )

    async with trio.open_nursery() as nursery:
        at, n = 0.0, 0
        for until, rate in scenario.load:
            while True:
                # Poisson arrivals; memoryless, so each phase simply starts afresh.
                at += rng.expovariate(rate * mode.load_scale)
                if at >= until:
                    break
                await trio.sleep_until(origin + at * s)
                n += 1
                nursery.start_soon(one, n, rng.random() < scenario.stream_share)
            at = until


async def _sample(switcher: Any, recorder: Recorder, every: float) -> None:
    while True:
        recorder.sample(
            recorder.now(), {v.target_id: _condition(v) for v in switcher.list_targets()}
        )
        await trio.sleep(every)


async def _serve_with_outages(
    fake: FakeProvider,
    outages: Sequence[tuple[float, float]],
    started: trio.Event,
    origin: list[float],
    s: float,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``fake`` on a port of its own, shut down during each outage window, so
    that callers get real refused connections; back up on the same port after."""
    port = 0
    windows = list(outages)
    while True:
        with trio.CancelScope() as up:
            async with trio.open_nursery() as nursery:
                port = await nursery.start(functools.partial(serve_fake_provider, fake, port=port))
                if not started.is_set():
                    task_status.started(port)
                    await started.wait()
                if not windows:
                    await trio.sleep_forever()
                down_at, back_at = windows.pop(0)
                await trio.sleep_until(origin[0] + down_at * s)
                up.cancel()
        await trio.sleep_until(origin[0] + back_at * s)


async def run_scenario_async(
    scenario: Scenario, mode: Mode, *, progress: Progress | None = None
) -> ScenarioResult:
    """Run ``scenario`` in the current trio run (whose clock must suit ``mode``)."""
    from oswitch.sidecar.serve import serve_sidecar

    rng = random.Random(scenario.seed)
    s = mode.time_scale
    fake = LoopbackFake() if mode.wire else FakeProvider()
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    started = trio.Event()
    origin_box = [0.0]
    async with trio.open_nursery() as nursery:
        base_urls = {spec.target_id: VIRTUAL_BASE_URL for spec in scenario.targets}
        if mode.wire:
            shared_port = await nursery.start(serve_fake_provider, fake)
            for spec in scenario.targets:
                port = shared_port
                if spec.key in scenario.outages:
                    port = await nursery.start(
                        _serve_with_outages,
                        fake,
                        scenario.outages[spec.key],
                        started,
                        origin_box,
                        s,
                    )
                base_urls[spec.target_id] = f"http://127.0.0.1:{port}/v1"
        config = build_config(scenario, base_urls=base_urls, mode=mode)
        transport = None if mode.wire else fake.transport()
        # The learned deadlines' floors, caps and cold starts scale with the run too.
        policies = None if s == 1.0 else DeadlinePolicies().scaled(s)
        async with open_switcher(
            config,
            transport=transport,
            rng=random.Random(scenario.seed + 1),
            deadline_policies=policies,
        ) as switcher:
            metrics = SwitcherMetrics(switcher)
            caller: Caller = EmbeddedCaller(switcher)
            client: httpx.AsyncClient | None = None
            if mode.wire:
                port = await nursery.start(functools.partial(serve_sidecar, switcher, port=0))
                client = httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}",
                    timeout=httpx.Timeout(None),
                    limits=httpx.Limits(max_connections=512, max_keepalive_connections=512),
                )
                caller = WireCaller(client)
            scenario.script(fake, Env(s=s, rng=random.Random(scenario.seed + 2), wire=mode.wire))
            recorder = Recorder(
                origin=trio.current_time(),
                bucket_s=scenario.bucket_s,
                scale=s,
                clock=trio.current_time,
            )
            origin_box[0] = recorder.origin
            started.set()
            switcher.events.add_listener(recorder.event)
            try:
                async with trio.open_nursery() as inner:
                    inner.start_soon(_sample, switcher, recorder, scenario.bucket_s * s / 4)
                    await _drive(scenario, mode, caller, recorder, rng, progress)
                    inner.cancel_scope.cancel()
            finally:
                if client is not None:
                    await client.aclose()
            clock_s = recorder.now()
            views = {v.target_id: v for v in switcher.list_targets()}
        nursery.cancel_scope.cancel()
    target_ids = tuple(spec.target_id for spec in scenario.targets)
    figures = recorder.figures(
        cpu_s=time.process_time() - cpu_start,
        wall_s=time.perf_counter() - wall_start,
        clock_s=clock_s,
        target_ids=target_ids,
    )
    observed = Observed(
        mode=mode,
        recorder=recorder,
        figures=figures,
        views=views,
        fake=fake,
        config=config,
        metrics=metrics,
    )
    checks = scenario.expect(observed)
    return ScenarioResult(
        name=scenario.name,
        title=scenario.title,
        proves=scenario.proves,
        mode=mode.name,
        figures=figures,
        checks=tuple(checks),
        target_ids=target_ids,
    )


def run_scenario(
    scenario: Scenario, mode: Mode = VIRTUAL, *, progress: Progress | None = None
) -> ScenarioResult:
    """Run ``scenario`` in its own trio run: on a ``MockClock`` when ``mode`` is virtual."""
    run = functools.partial(run_scenario_async, scenario, mode, progress=progress)
    if mode.wire:
        return trio.run(run)
    return trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))


def run_scenarios(
    scenarios: Sequence[Scenario], mode: Mode, *, progress: Progress | None = None
) -> list[ScenarioResult]:
    """Run each scenario in turn, each in a fresh trio run."""
    return [run_scenario(scenario, mode, progress=progress) for scenario in scenarios]
