"""The store's Lua scripts and what their replies mean. Pure: no I/O.

Each script touches one target's keys only (one hash tag, one slot), reads the
store's clock with ``TIME`` (microseconds, so no replica's clock ever matters) and
runs atomically. Durations go in; absolute times are made inside the script. They
are sent by hash (``EVALSHA``) and whole (``EVAL``) when the store answers
``NOSCRIPT`` (a restart, a ``SCRIPT FLUSH``, a proxy that blocks ``SCRIPT LOAD``).

The state hash of a target (``keys.TargetKeys.state``) holds, as strings:
``cool_until``, ``cool_reason``, ``quota_until`` (µs, store clock); ``brk``
(closed | open | half_open), ``open_until``, ``gen`` (bumped by every breaker
transition: the compare-and-set a close must win), ``probe_owner``,
``probe_until`` (the fleet's one half-open probe lease); ``blk`` (ReauthRequired |
PolicyBlocked | empty); ``op`` (Paused | Draining | Disabled | empty: an
operator's fleet-wide command); ``by`` (the replica that made the last change),
``what`` (which change), ``at`` and ``ver`` (bumped by every change).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import attrs

from oswitch.fleet.gcra import GcraLimit
from oswitch.fleet.keys import STATE_TTL_S

# Shared by the scripts: the store's clock, state written, state published.
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function num(v) return tonumber(v or '0') or 0 end
local function us(v) return string.format('%.0f', v) end
local function set_tat(key, tat)
  redis.call('SET', key, string.format('%.3f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
local function changed(st, replica, what, channel, target, ttl_ms)
  redis.call('HSET', st, 'by', replica, 'what', what, 'at', us(now))
  redis.call('HINCRBY', st, 'ver', 1)
  redis.call('PEXPIRE', st, ttl_ms)
  local flat = redis.call('HGETALL', st)
  local m = {}
  for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
  redis.call('PUBLISH', channel, cjson.encode({t = target, now = us(now), s = m}))
end
"""

ADMIT = (
    _PRELUDE
    + """
-- KEYS: rpm, tpm, st. ARGV: request interval µs (0: no limit), request tolerance µs,
-- token interval µs (0: no limit), token tolerance µs, tokens, token burst, replica,
-- probe lease µs, channel, target id, state ttl ms.
local st = KEYS[3]
local replica = ARGV[7]
local f = redis.call('HMGET', st, 'op', 'blk', 'cool_until', 'quota_until', 'brk',
  'open_until', 'gen', 'probe_owner', 'probe_until')
local op, blk, brk = f[1] or '', f[2] or '', f[5] or 'closed'
local cool, quota, open_until = num(f[3]), num(f[4]), num(f[6])
local gen, probe_until = num(f[7]), num(f[9])
local function deny(why, wait) return {0, us(wait), us(gen), 0, us(now), why} end
if op ~= '' then return deny('op:' .. op, -1) end
if blk ~= '' then return deny('blk:' .. blk, -1) end
if quota > now then return deny('quota', quota - now) end
if cool > now then return deny('cool', cool - now) end
local probe = 0
if brk == 'open' then
  if now < open_until then return deny('open', open_until - now) end
  probe = 1
elseif brk == 'half_open' then
  -- One probe for the whole fleet: while a lease runs, every replica waits, its
  -- holder included (it writes close, open or release when the probe ends).
  if probe_until > now then return deny('probe', probe_until - now) end
  probe = 1
end
-- Both buckets are checked before either is written: all or nothing.
local function gcra(key, interval, tolerance, cost)
  local tat = num(redis.call('GET', key))
  if tat < now then tat = now end
  local new = tat + interval * cost
  return new, new - tolerance - now
end
local wait, req_new, tok_new = 0, nil, nil
local ri, rt, ti, tt = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local cost = math.min(tonumber(ARGV[5]), tonumber(ARGV[6]))
if ri > 0 then
  local w
  req_new, w = gcra(KEYS[1], ri, rt, 1)
  if w > wait then wait = w end
end
if ti > 0 and cost > 0 then
  local w
  tok_new, w = gcra(KEYS[2], ti, tt, cost)
  if w > wait then wait = w end
end
if wait > 0 then return deny('rate', wait) end
if req_new then set_tat(KEYS[1], req_new) end
if tok_new then set_tat(KEYS[2], tok_new) end
if probe == 1 then
  gen = gen + 1
  redis.call('HSET', st, 'brk', 'half_open', 'gen', us(gen), 'probe_owner', replica,
    'probe_until', us(now + tonumber(ARGV[8])))
  changed(st, replica, 'probe', ARGV[9], ARGV[10], ARGV[11])
end
return {1, '0', us(gen), probe, us(now), 'ok'}
"""
)

