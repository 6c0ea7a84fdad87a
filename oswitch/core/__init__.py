"""The pure resilience core: no trio, no httpx, no I/O.

Time always arrives as a ``now: float`` argument (seconds on whatever clock the
caller uses) and randomness is injected, so every decision here is exact and
testable without an event loop.
"""
