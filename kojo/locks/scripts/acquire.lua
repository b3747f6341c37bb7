-- Take one of ARGV[1] slots of a lock for the owner ARGV[3] (JSON) with a lease of ARGV[2] ms.
-- KEYS[1] holds: zset token -> lease end (ms, Redis clock)
-- KEYS[2] owners: hash token -> "<since ms> <limit> <owner JSON>"
-- KEYS[3] the last token handed out for this name
-- Returns {1, token, now, lease end}; when every slot is taken, {0, now, {token, owner, ...}}; when
-- the token offered in ARGV[4] is not above the last one, {2, last token}; when ARGV[4] is '?' (a
-- probe: is a slot free?) and one is, {3}, taking nothing.
local limit = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

-- Holds whose lease ran out belong to owners that stopped renewing: forget them first.
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, token in ipairs(expired) do
  redis.call('ZREM', KEYS[1], token)
  redis.call('HDEL', KEYS[2], token)
end

if redis.call('ZCARD', KEYS[1]) >= limit then
  return {0, now, redis.call('HGETALL', KEYS[2])}
end
if ARGV[4] == '?' then
  return {3}
end

-- ARGV[4], when given, is a fresh value of a durable sequence (kojo.locks.tokens) drawn for this
-- acquire: it is the token, larger than every token granted before it whatever Redis remembers.
-- {2, last} when it is not above the last token of this name: a concurrent acquirer drew later and
-- got here first (the caller draws again), or two databases' sequences share one prefix.
-- Without it, a counter here: a missing counter is seeded from the clock in microseconds, so tokens
-- keep increasing even after Redis lost its data (no INCR pace reaches one per microsecond); hence the
-- counter may expire too. A replica promoted in a failover may be behind, though: only the
-- sequence's tokens never repeat then.
local token
if ARGV[4] and ARGV[4] ~= '' then
  local last = redis.call('GET', KEYS[3])
  if last and tonumber(ARGV[4]) <= tonumber(last) then
    return {2, last}
  end
  token = ARGV[4]
  redis.call('SET', KEYS[3], token)
else
  if redis.call('EXISTS', KEYS[3]) == 0 then
    redis.call('SET', KEYS[3], string.format('%d', tonumber(time[1]) * 1000000 + tonumber(time[2])))
  end
  token = string.format('%d', redis.call('INCR', KEYS[3]))
end
redis.call('PEXPIRE', KEYS[3], 86400000)

local expires = now + lease
redis.call('ZADD', KEYS[1], expires, token)
redis.call('HSET', KEYS[2], token, string.format('%d %d ', now, limit) .. ARGV[3])

-- Both keys vanish with their last lease, so abandoned lock names do not pile up.
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local keep_until = string.format('%d', math.max(tonumber(last[2]), expires))
redis.call('PEXPIREAT', KEYS[1], keep_until)
redis.call('PEXPIREAT', KEYS[2], keep_until)
return {1, token, now, expires}
