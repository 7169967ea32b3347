-- Adjust a fixed window (traffik.strategies._adjust.fw_adjust); KEYS, ARGV and the
-- reply as _adjust_prelude.lua says. State "window_start_ms,used". A refund gives
-- back only if the charge (age_ms ago) was made in the current window.

local key = KEYS[1]
local now = now_ms(ARGV[1])
local limit, window = tonumber(ARGV[2]), tonumber(ARGV[3])
local delta, age = tonumber(ARGV[4]), tonumber(ARGV[6])

local current = now - mod(now, window)
local start, used = current, 0
local raw = redis.call('GET', key)
local state = decode(raw)
if state and #state == 2 and state[1] >= current then
  start, used = state[1], state[2]
end
local new = used
if delta < 0 then
  if now - age >= current then
    new = used + delta
    if new < 0 then
      new = 0
    end
  end
elseif delta > 0 then
  -- A full window is all the debt a fixed window holds.
  new = add_bounded(used, delta, limit)
end
if new == used then
  return unchanged(now, raw)
end
return stored(key, now, {start, new}, start + window - now)
