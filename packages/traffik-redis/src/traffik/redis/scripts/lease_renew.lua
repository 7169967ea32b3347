-- Renew a live lease to ARGV[2] ms from now.
-- KEYS[1]: the lease set. ARGV[1]: holder; ARGV[2]: lease (ms); ARGV[3]: now (ms) or "".
-- Returns 1 if renewed, 0 if the lease is gone (expired or released).
local key, holder = KEYS[1], ARGV[1]
local now = lease_now(ARGV[3])
lease_prune(key, now)
if not redis.call('ZSCORE', key, holder) then
  return 0
end
redis.call('ZADD', key, now + tonumber(ARGV[2]), holder)
lease_keep(key, now)
return 1
