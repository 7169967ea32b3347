-- Release a lease.
-- KEYS[1]: the lease set. ARGV[1]: holder; ARGV[2]: now (ms) or "".
-- Returns 1 if the lease was live, 0 if not (already expired or released).
local key = KEYS[1]
local now = lease_now(ARGV[2])
lease_prune(key, now)
return redis.call('ZREM', key, ARGV[1])