SETTLE = (
    _PRELUDE
    + """
-- KEYS: tpm. ARGV: token interval µs, tokens to charge (negative: refund).
local tat = num(redis.call('GET', KEYS[1]))
if tat < now then tat = now end
local new = tat + tonumber(ARGV[1]) * tonumber(ARGV[2])
if new <= now then
  redis.call('DEL', KEYS[1])
else
  set_tat(KEYS[1], new)
end
return us(now)
"""
)

TRANSITION = (
    _PRELUDE
    + """
-- KEYS: st. ARGV: kind, replica, number (a duration µs, or the expected gen), text,
-- channel, target id, state ttl ms.
local st, kind, replica = KEYS[1], ARGV[1], ARGV[2]
local n, text = tonumber(ARGV[3]), ARGV[4]
local f = redis.call('HMGET', st, 'brk', 'gen', 'probe_owner', 'cool_until', 'quota_until',
  'open_until')
local brk, gen, owner = f[1] or 'closed', num(f[2]), f[3] or ''
local function no() return {0, us(now), us(gen)} end
if kind == 'cool' then
  redis.call('HSET', st, 'cool_until', us(math.max(num(f[4]), now + n)), 'cool_reason', text)
elseif kind == 'quota' then
  redis.call('HSET', st, 'quota_until', us(math.max(num(f[5]), now + n)))
elseif kind == 'open' then
  local until_ = now + n
  if brk == 'open' and num(f[6]) > until_ then until_ = num(f[6]) end
  gen = gen + 1
  redis.call('HSET', st, 'brk', 'open', 'open_until', us(until_), 'gen', us(gen),
    'probe_owner', '', 'probe_until', '0')
elseif kind == 'close' then
  if gen ~= n or brk == 'closed' then return no() end
  gen = gen + 1
  redis.call('HSET', st, 'brk', 'closed', 'open_until', '0', 'gen', us(gen),
    'probe_owner', '', 'probe_until', '0')
elseif kind == 'release' then
  if gen ~= n or brk ~= 'half_open' or owner ~= replica then return no() end
  redis.call('HSET', st, 'probe_until', '0')
elseif kind == 'block' then
  redis.call('HSET', st, 'blk', text)
elseif kind == 'op' then
  redis.call('HSET', st, 'op', text)
elseif kind == 'resume' then
  gen = gen + 1
  redis.call('HSET', st, 'cool_until', '0', 'quota_until', '0', 'brk', 'closed',
    'open_until', '0', 'gen', us(gen), 'probe_owner', '', 'probe_until', '0', 'blk', '', 'op', '')
else
  return redis.error_reply('unknown transition ' .. kind)
end
changed(st, replica, kind, ARGV[5], ARGV[6], ARGV[7])
return {1, us(now), us(gen)}
"""
)

READ = (
    _PRELUDE
    + """
-- KEYS: st. The state hash and the store's clock.
return {us(now), redis.call('HGETALL', KEYS[1])}
"""
)


def sha1(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


SCRIPTS: Mapping[str, str] = {
    "admit": ADMIT,
    "settle": SETTLE,
    "transition": TRANSITION,
    "read": READ,
}

Transition = str  # cool | quota | open | close | release | block | op | resume
TRANSITIONS = frozenset({"cool", "quota", "open", "close", "release", "block", "op", "resume"})


ScriptArg = str | int | float


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 3)


