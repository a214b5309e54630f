"""The Lua scripts of the Redis backplane's presence leases.

Imports: the standard library only.

Also the scripts of the per-user connection cap (``SLOT_*``): one sorted set per
user, ``<prefix>s:<user>``, whose members are connection slots scored by expiry.

One hash per room maps each user to ``node=expiry_ms;node=expiry_ms``: the processes
holding the user and when each lease expires, in Redis server time (``TIME``), so the
machines' clocks do not matter. Each script changes one hash atomically. Node ids
never hold ``=`` or ``;`` (the backplane checks them).
"""

from __future__ import annotations

from typing import Final

__all__ = ["JOIN", "LEAVE", "MEMBERS", "REFRESH", "SLOT_ACQUIRE", "SLOT_REFRESH"]

# Lease values are "node=expiry_ms;node=expiry_ms"; node ids never hold = or ;.
NOW: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

JOIN: Final = (
    NOW
    + """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local out = {}
local present = false
if cur then
  for n, e in string.gmatch(cur, '([^;=]+)=(%d+)') do
    if tonumber(e) > now then
      present = true
      if n ~= ARGV[2] then table.insert(out, n .. '=' .. e) end
    end
  end
end
table.insert(out, ARGV[2] .. '=' .. (now + tonumber(ARGV[3])))
redis.call('HSET', KEYS[1], ARGV[1], table.concat(out, ';'))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 3)
if present then return 0 end
return 1
"""
)

LEAVE: Final = (
    NOW
    + """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 1 end
local out = {}
for n, e in string.gmatch(cur, '([^;=]+)=(%d+)') do
  if n ~= ARGV[2] and tonumber(e) > now then table.insert(out, n .. '=' .. e) end
end
if #out == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
redis.call('HSET', KEYS[1], ARGV[1], table.concat(out, ';'))
return 0
"""
)

MEMBERS: Final = (
    NOW
    + """
local all = redis.call('HGETALL', KEYS[1])
local users = {}
for i = 1, #all, 2 do
  for n, e in string.gmatch(all[i + 1], '([^;=]+)=(%d+)') do
    if tonumber(e) > now then
      table.insert(users, all[i])
      break
    end
  end
end
return users
"""
)

# ARGV: node, ttl_ms, users this node holds in the room...
REFRESH: Final = (
    NOW
    + """
local node = ARGV[1]
local expiry = now + tonumber(ARGV[2])
local mine = {}
for i = 3, #ARGV do mine[ARGV[i]] = true end
local all = redis.call('HGETALL', KEYS[1])
local gone = {}
for i = 1, #all, 2 do
  local user = all[i]
  local out = {}
  for n, e in string.gmatch(all[i + 1], '([^;=]+)=(%d+)') do
    if n ~= node and tonumber(e) > now then table.insert(out, n .. '=' .. e) end
  end
  if mine[user] then
    table.insert(out, node .. '=' .. expiry)
    mine[user] = nil
  end
  if #out == 0 then
    redis.call('HDEL', KEYS[1], user)
    table.insert(gone, user)
  else
    redis.call('HSET', KEYS[1], user, table.concat(out, ';'))
  end
end
for user, _ in pairs(mine) do
  redis.call('HSET', KEYS[1], user, node .. '=' .. expiry)
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 3)
end
return gone
"""
)

# The per-user connection cap: one sorted set per user, each member a slot (one
# connection, "node/n"), scored by its expiry in Redis time.
# ARGV: slot, cap, ttl_ms. Returns 1 if taken, 0 at the cap.
SLOT_ACQUIRE: Final = (
    NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return 1
"""
)

# ARGV: ttl_ms, slots... Renews (or re-creates) them.
SLOT_REFRESH: Final = (
    NOW
    + """
local expiry = now + tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], expiry, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 0
"""
)
