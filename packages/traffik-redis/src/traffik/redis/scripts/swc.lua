-- Sliding window counter (traffik.strategies.SlidingWindowCounterStrategy).
--
-- KEYS[1]  the state key; value "window_start_ms,previous_used,current_used"
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
local prev, cur = 0, 0
local state = decode(redis.call('GET', key))
if state and #state == 3 then
  local s, p, c = state[1], state[2], state[3]
  if s >= start then
    -- A start ahead of ours (a clock behind the writer's) is honoured.
    start, prev, cur = s, p, c
  elseif s == start - window then
    prev = c
  end
end
-- left: ms until this window ends (more than W if its start is ahead of now).
local left = start + window - now
local weight = window
if left < window then
  weight = left
end
local budget = limit * window - prev * weight

if (cur + cost) * window <= budget then
  cur = cur + cost
  local reset = left + window
  store(key, {start, prev, cur}, reset)
  return reply(true, limit, floor_div(budget - cur * window, window), reset, 0, window)
end

local remaining = floor_div(budget - cur * window, window)
if remaining < 0 then
  remaining = 0
end
local reset = 0
if cur ~= 0 then
  reset = left + window
elseif prev ~= 0 then
  reset = left
end
local retry
if cost > limit then
  retry = -1
elseif cur + cost <= limit then
  -- Wait in this window until the previous window's share has shrunk enough.
  retry = left - floor_div((limit - cur - cost) * window, prev)
else
  -- Wait into the next window, where this window's count becomes the previous one.
  retry = left + window - floor_div((limit - cost) * window, cur)
end
return reply(false, limit, remaining, reset, retry, window)
