"""The Lua scripts of the Redis history store.

Imports: the standard library only (pure layer).

Each room has two keys in one hash slot (the room id is their hash tag):

- ``<prefix>h:{<room>}:m``, a hash: ``e`` the room's epoch, ``n`` its latest offset;
- ``<prefix>h:{<room>}:s``, a stream: one entry per kept message, its ID
  ``<offset>-0``, its fields ``t`` (stored at, milliseconds) and ``f`` (the frame).

The hash is the room's numbering: when it is gone (expired, evicted, or Redis lost
its data) the next call creates it with a new epoch (drawn by the client, passed in
as an argument, since a script has no randomness of its own) and deletes whatever
stream is left, so offsets restart at 1. A stream that is gone while the hash stays
is the same as every message trimmed: offsets go on, and reads say what is missing.

Trimming: ``XADD ... MAXLEN ~ N`` drops whole stream nodes (cheap), so the stream may
hold a few more than N entries; reads never show more than the newest N (``first``
is at least ``latest - N + 1``). Messages older than the time to live are trimmed
from the head on every call (the stream is in time order), oldest first.

Every script refreshes both keys' expiry: a room is forgotten ``ttl`` after its last
call or ``retain``.

Numbers: Lua numbers are doubles; offsets stay exact up to 2**53 (formatted with
``%.0f``, never in exponent form). The client clamps larger arguments.
"""

from __future__ import annotations

from typing import Final

__all__ = ["APPEND", "READ"]

# KEYS: meta hash, stream. ARGV (common): candidate epoch, max messages, ttl ms,
# now ms or "" for the server's clock.
_STATE: Final = """
local meta, stream = KEYS[1], KEYS[2]
local keep = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local epoch = redis.call('HGET', meta, 'e')
local latest
if epoch then
  latest = tonumber(redis.call('HGET', meta, 'n'))
else
  epoch = ARGV[1]
  latest = 0
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'e', epoch, 'n', 0)
end
-- Messages stored ttl ago or more are gone (the stream is in time order).
local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
if #head > 0 and tonumber(head[1][2][2]) + ttl <= now then
  while true do
    local batch = redis.call('XRANGE', stream, '-', '+', 'COUNT', 64)
    if #batch == 0 then break end
    local alive = nil
    for _, entry in ipairs(batch) do
      if tonumber(entry[2][2]) + ttl > now then
        alive = entry[1]
        break
      end
    end
    if alive then
      redis.call('XTRIM', stream, 'MINID', alive)
      break
    end
    local last = batch[#batch][1]
    redis.call('XTRIM', stream, 'MINID', string.sub(last, 1, -3) .. '-1')
  end
end
redis.call('PEXPIRE', meta, ttl)
redis.call('PEXPIRE', stream, ttl)
"""

# The oldest offset readers may see: the stream's first, within the newest N.
_FIRST: Final = """
local first = latest + 1
local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
if #oldest > 0 then
  first = tonumber(string.sub(oldest[1][1], 1, -3))
end
if first < latest - keep + 1 then first = latest - keep + 1 end
"""

# ARGV[5] head, ARGV[6] tail, ARGV[7] channel ("" = no publish), ARGV[8] envelope
# prefix. Returns {offset, epoch, frame}.
APPEND: Final = (
    _STATE
    + """
latest = redis.call('HINCRBY', meta, 'n', 1)
local digits = string.format('%.0f', latest)
local frame = ARGV[5] .. digits .. ARGV[6]
redis.call('XADD', stream, 'MAXLEN', '~', keep, digits .. '-0', 't', now, 'f', frame)
redis.call('PEXPIRE', stream, ttl)
if ARGV[7] ~= '' then
  redis.call('PUBLISH', ARGV[7], ARGV[8] .. frame)
end
return {latest, epoch}
"""
)

# ARGV[5] mode: "a" after ARGV[6], "b" before ARGV[6] ("" = none), "p" position.
# ARGV[7] limit. Returns {epoch, latest, first, offset, frame, offset, frame, ...}
# with the messages in ascending order.
READ: Final = (
    _STATE
    + _FIRST
    + """
local out = {epoch, latest, first}
local mode = ARGV[5]
local limit = tonumber(ARGV[7])
local lo, hi
if mode == 'a' then
  lo = tonumber(ARGV[6]) + 1
  if lo < first then lo = first end
  hi = latest
elseif mode == 'b' then
  lo = first
  hi = latest
  local before = tonumber(ARGV[6])
  if before and before - 1 < hi then hi = before - 1 end
else
  return out
end
if lo > hi then return out end
if limit > hi - lo + 1 then limit = hi - lo + 1 end
local lo_id = string.format('%.0f', lo) .. '-0'
local hi_id = string.format('%.0f', hi) .. '-0'
local entries
if mode == 'a' then
  entries = redis.call('XRANGE', stream, lo_id, hi_id, 'COUNT', limit)
  for _, entry in ipairs(entries) do
    table.insert(out, tonumber(string.sub(entry[1], 1, -3)))
    table.insert(out, entry[2][4])
  end
else
  entries = redis.call('XREVRANGE', stream, hi_id, lo_id, 'COUNT', limit)
  for i = #entries, 1, -1 do
    table.insert(out, tonumber(string.sub(entries[i][1], 1, -3)))
    table.insert(out, entries[i][2][4])
  end
end
return out
"""
)
