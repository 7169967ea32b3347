-- increment_with_ttl: add to a counter; give it a TTL only if this call created it.
--
-- KEYS[1]  the counter key
-- ARGV[1]  amount to add (an integer, may be negative)
-- ARGV[2]  TTL in ms for a new counter
-- Returns the new value.

local created = redis.call('EXISTS', KEYS[1]) == 0
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if created then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
