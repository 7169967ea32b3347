-- Adjust a meter, the state of the bucket strategies (traffik.strategies._adjust.
-- meter_adjust); KEYS, ARGV and the reply as _adjust_prelude.lua says. State
-- "level,last_ms" (level: units in use x window). A refund lowers the level down to
-- empty (a full bucket); a charge raises it, into debt up to twice the capacity.

local key = KEYS[1]
local now = now_ms(ARGV[1])
local limit, window = tonumber(ARGV[2]), tonumber(ARGV[3])
local delta, capacity = tonumber(ARGV[4]), tonumber(ARGV[5])

local level = 0
local at = now
local raw = redis.call('GET', key)
local state = decode(raw)
if state and #state == 2 then
  level = state[1]
  local elapsed = now - state[2]
  if elapsed > 0 then
    if elapsed >= ceil_div(level, limit) then
      level = 0
    else
      level = level - elapsed * limit
    end
  elseif elapsed < 0 then
    at = state[2]
  end
end
local new = level
if delta < 0 then
  new = level + delta * window
  if new < 0 then
    new = 0
  end
elseif delta > 0 then
  new = add_bounded(level, delta * window, DEBT_FACTOR * capacity * window)
end
if new == level then
  return unchanged(now, raw)
end
return stored(key, now, {new, at}, at - now + ceil_div(new, limit))
