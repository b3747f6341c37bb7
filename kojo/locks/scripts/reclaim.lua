-- Drop holds whose owner died: ARGV is token, record, token, record, ... as the caller read them.
-- A hold is dropped only if its record is still the one the caller judged dead.
-- KEYS[1] holds zset, KEYS[2] owners hash (see acquire.lua). Returns how many holds were dropped.
local dropped = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
    dropped = dropped + 1
  end
end
return dropped
