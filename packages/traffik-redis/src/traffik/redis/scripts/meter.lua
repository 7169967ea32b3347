-- The meter behind the bucket strategies (traffik.strategies._meter.meter_step):
-- TokenBucketStrategy, TokenBucketWithDebtStrategy, LeakyBucketStrategy and
-- LeakyBucketWithQueueStrategy differ only in their capacity.
--
-- KEYS[1]  the state key; value "level,last_ms" (level: units in use x window)
-- ARGV[1]  now in ms, or '' to use the server clock (TIME)
-- ARGV[2]  limit (units refilled per window)
-- ARGV[3]  window in ms
-- ARGV[4]  cost of this request (the caller caps it at capacity + 1)
-- ARGV[5]  capacity in units (strategy.capacity(rate))
-- Returns "allowed,capacity,remaining,reset_ms,retry_after_ms,window_ms" (one string; see reply()).

local key = KEYS[1]
local now = now_ms(ARGV[1])
local limit, window, cost = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local capacity = tonumber(ARGV[5])

local top = capacity * window
local level = 0
-- at: the time the level is taken at. A stored time ahead of now (this clock behind
-- the writer's) is kept, so a skewed clock never drains the same interval twice.
local at = now
local state = decode(redis.call('GET', key))
if state and #state == 2 then
  level = state[1]
  local elapsed = now - state[2]
  if elapsed > 0 then
    -- Compare before multiplying: elapsed x limit could pass 2^53.
    if elapsed >= ceil_div(level, limit) then
      level = 0
    else
      level = level - elapsed * limit
    end
  elseif elapsed < 0 then
    at = state[2]
  end
end
local lag = at - now

local need = cost * window
-- need <= top - level is level + need <= top without a sum above 2^53.
if need <= top - level then
  level = level + need
  local drain = lag + ceil_div(level, limit)
  store(key, {level, at}, drain)
  return reply(true, capacity, floor_div(top - level, window), drain, 0, window)
end

local retry = -1
if cost <= capacity then
  retry = lag + ceil_div((level - top) + need, limit)
end
local drain = lag + ceil_div(level, limit)
-- A level above the top: stored under a larger capacity or rate (a redeploy).
local remaining = 0
if level < top then
  remaining = floor_div(top - level, window)
end
return reply(false, capacity, remaining, drain, retry, window)
