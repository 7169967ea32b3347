-- Shared helpers, prepended to every strategy script (never run on its own).
--
-- Lua numbers are IEEE doubles. Every value handled here is an integer whose
-- magnitude stays below 2^53 (traffik.rates.Rate guarantees limit x window does),
-- so sums, differences and products are exact. Division is not: a / b is rounded,
-- so floor_div corrects math.floor(a / b) by one step, which makes it Python's //.
-- State is stored as Python's traffik.strategies.encode_state writes it: decimal
-- integers joined by commas ("1700000000000,3").

local function floor_div(a, b)
  local q = math.floor(a / b)
  local r = a - q * b
  if r < 0 then
    q = q - 1
  elseif r >= b then
    q = q + 1
  end
  return q
end

local function ceil_div(a, b)
  return -floor_div(-a, b)
end

-- Python's a % b for b > 0: never negative.
local function mod(a, b)
  return a - floor_div(a, b) * b
end

-- The decision time: ARGV given by the caller, or the server clock.
local function now_ms(arg)
  if arg ~= nil and arg ~= '' then
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- "a,b,c" -> {a, b, c}; nil (a fresh key) when absent or not a list of integers.
local function decode(raw)
  if not raw or raw == '' then
    return nil
  end
  -- The usual shapes (two or three integers) in one match instead of a loop.
  local a, b, c = string.match(raw, '^(%-?%d+),(%-?%d+)$')
  if a then
    return {tonumber(a), tonumber(b)}
  end
  a, b, c = string.match(raw, '^(%-?%d+),(%-?%d+),(%-?%d+)$')
  if a then
    return {tonumber(a), tonumber(b), tonumber(c)}
  end
  -- Longer lists (the sliding log) in one pass of C: when the text holds only digits,
  -- minus signs and commas, cjson reads exactly the lists of -?[0-9]+ the loop below
  -- accepts, as the same doubles (both use strtod). What it refuses goes to the loop,
  -- which decides as before.
  if not string.find(raw, '[^%d,%-]') then
    local ok, list = pcall(cjson.decode, '[' .. raw .. ']')
    if ok then
      return list
    end
  end
  local out = {}
  for part in string.gmatch(raw .. ',', '([^,]*),') do
    if not string.find(part, '^%-?%d+$') then
      return nil
    end
    out[#out + 1] = tonumber(part)
  end
  return out
end

local function encode(list)
  if #list == 2 then
    return string.format('%d,%d', list[1], list[2])
  elseif #list == 3 then
    return string.format('%d,%d,%d', list[1], list[2], list[3])
  end
  -- Longer lists in one pass of C: table.concat writes integers below 1e14 in full
  -- ("%.14g"); larger ones come out as "1e+14" and -0 as "-0", so those take the loop.
  local text = table.concat(list, ',')
  if not string.find(text, '[e%.]') and not string.find(text, '-0', 1, true) then
    return text
  end
  local parts = {}
  for i = 1, #list do
    parts[i] = string.format('%d', list[i])
  end
  return table.concat(parts, ',')
end

-- Store a state for ttl milliseconds (at least 1: PX 0 is an error).
local function store(key, list, ttl)
  if ttl < 1 then
    ttl = 1
  end
  redis.call('SET', key, encode(list), 'PX', string.format('%d', ttl))
end

-- The reply, one bulk string (one RESP line to parse instead of seven):
-- "allowed (1/0),limit,remaining,reset_ms,retry_after_ms (-1: never),window_ms".
local function reply(allowed, limit, remaining, reset, retry, window)
  local flag = 0
  if allowed then
    flag = 1
  end
  return string.format('%d,%d,%d,%d,%d,%d', flag, limit, remaining, reset, retry, window)
end
