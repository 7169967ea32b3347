-- Sliding window log (traffik.strategies.SlidingWindowLogStrategy).
--
-- KEYS[1]  the state key; value "t1,c1,t2,c2,..." (admission times and costs)
-- ARGV[1]  now in ms, or '' to use the server clock (TIME)
-- ARGV[2]  limit (units per window)
-- ARGV[3]  window in ms
-- ARGV[4]  cost of this request (the caller caps it at limit + 1)
-- ARGV[5]  capacity (unused: the limit)
-- Returns "allowed,limit,remaining,reset_ms,retry_after_ms,window_ms" (one string; see reply()).

local key = KEYS[1]
local now = now_ms(ARGV[1])
local limit, window, cost = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])

-- Entries are ascending: drop the leading ones that left the window.
local entries = {}
local used = 0
local state = decode(redis.call('GET', key))
if state and #state % 2 == 0 then
  local horizon = now - window
  local first, len = 1, #state
  while first <= len and state[first] <= horizon do
    first = first + 2
  end
  if first == 1 then
    entries = state -- nothing left the window: keep the decoded list as it is
  else
    for j = first, len do
      entries[j - first + 1] = state[j]
    end
  end
  for j = 2, #entries, 2 do
    used = used + entries[j]
  end
end
local n = #entries

if used + cost <= limit then
  if n > 0 and entries[n - 1] >= now then
    -- Same millisecond (or a clock behind the last writer's): merge, keep order.
    entries[n] = entries[n] + cost
  else
    entries[n + 1] = now
    entries[n + 2] = cost
    n = n + 2
  end
  used = used + cost
  local reset = entries[n - 1] + window - now
  store(key, entries, reset)
  return reply(true, limit, limit - used, reset, 0, window)
end

local reset = 0
if n > 0 then
  reset = entries[n - 1] + window - now
end
local retry = 0
if cost > limit then
  retry = -1
else
  -- Drop the oldest entries until the cost fits; the last one dropped says when.
  local excess = used + cost - limit
  for j = 1, n, 2 do
    excess = excess - entries[j + 1]
    if excess <= 0 then
      retry = entries[j] + window - now
      break
    end
  end
end
local remaining = limit - used
if remaining < 0 then
  remaining = 0
end
return reply(false, limit, remaining, reset, retry, window)
