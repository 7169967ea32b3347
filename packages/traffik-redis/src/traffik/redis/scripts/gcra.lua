-- GCRA (traffik.strategies.GCRAStrategy).
--
-- KEYS[1]  the state key; value "tat_ms,remainder" (TAT = tat_ms + remainder / limit)
-- ARGV[1]  now in ms, or '' to use the server clock (TIME)
-- ARGV[2]  limit (units per window)
-- ARGV[3]  window in ms
-- ARGV[4]  cost of this request (the caller caps it at burst + 1)
-- ARGV[5]  burst in units (strategy.capacity(rate))
-- Returns "allowed,burst,remaining,reset_ms,retry_after_ms,window_ms" (one string; see reply()).

local key = KEYS[1]
local now = now_ms(ARGV[1])
local limit, window, cost = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local burst = tonumber(ARGV[5])

local tolerance = burst * window
-- ahead: how far the TAT is past now, in units of 1/limit ms (0 if in the past).
local ahead = 0
local state = decode(redis.call('GET', key))
if state and #state == 2 then
  -- Not state[1] >= now: a remainder stored under a smaller limit (a redeploy) can
  -- hold whole milliseconds. A TAT long past can round here, but stays negative.
  ahead = (state[1] - now) * limit + state[2]
  if ahead < 0 then
    ahead = 0
  end
end

local need = cost * window
if need <= tolerance - ahead then
  ahead = ahead + need
  local whole = floor_div(ahead, limit)
  local reset = ceil_div(ahead, limit)
  store(key, {now + whole, ahead - whole * limit}, reset)
  return reply(true, burst, floor_div(tolerance - ahead, window), reset, 0, window)
end

local retry = -1
if cost <= burst then
  retry = ceil_div((ahead - tolerance) + need, limit)
end
local remaining = floor_div(tolerance - ahead, window)
if remaining < 0 then
  remaining = 0
end
return reply(false, burst, remaining, ceil_div(ahead, limit), retry, window)
