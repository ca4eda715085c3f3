-- Books one request for a model: `State::reserve` in schedule.rs, step for step.
-- KEYS[1] the model's hash {rq, tk, last, pause, shift} (µs, Redis clock).
-- ARGV: now (µs; '' = Redis TIME), request interval, request tolerance,
--       token interval, token tolerance (0 = unlimited), tokens, max wait (µs),
--       idle expiry (ms).
-- Returns {granted 1|0, start - now, start, now, shift}. A model without limits
-- (both intervals 0) is only read: its start is the latest pause or start, and
-- nothing is written.
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local ri, rt = tonumber(ARGV[2]), tonumber(ARGV[3])
local ti, tt = tonumber(ARGV[4]), tonumber(ARGV[5])
local tokens, max_wait = tonumber(ARGV[6]), tonumber(ARGV[7])
if ri == 0 and ti == 0 then
  -- A model without limits: only a pause holds it, and nothing is charged.
  local s = redis.call('HMGET', KEYS[1], 'last', 'pause', 'shift')
  local shift = tonumber(s[3]) or 0
  local start = math.max(math.max(now, tonumber(s[2]) or 0), tonumber(s[1]) or 0)
  if start - now > max_wait then return {0, start - now, start, now, shift} end
  return {1, start - now, start, now, shift}
end
local s = redis.call('HMGET', KEYS[1], 'rq', 'tk', 'last', 'pause', 'shift')
local rq, tk = tonumber(s[1]) or 0, tonumber(s[2]) or 0
local last, pause, shift = tonumber(s[3]) or 0, tonumber(s[4]) or 0, tonumber(s[5]) or 0

local function earliest(tat, interval, tolerance, cost)
  local inc = cost * interval
  return tat + inc - math.max(tolerance, inc)
end
local function charge(tat, start, interval, cost)
  return math.ceil(math.max(tat, start) + cost * interval)
end

local start = math.max(math.max(now, pause), last)
if ri > 0 then start = math.max(start, earliest(rq, ri, rt, 1)) end
if ti > 0 then start = math.max(start, earliest(tk, ti, tt, tokens)) end
start = math.ceil(start)
if start - now > max_wait then
  return {0, start - now, start, now, shift}
end
if ri > 0 then rq = charge(rq, start, ri, 1) end
if ti > 0 then tk = charge(tk, start, ti, tokens) end
redis.call('HSET', KEYS[1], 'rq', string.format('%.0f', rq), 'tk', string.format('%.0f', tk),
  'last', string.format('%.0f', start))
local horizon = math.max(math.max(rq, tk), math.max(start, pause))
redis.call('PEXPIRE', KEYS[1], math.ceil((horizon - now) / 1000) + tonumber(ARGV[8]))
return {1, start - now, start, now, shift}
