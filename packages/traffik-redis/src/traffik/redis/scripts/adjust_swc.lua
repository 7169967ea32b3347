-- Adjust a sliding window counter (traffik.strategies._adjust.swc_adjust); KEYS, ARGV
-- and the reply as _adjust_prelude.lua says. State "window_start_ms,previous,current".
-- A refund lowers the current count only if the charge (age_ms ago) was made in it.

local key = KEYS[1]
local now = now_ms(ARGV[1])
local limit, window = tonumber(ARGV[2]), tonumber(ARGV[3])
local delta, age = tonumber(ARGV[4]), tonumber(ARGV[6])

local current = now - mod(now, window)
local start, prev, cur = current, 0, 0
local raw = redis.call('GET', key)
local state = decode(raw)
if state and #state == 3 then
  if state[1] >= current then
    start, prev, cur = state[1], state[2], state[3]
  elseif state[1] == current - window then
    prev = state[3]
  end
end
local new = cur
if delta < 0 then
  if now - age >= current then
    new = cur + delta
    if new < 0 then
      new = 0
    end
  end
elseif delta > 0 then
  new = add_bounded(cur, delta, DEBT_FACTOR * limit)
end
if new == cur then
  return unchanged(now, raw)
end
return stored(key, now, {start, prev, new}, start + 2 * window - now)
