-- Adjust GCRA (traffik.strategies._adjust.gcra_adjust); KEYS, ARGV and the reply as
-- _adjust_prelude.lua says. State "tat_ms,remainder". A refund moves the theoretical
-- arrival time back, never before now; a charge moves it on, up to twice the burst.

local key = KEYS[1]
local now = now_ms(ARGV[1])
local limit, window = tonumber(ARGV[2]), tonumber(ARGV[3])
local delta, burst = tonumber(ARGV[4]), tonumber(ARGV[5])

local ahead = 0
local raw = redis.call('GET', key)
local state = decode(raw)
if state and #state == 2 then
  ahead = (state[1] - now) * limit + state[2]
  if ahead < 0 then
    ahead = 0
  end
end
local new = ahead
if delta < 0 then
  new = ahead + delta * window
  if new < 0 then
    new = 0
  end
elseif delta > 0 then
  new = add_bounded(ahead, delta * window, DEBT_FACTOR * burst * window)
end
if new == ahead then
  return unchanged(now, raw)
end
local whole = floor_div(new, limit)
return stored(key, now, {now + whole, new - whole * limit}, ceil_div(new, limit))
