-- Read a state with the clock of the node that holds it (for peek / get_stat).
--
-- KEYS[1]  the state key
-- ARGV[1]  now in ms, or '' to use the server clock (TIME)
-- Returns {now_ms, stored text or ''}.

local raw = redis.call('GET', KEYS[1])
if not raw then
  raw = ''
end
return {now_ms(ARGV[1]), raw}
