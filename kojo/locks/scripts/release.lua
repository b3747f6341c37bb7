-- Give back hold ARGV[1] if the owner ARGV[2] (JSON) has it.
-- KEYS[1] holds zset, KEYS[2] owners hash (see acquire.lua).
-- Returns 1 when released, 0 when the hold was already gone or its lease ran out, -1 when another
-- owner has it (then nothing changes).
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local record = redis.call('HGET', KEYS[2], ARGV[1])
if not record then
  return 0
end
if string.match(record, '^%d+ %d+ (.*)$') ~= ARGV[2] then
  return -1
end
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if not score or tonumber(score) <= now then
  return 0
end
return 1
