-- The holds of one lock as the Redis that keeps it sees them now (on a cluster, each node has its own
-- clock). KEYS[1] holds zset, KEYS[2] owners hash (see acquire.lua).
-- Returns {now ms, {token, record, ...}, {token, lease end, ...}}.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
return {now, redis.call('HGETALL', KEYS[2]), redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')}
