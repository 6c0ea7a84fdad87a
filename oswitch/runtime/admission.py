"""Admission control: a global concurrency cap with a bounded waiting queue.

A request takes one of ``concurrency_limit`` slots for its whole life. When none
is free it may wait in a queue of at most ``queue_limit``; when the queue is full
it is refused at once with ``Overloaded`` — never after a wait. Past
``backpressure_threshold`` waiting requests the switcher reports backpressure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from oswitch.errors import Overloaded
from oswitch.runtime.events import EventHub

# The smoothing factor of the average time a request holds its slot.
SERVICE_TIME_ALPHA = 0.1


@attrs.frozen(kw_only=True)
class AdmissionStatistics:
    in_flight: int
    queued: int
    concurrency_limit: int
    queue_limit: int
    backpressure_threshold: int
    backpressure: bool
    admitted: int
    rejected: int
    mean_service_s: float | None


class Held:
    """One request slot taken by :meth:`Admission.acquire`: when it was admitted and
    how long it waited in the queue (trio time)."""

    __slots__ = ("admitted_at", "waited")

    def __init__(self) -> None:
        self.admitted_at = 0.0
        self.waited = 0.0


class QueueTimeout(Exception):
    """The request's deadline passed while it waited in the queue."""


class Admission:
    """Hands out request slots; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        concurrency_limit: int,
        queue_limit: int,
        backpressure_threshold: int,
        events: EventHub | None = None,
    ) -> None:
        self._events = events or EventHub()
        self._limiter = trio.CapacityLimiter(concurrency_limit)
        self.queue_limit = queue_limit
        self.backpressure_threshold = backpressure_threshold
        self._queued = 0
        self._admitted = 0
        self._rejected = 0
        self._mean_service_s: float | None = None
        self._backpressure = False

    def reconfigure(
        self,
        *,
        concurrency_limit: int,
        queue_limit: int,
        backpressure_threshold: int,
    ) -> None:
        self._limiter.total_tokens = concurrency_limit
        self.queue_limit = queue_limit
        self.backpressure_threshold = backpressure_threshold

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def backpressure(self) -> bool:
        return self._queued >= self.backpressure_threshold > 0

    def retry_after_hint(self) -> float:
        """Seconds until a slot is likely free: queue length × mean service time / slots."""
        mean = self._mean_service_s if self._mean_service_s is not None else 1.0
        slots = max(1, int(self._limiter.total_tokens))
        return max(0.1, mean * (self._queued + 1) / slots)

    @asynccontextmanager
    async def slot(self, *, deadline: float, request_id: str) -> AsyncIterator[float]:
        """Hold one request slot for the body of the ``async with``; yields the queue wait.

        Raises ``Overloaded`` at once when no slot is free and the queue is full, and
        ``QueueTimeout`` when ``deadline`` (trio time) passes while queued. Waiting
        is cancelled with the caller.
        """
        held = await self.acquire(deadline=deadline, request_id=request_id)
        try:
            yield held.waited
        finally:
            self.release(held)

    async def acquire(self, *, deadline: float, request_id: str) -> Held:
        """Take one request slot (what :meth:`slot` holds), to be given back with
        :meth:`release` exactly once. Raises as :meth:`slot` does."""
        # The cancel point comes before the slot is taken: a Cancelled raised once it
        # was held would leave it held for good.
        await trio.lowlevel.checkpoint_if_cancelled()
        held = Held()  # also the limiter's borrower
        try:
            self._limiter.acquire_on_behalf_of_nowait(held)
        except trio.WouldBlock:
            started = trio.current_time()
            if self._queued >= self.queue_limit:
                self._rejected += 1
                self._events.emit(
                    "overloaded", request_id=request_id, note=f"queue full ({self._queued})"
                )
                raise Overloaded(
                    f"overloaded: {self._queued} requests queued (queue_limit "
                    f"{self.queue_limit}); retry later",
                    request_id=request_id,
                    retry_after=self.retry_after_hint(),
                ) from None
            await self._wait_in_queue(held, deadline, request_id)
            held.admitted_at = trio.current_time()
            held.waited = held.admitted_at - started
        else:
            # A free slot: a schedule point that cannot raise (the slot is held now).
            # Without it a request arriving as others wake at the same instant (a
            # retry after a timeout) reaches the targets before them.
            await trio.lowlevel.cancel_shielded_checkpoint()
            held.admitted_at = trio.current_time()  # it waited no time
        self._admitted += 1
        return held

    def release(self, held: Held) -> None:
        """Give back a slot taken with :meth:`acquire`; the time it was held feeds the
        mean service time."""
        self._limiter.release_on_behalf_of(held)
        service = trio.current_time() - held.admitted_at
        mean = self._mean_service_s
        self._mean_service_s = (
            service if mean is None else mean + SERVICE_TIME_ALPHA * (service - mean)
        )

    async def _wait_in_queue(self, token: object, deadline: float, request_id: str) -> None:
        self._queued += 1
        if self.backpressure and not self._backpressure:
            self._backpressure = True
            self._events.emit(
                "backpressure", request_id=request_id, note=f"queue depth {self._queued}"
            )
        try:
            with trio.move_on_at(deadline) as scope:
                await self._limiter.acquire_on_behalf_of(token)
        finally:
            self._queued -= 1
            if self._backpressure and not self.backpressure:
                self._backpressure = False
                self._events.emit("backpressure_cleared", note=f"queue depth {self._queued}")
        if scope.cancelled_caught:
            raise QueueTimeout

    def statistics(self) -> AdmissionStatistics:
        stats = self._limiter.statistics()
        return AdmissionStatistics(
            in_flight=stats.borrowed_tokens,
            queued=self._queued,
            concurrency_limit=int(stats.total_tokens),
            queue_limit=self.queue_limit,
            backpressure_threshold=self.backpressure_threshold,
            backpressure=self.backpressure,
            admitted=self._admitted,
            rejected=self._rejected,
            mean_service_s=self._mean_service_s,
        )
