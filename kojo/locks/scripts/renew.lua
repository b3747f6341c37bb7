-- Extend the lease of hold ARGV[1] to ARGV[2] ms from now, if the owner ARGV[3] (JSON) still has it.
-- KEYS[1] holds zset, KEYS[2] owners hash (see acquire.lua).
-- Returns the new lease end, 0 when the hold is gone or its lease ran out, -1 when another owner has it.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local record = redis.call('HGET', KEYS[2], ARGV[1])
if not record then
  return 0
end
if string.match(record, '^%d+ %d+ (.*)$') ~= ARGV[3] then
  return -1
end
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now then
  -- Too late: once a lease ran out the slot may be granted again, so the hold is not revived.
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 0
end
local expires = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', expires, ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local keep_until = string.format('%d', math.max(tonumber(last[2]), expires))
redis.call('PEXPIREAT', KEYS[1], keep_until)
redis.call('PEXPIREAT', KEYS[2], keep_until)
return expires
