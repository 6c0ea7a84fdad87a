"""Regression for encode/httpcore#1093 over real loopback sockets.

httpcore's pool orphans a connection when a request waiting in the pool's queue is
cancelled and, before it runs, another request's cleanup hands it a fresh
connection: the entry is then neither idle, closed nor expired, holds its slot
forever, and once every slot is held each later request waits out the pool timeout
and raises ``PoolTimeout``. oswitch cancels attempts on purpose (first-byte limit,
failover, hedging, callers going away), so each target owns a pool of
``concurrency_limit`` connections and never runs more attempts than that: no request
ever queues inside the pool. The pool is now oswitch's own (``HTTP1Pool``), and these
tests hold it to the same bar: they cancel many attempts of such a target at every
phase, then check that the upstream saw each cancelled connection closed and that the
target still answers. A control shows that this harness does reproduce the bug on a
bare httpx pool that is contended.

The upstream is a small trio + h11 server on 127.0.0.1; the tests run on the real
clock, each guarded by ``trio.fail_after``.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import attrs
import h11
import httpx
import trio

from oswitch import AllTargetsFailed
from oswitch.config import CircuitBreakerConfig, SwitcherConfig
from oswitch.core.error_class import ErrorClass
from oswitch.runtime.switcher import Switcher, open_switcher
from support import chat, config, target

LIMIT = 2  # the target's concurrency_limit, hence its pool's max_connections
# Longer than any healthy loopback answer, far shorter than the client's 5 s pool
# timeout: a request still running after this is stuck behind an exhausted pool.
STUCK_AFTER_S = 1.5


@attrs.define
class Upstream:
    """A loopback OpenAI-compatible server's knobs and counters (real sockets)."""

    delay: float = 0.0  # seconds to sit on each request before answering
    accepted: int = 0
    closed: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: int = 0
    answered: int = 0
    hung_up: int = 0  # requests whose client closed the connection while we waited
    changed: trio.Event = attrs.Factory(trio.Event)

    def notify(self) -> None:
        """Wake every task waiting for a change of the counters."""
        self.changed.set()
        self.changed = trio.Event()

    async def wait_all_closed(self) -> None:
        """Block until the server holds no open connection."""
        while self.open_now:
            await self.changed.wait()


def _completion() -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-loopback",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()


