"""A fleet of replicas sharing limits, cooldowns and breaker transitions through one
Redis/Valkey store (docs/fleet.md).

Pure parts: :mod:`gcra` (the limiter, also the store script's oracle), :mod:`keys`
(the key layout), :mod:`scripts` (the Lua scripts and what their replies mean),
:mod:`degrade` (the store's own breaker). Trio edges: :mod:`store` (the coredis
client, every call bounded) and :mod:`link` (one per switcher: admission, shared
transitions, the subscriber and the resync).
"""