def admit_args(
    *,
    requests: GcraLimit | None,
    tokens: GcraLimit | None,
    cost: int,
    replica: str,
    lease_s: float,
    channel: str,
    target_id: str,
) -> list[ScriptArg]:
    """ADMIT's arguments: the limits as µs intervals and tolerances (0: no limit)."""
    return [
        _us(requests.interval) if requests else 0,
        _us(requests.tolerance) if requests else 0,
        _us(tokens.interval) if tokens else 0,
        _us(tokens.tolerance) if tokens else 0,
        cost,
        int(tokens.burst) if tokens else 0,
        replica,
        _us(lease_s),
        channel,
        target_id,
        STATE_TTL_S * 1000,
    ]


def transition_args(
    kind: str, *, replica: str, number: float, text: str, channel: str, target_id: str
) -> list[ScriptArg]:
    """TRANSITION's arguments; ``number`` is a duration in seconds, except for
    ``close`` and ``release``, where it is the expected breaker generation."""
    value: ScriptArg = int(number) if kind in ("close", "release") else _us(number)
    return [kind, replica, value, text, channel, target_id, STATE_TTL_S * 1000]


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _int(value: object) -> int:
    try:
        return int(float(_text(value) or "0"))
    except ValueError:
        return 0


@attrs.frozen(kw_only=True)
class AdmitReply:
    """The admission script's answer. ``wait_s`` is exact when denied by a clock
    (cooldown, quota, open breaker, a lease held elsewhere, an empty bucket) and
    ``math.inf`` when an operator or a block must act. ``probe``: this attempt is
    the fleet's half-open probe, under breaker generation ``gen``."""

    allowed: bool
    wait_s: float
    gen: int
    probe: bool
    store_now_us: int
    why: str


def parse_admit(reply: object) -> AdmitReply:
    """Read the admission script's reply; ValueError when it is not one."""
    if not isinstance(reply, Sequence) or len(reply) != 6:
        raise ValueError("unexpected admission reply")
    allowed, wait, gen, probe, now, why = reply
    wait_us = _int(wait)
    return AdmitReply(
        allowed=_int(allowed) == 1,
        wait_s=math.inf if wait_us < 0 else wait_us / 1e6,
        gen=_int(gen),
        probe=_int(probe) == 1,
        store_now_us=_int(now),
        why=_text(why),
    )


@attrs.frozen(kw_only=True)
class SharedState:
    """One target's shared state as the store holds it (times in µs, store clock)."""

    cool_until_us: int = 0
    cool_reason: str = ""
    quota_until_us: int = 0
    breaker: str = "closed"
    open_until_us: int = 0
    gen: int = 0
    probe_owner: str = ""
    probe_until_us: int = 0
    blocked: str = ""
    op: str = ""
    by: str = ""
    what: str = ""
    at_us: int = 0
    ver: int = 0


def parse_state(fields: Mapping[object, object] | Sequence[object]) -> SharedState:
    """A state hash (a mapping, or HGETALL's flat list) as a :class:`SharedState`;
    unknown fields are ignored, malformed numbers read as 0."""
    if not isinstance(fields, Mapping):
        flat = list(fields)
        fields = dict(zip(flat[::2], flat[1::2], strict=False))
    raw = {_text(k): v for k, v in fields.items()}
    return SharedState(
        cool_until_us=_int(raw.get("cool_until")),
        cool_reason=_text(raw.get("cool_reason")),
        quota_until_us=_int(raw.get("quota_until")),
        breaker=_text(raw.get("brk")) or "closed",
        open_until_us=_int(raw.get("open_until")),
        gen=_int(raw.get("gen")),
        probe_owner=_text(raw.get("probe_owner")),
        probe_until_us=_int(raw.get("probe_until")),
        blocked=_text(raw.get("blk")),
        op=_text(raw.get("op")),
        by=_text(raw.get("by")),
        what=_text(raw.get("what")),
        at_us=_int(raw.get("at")),
        ver=_int(raw.get("ver")),
    )
