-- Shared by the adjustment scripts (adjust_*.lua), after _prelude.lua; never run alone.
--
-- An adjustment gives back -delta units (delta < 0) or charges delta more without
-- refusing (delta > 0), as traffik.strategies._adjust does. Every adjustment script
-- takes the same KEYS and ARGV:
--
-- KEYS[1]  the state key
-- ARGV[1]  now in ms, or '' to use the server clock (TIME)
-- ARGV[2]  limit (units per window)
-- ARGV[3]  window in ms
-- ARGV[4]  delta in units, already bounded to +-2 x capacity by the caller
-- ARGV[5]  capacity in units (strategy.capacity(rate))
-- ARGV[6]  age_ms: how long ago the refunded charge was made (0 or more)
--
-- and returns {now_ms, the stored state after, or ''}; the caller computes the
-- snapshot (traffik.strategies.Strategy.snapshot) from them.

-- A usage may hold this many times its capacity (one quota of debt).
local DEBT_FACTOR = 2

-- used + delta for a charge, bounded at top (never lowering a usage already above it).
local function add_bounded(used, delta, top)
  local new = used + delta
  if new > top then
    if used > top then
      return used
    end
    return top
  end
  return new
end

local function unchanged(now, raw)
  if not raw then
    raw = ''
  end
  return {now, raw}
end

local function stored(key, now, list, ttl)
  store(key, list, ttl)
  return {now, encode(list)}
end
