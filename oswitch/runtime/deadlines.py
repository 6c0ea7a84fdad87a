"""The request deadline of streamed attempts whose caller is not reading.

A streamed attempt's chunks are read in the caller's task, and every read waits
under a deadline no later than the request's. Between reads nothing runs: a caller
that stops pulling (an embedded program busy elsewhere, a sidecar client that does
not read) would hold the target's slot and the upstream connection for as long as
it likes. :class:`StreamDeadlines` is the other half: one task per target actor
that wakes at the earliest request deadline (``request_timeout_ms``) of its open
streams and hands each one due to the actor to end. A caller's own tighter trio
deadline needs no watching: it cancels the caller, whose block then ends the stream.

Cost per stream: one heap push when it starts (the task is woken only when the new
deadline is the earliest, which with one ``request_timeout_ms`` is rare), nothing
per chunk. Entries of streams that ended normally are left in the heap, holding
only a weak reference (no request is kept alive by them), and dropped when the heap
has grown to twice the streams still open.
"""

from __future__ import annotations

import heapq
import itertools
import math
import weakref
from collections.abc import Callable

import trio

from oswitch.runtime.messages import AttemptOrder

# The heap is rebuilt from the open streams once it holds this many more entries.
_SLACK = 64


class StreamDeadlines:
    """Hands each watched order to ``expire`` once its ``expires_at`` has passed, unless
    it ended before (see the module doc). ``serve`` runs in the target actor's nursery,
    started with the first stream watched (``served``), so an idle target costs no task.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, weakref.ref[AttemptOrder]]] = []
        self._tiebreak = itertools.count()
        self._scope: trio.CancelScope | None = None
        self.served = False  # set by whoever starts serve()

    def watch(self, order: AttemptOrder, *, open_streams: int) -> None:
        """Watch ``order`` until its ``expires_at``; ``open_streams`` is how many run."""
        deadline = order.expires_at
        if math.isinf(deadline):
            return
        if len(self._heap) > 2 * open_streams + _SLACK:
            self._heap = [entry for entry in self._heap if _open(entry[2]) is not None]
            heapq.heapify(self._heap)
        heapq.heappush(self._heap, (deadline, next(self._tiebreak), weakref.ref(order)))
        scope = self._scope
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline

    def __len__(self) -> int:
        return len(self._heap)

    async def serve(self, expire: Callable[[AttemptOrder], None]) -> None:
        """Call ``expire(order)`` as orders' deadlines pass, until cancelled."""
        while True:
            with trio.CancelScope(deadline=self._heap[0][0] if self._heap else math.inf) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
            now = trio.current_time()
            while self._heap and self._heap[0][0] <= now:
                _, _, ref = heapq.heappop(self._heap)
                order = _open(ref)
                if order is not None:
                    expire(order)


def _open(ref: weakref.ref[AttemptOrder]) -> AttemptOrder | None:
    """The order if it is still alive and has not ended (its target settles every
    attempt it ends, ``order.settled``)."""
    order = ref()
    return order if order is not None and order.settled is None else None
