-- Shared by the lease scripts (lease_take, lease_renew, lease_release): the port of
-- traffik.leases. KEYS[1] is the lease set of one throttle key: a sorted set of
-- holder -> expiry (milliseconds). The last ARGV is the time in milliseconds, or ""
-- for the server's clock (TIME).

local function lease_now(arg)
  if arg == nil or arg == '' then
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return tonumber(arg)
end

-- Drop the leases expired at `now` (expiry <= now, as the Python reference does).
local function lease_prune(key, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
end

-- Keep the set exactly as long as its latest lease.
local function lease_keep(key, now)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('PEXPIRE', key, math.max(1, tonumber(last[2]) - now))
  end
end