async def _next_event(stream: trio.SocketStream, conn: h11.Connection) -> Any:
    """The next h11 event, reading from the socket as needed (ConnectionClosed on EOF)."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await stream.receive_some(65536))


async def _answer(
    stream: trio.SocketStream, conn: h11.Connection, status: int, body: bytes
) -> None:
    headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
    data = conn.send(h11.Response(status_code=status, headers=headers))
    data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    await stream.send_all(data)


async def _handle(upstream: Upstream, stream: trio.SocketStream) -> None:
    upstream.accepted += 1
    upstream.open_now += 1
    upstream.most_open = max(upstream.most_open, upstream.open_now)
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = await _next_event(stream, conn)
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed, or nonsense we do not serve
            route = (event.method, event.target)
            while not isinstance(event, h11.EndOfMessage):
                event = await _next_event(stream, conn)
                if isinstance(event, h11.ConnectionClosed):
                    return
            upstream.requests += 1
            if upstream.delay > 0:
                # Sit on the request, but notice at once when the client hangs up
                # (a cancelled attempt must close its connection, not park it).
                with trio.move_on_after(upstream.delay):
                    if not await stream.receive_some(65536):
                        upstream.hung_up += 1
                        return
            if route == (b"POST", b"/v1/chat/completions"):
                await _answer(stream, conn, 200, _completion())
                upstream.answered += 1
            else:
                await _answer(stream, conn, 404, b'{"error": {"message": "no such route"}}')
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
        pass  # the client went away mid-exchange: that is what these tests provoke
    finally:
        upstream.open_now -= 1
        upstream.closed += 1
        upstream.notify()
        with trio.CancelScope(shield=True):
            await stream.aclose()


async def serve_upstream(
    upstream: Upstream, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve ``upstream`` on 127.0.0.1, an ephemeral port handed back through task_status."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(
                trio.serve_tcp, functools.partial(_handle, upstream), 0, host="127.0.0.1"
            )
        )
        task_status.started(listeners[0].socket.getsockname()[1])


def loopback_config(port: int, **fields: Any) -> SwitcherConfig:
    """One target (concurrency_limit LIMIT) on the loopback server; no retries, no failover."""
    return config(
        target(
            "loop",
            model="m",
            serves=("m",),
            base_url=f"http://127.0.0.1:{port}/v1",
            concurrency_limit=LIMIT,
            # Every cancelled attempt here is a breaker failure; the breaker must not
            # hide the pool's state by refusing the target.
            circuit_breaker=CircuitBreakerConfig(
                failure_threshold=1000, failure_rate_threshold=1.0, sliding_window_size=1000
            ),
        ),
        retry_budget=0,
        failover_budget=0,
        queue_limit=1000,
        backpressure_threshold=1000,
        concurrency_limit=1000,
        **fields,
    )


async def wait_target_idle(switcher: Switcher) -> None:
    """Block until the target runs no attempt (a caller that left does not wait for it)."""
    # Polled: the public surface has no event for a target going idle.
    while switcher.list_targets()[0].in_flight:  # noqa: ASYNC110
        await trio.sleep(0.001)


async def fast_rounds(switcher: Switcher, upstream: Upstream, rounds: int = 3) -> list[str]:
    """Send ``rounds`` waves of LIMIT concurrent requests to the now fast server; return
    one line per request that did not get its reply."""
    upstream.delay = 0.0
    problems: list[str] = []

    async def one(rid: str) -> None:
        with trio.move_on_after(STUCK_AFTER_S) as scope:
            try:
                reply = await switcher.complete(chat(model="m"), request_id=rid)
            except AllTargetsFailed as exc:
                notes = [a.note for a in switcher.inspect_request(rid).attempts]
                problems.append(f"{rid}: {exc} (error_class={exc.error_class}, notes={notes})")
                return
            if reply["choices"][0]["message"]["content"] != "ok":
                problems.append(f"{rid}: unexpected reply {reply!r}")
        if scope.cancelled_caught:
            problems.append(
                f"{rid}: no answer within {STUCK_AFTER_S}s from a fast server"
                " (pool slots orphaned: waiting out the pool timeout)"
            )

    for r in range(rounds):
        async with trio.open_nursery() as nursery:
            for i in range(LIMIT):
                nursery.start_soon(one, f"fast-{r}-{i}")
        if problems:
            break  # one stuck round says it all; more would only wait out the guard
    return problems


async def check_upstream_released(upstream: Upstream, sent: int) -> None:
    """Every connection of the cancelled attempts was closed, none parked or exceeded."""
    with trio.move_on_after(1.0):
        await upstream.wait_all_closed()
    assert upstream.open_now == 0, (
        f"{upstream.open_now} connection(s) of cancelled attempts still open: leaked"
    )
    assert upstream.accepted == upstream.closed
    assert upstream.answered == 0
    assert upstream.hung_up == upstream.requests <= sent
    assert upstream.most_open <= LIMIT, (
        f"{upstream.most_open} connections open at once for a concurrency_limit of {LIMIT}"
    )


async def test_attempts_cut_at_the_first_byte_limit_leave_the_pool_usable() -> None:
    """Attempts abandoned at the first-byte limit close their connections and never orphan
    pool slots: the target answers every later request."""
    upstream = Upstream(delay=1.0)
    waves = 10
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_upstream, upstream)
            cfg = loopback_config(port, max_expected_latency_ms=50)
            async with open_switcher(cfg) as switcher:
                failures: list[AllTargetsFailed] = []

                async def slow(rid: str) -> None:
                    try:
                        await switcher.complete(chat(model="m"), request_id=rid)
                    except AllTargetsFailed as exc:
                        failures.append(exc)

                for w in range(waves):
                    async with trio.open_nursery() as wave:
                        for i in range(LIMIT):
                            wave.start_soon(slow, f"slow-{w}-{i}")
                assert len(failures) == waves * LIMIT
                for exc in failures:
                    assert exc.error_class is ErrorClass.TRANSPORT_FAILURE, str(exc)
                    assert exc.request_id is not None
                    notes = [a.note for a in switcher.inspect_request(exc.request_id).attempts]
                    assert notes == ["abandoned: no answer in time"], notes
                await check_upstream_released(upstream, waves * LIMIT)
                assert upstream.requests > 0, "no attempt reached the server"

                problems = await fast_rounds(switcher, upstream)
                assert not problems, "requests failed after cancelled attempts:\n" + "\n".join(
                    problems
                )
                assert upstream.answered == 3 * LIMIT
                assert upstream.most_open <= LIMIT
            nursery.cancel_scope.cancel()


async def _cancel_after(scope: trio.CancelScope, delay: float) -> None:
    await trio.sleep(delay)
    scope.cancel()


async def test_attempts_cancelled_by_their_callers_leave_the_pool_usable() -> None:
    """Callers that give up at every phase of an attempt (connect, send, wait) close its
    connection and never orphan pool slots: the target answers every later request."""
    upstream = Upstream(delay=1.0)
    # Spread over the phases of a loopback exchange (about a millisecond), then the wait.
    delays = [k * 0.0001 for k in range(36)] * 2 + [0.005, 0.01, 0.02, 0.04]
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_upstream, upstream)
            async with open_switcher(loopback_config(port)) as switcher:
                unexpected: list[str] = []

                async def leaving(i: int, delay: float) -> None:
                    # Half leave on a trio deadline, half go away (cancelled from outside).
                    async with trio.open_nursery() as own:
                        with trio.CancelScope() as scope:
                            if i % 2:
                                own.start_soon(_cancel_after, scope, delay)
                            else:
                                scope.deadline = trio.current_time() + delay
                            try:
                                reply = await switcher.complete(chat(model="m"))
                                unexpected.append(f"unexpected reply {reply!r}")
                            except AllTargetsFailed as exc:
                                # A deadline shared with the attempt may end it first.
                                silent = exc.error_class is ErrorClass.TRANSPORT_FAILURE
                                if not (exc.deadline_exceeded or silent):
                                    unexpected.append(f"unexpected failure {exc}")
                        own.cancel_scope.cancel()

                for start in range(0, len(delays), LIMIT):
                    async with trio.open_nursery() as wave:
                        for i in range(start, start + LIMIT):
                            wave.start_soon(leaving, i, delays[i])
                    # The attempts end in the target's own time, after their callers left.
                    await wait_target_idle(switcher)
                assert not unexpected, unexpected
                await check_upstream_released(upstream, len(delays))
                assert upstream.requests > 0, (
                    "no attempt reached the server: the target's pool handed out no"
                    " connection (slots orphaned by the first cancellations?)"
                )

                problems = await fast_rounds(switcher, upstream)
                assert not problems, "requests failed after cancelled attempts:\n" + "\n".join(
                    problems
                )
                assert upstream.answered == 3 * LIMIT
                assert upstream.most_open <= LIMIT
            nursery.cancel_scope.cancel()


async def test_requests_beyond_the_limit_wait_for_a_slot_not_in_the_pool() -> None:
    """More concurrent requests than concurrency_limit queue at the target's limiter (up to
    max_wait_ms) and all succeed, never opening more than concurrency_limit connections."""
    upstream = Upstream(delay=0.02)
    count = 20
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_upstream, upstream)
            async with open_switcher(loopback_config(port)) as switcher:
                failed: list[str] = []

                async def one() -> None:
                    try:
                        await switcher.complete(chat(model="m"))
                    except AllTargetsFailed as exc:
                        failed.append(str(exc))

                async with trio.open_nursery() as batch:
                    for _ in range(count):
                        batch.start_soon(one)
                assert not failed, (
                    f"{len(failed)} of {count} requests failed instead of waiting for a free"
                    f" slot of a busy target (DESIGN: slots full -> wait up to max_wait_ms);"
                    f" first: {failed[0]}"
                )
                assert upstream.answered == count
                assert upstream.most_open <= LIMIT
            nursery.cancel_scope.cancel()


async def test_harness_reproduces_the_httpcore_bug_on_a_contended_pool() -> None:
    """Control: a bare httpx pool of LIMIT connections, churned by cancelled requests that
    outnumber it, on this same server, ends with every slot orphaned (httpcore#1093)."""
    upstream = Upstream(delay=1.0)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_upstream, upstream)
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            limits = httpx.Limits(max_connections=LIMIT, max_keepalive_connections=LIMIT)
            async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(None)) as client:

                async def abandoned() -> None:
                    with trio.move_on_after(0.02):
                        await client.post(url, json=chat(model="m"))

                async def probe() -> bool:
                    """True while the pool still hands out a connection."""
                    try:
                        await client.post(
                            url, json=chat(model="m"), timeout=httpx.Timeout(None, pool=0.1)
                        )
                    except httpx.PoolTimeout:
                        return False
                    return True

                # Like the reproduction: churn until the pool is dead (almost always
                # one round; a slot orphaned in one round stays orphaned).
                usable, rounds = True, 0
                while usable and rounds < 20:
                    rounds += 1
                    upstream.delay = 1.0
                    async with trio.open_nursery() as batch:
                        for _ in range(10 * LIMIT):
                            batch.start_soon(abandoned)
                    upstream.delay = 0.0
                    usable = await probe()
                assert not usable, (
                    f"after {rounds} rounds a contended httpx pool still works:"
                    " encode/httpcore#1093 looks fixed in this httpcore, so this control no"
                    " longer shows that the tests above would catch it"
                )
            nursery.cancel_scope.cancel()
