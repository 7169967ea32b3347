-- Fixed window (traffik.strategies.FixedWindowStrategy).
--
-- KEYS[1]  the state key; value "window_start_ms,used"
-- ARGV[1]  now in ms, or '' to use the server clock (TIME)
-- ARGV[2]  limit (units per window)
-- ARGV[3]  window in ms
-- ARGV[4]  cost of this request (the caller caps it at limit + 1)
-- ARGV[5]  capacity (unused: the limit)
-- Returns "allowed,limit,remaining,reset_ms,retry_after_ms,window_ms" (one string; see reply()).

local key = KEYS[1]
local now = now_ms(ARGV[1])
local limit, window, cost = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])

local start = now - mod(now, window)
local used = 0
local state = decode(redis.call('GET', key))
if state and #state == 2 and state[1] >= start then
  start, used = state[1], state[2]
end
local reset = start + window - now

if used + cost <= limit then
  used = used + cost
  store(key, {start, used}, reset)
  return reply(true, limit, limit - used, reset, 0, window)
end

local retry = reset
if cost > limit then
  retry = -1
end
local shown_reset = 0
if used ~= 0 then
  shown_reset = reset
end
local remaining = limit - used
if remaining < 0 then
  remaining = 0
end
return reply(false, limit, remaining, shown_reset, retry, window)
