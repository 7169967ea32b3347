-- Take a lease: drop expired ones, add ARGV[1] if fewer than ARGV[2] are live (a live
-- lease of ARGV[1] is renewed).
-- KEYS[1]: the lease set. ARGV[1]: holder; ARGV[2]: limit; ARGV[3]: lease (ms);
-- ARGV[4]: now (ms) or "" (server TIME).
-- Returns {taken (1/0), live leases after, ms until the earliest lease expires (refused)}.
local key, holder = KEYS[1], ARGV[1]
local limit, lease = tonumber(ARGV[2]), tonumber(ARGV[3])
local now = lease_now(ARGV[4])
lease_prune(key, now)
local held = redis.call('ZCARD', key)
local mine = redis.call('ZSCORE', key, holder)
if mine or held < limit then
  redis.call('ZADD', key, now + lease, holder)
  lease_keep(key, now)
  if not mine then
    held = held + 1
  end
  return {1, held, 0}
end
local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return {0, held, tonumber(first[2]) - now}
