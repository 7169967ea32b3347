-- Adjust a sliding window log (traffik.strategies._adjust.swl_adjust); KEYS, ARGV and
-- the reply as _adjust_prelude.lua says. State "t1,c1,t2,c2,...". A refund removes
-- the newest entries while the charge (age_ms ago) is still inside the window; a
-- charge is recorded now.

local key = KEYS[1]
local now = now_ms(ARGV[1])
local limit, window = tonumber(ARGV[2]), tonumber(ARGV[3])
local delta, age = tonumber(ARGV[4]), tonumber(ARGV[6])

local entries = {}
local used = 0
local raw = redis.call('GET', key)
local state = decode(raw)
if state and #state % 2 == 0 then
  local horizon = now - window
  local first, len = 1, #state
  while first <= len and state[first] <= horizon do
    first = first + 2
  end
  for j = first, len do
    entries[j - first + 1] = state[j]
  end
  for j = 2, #entries, 2 do
    used = used + entries[j]
  end
end
local n = #entries
local changed = false

if delta < 0 and age < window and n > 0 then
  changed = true
  local give = -delta
  while give > 0 and n > 0 do
    local last = entries[n]
    if last <= give then
      give = give - last
      entries[n] = nil
      entries[n - 1] = nil
      n = n - 2
    else
      entries[n] = last - give
      give = 0
    end
  end
elseif delta > 0 then
  local add = add_bounded(used, delta, DEBT_FACTOR * limit) - used
  if add > 0 then
    changed = true
    if n > 0 and entries[n - 1] >= now then
      entries[n] = entries[n] + add
    else
      entries[n + 1] = now
      entries[n + 2] = add
      n = n + 2
    end
  end
end

if not changed then
  return unchanged(now, raw)
end
if n == 0 then
  redis.call('DEL', key)
  return {now, ''}
end
return stored(key, now, entries, entries[n - 1] + window - now)
