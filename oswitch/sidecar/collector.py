"""The cyclic garbage collector's setting for a gateway process (``oswitch serve``).

CPython collects its youngest generation every 700 net allocations of container
objects. A gateway holds hundreds of requests in flight, each a stack of coroutines,
dicts and cancel scopes, so at that pace every young collection finds a few thousand
live objects to traverse, promotes them, and the older generations fill and are
collected in turn. On the bench's VM the collector itself ran 0.01-0.12 ms per
request of the sidecar (an eighth of its CPU per stream at concurrency 256), its full
passes tens of milliseconds each (docs/bench.md, "the sidecar's collector"). Collecting
the young generation every 10,000 allocations leaves the same garbage to be found a
little later and cuts that time tenfold. Only a process oswitch owns sets it: the
library never touches a setting that belongs to the application embedding it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
from collections.abc import Iterator

__all__ = ["GATEWAY_YOUNG_THRESHOLD", "collector_threshold", "gateway_collector"]

GATEWAY_YOUNG_THRESHOLD = 10_000


@contextlib.contextmanager
def gateway_collector(young_threshold: int = GATEWAY_YOUNG_THRESHOLD) -> Iterator[None]:
    """Collect the young generation every ``young_threshold`` net allocations (the
    older generations' thresholds unchanged) for the block, then restore what was set
    before. ``0`` leaves the collector as it is (it never disables collection), and a
    process that turned collection off (a threshold of 0) keeps it off.

    Synchronous; raises ValueError for a negative threshold."""
    if young_threshold < 0:
        raise ValueError(f"the collector threshold must be >= 0 (got {young_threshold})")
    before = gc.get_threshold()
    if young_threshold and before[0]:
        gc.set_threshold(young_threshold, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def collector_threshold(text: str) -> int:
    """``--gc-threshold``'s value: a whole number >= 0; raises
    ``argparse.ArgumentTypeError`` naming what is wrong otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (got {value})")
    return value
