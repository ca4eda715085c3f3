-- Pauses a model for the whole fleet: `State::pause`.
-- KEYS[1] the model's hash. ARGV: now (µs; '' = Redis TIME), duration (µs),
-- idle expiry (ms).
-- Returns {extended 1|0, pause end - now, shift}.
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local s = redis.call('HMGET', KEYS[1], 'rq', 'tk', 'last', 'pause', 'shift')
local rq, tk = tonumber(s[1]) or 0, tonumber(s[2]) or 0
local last, pause, shift = tonumber(s[3]) or 0, tonumber(s[4]) or 0, tonumber(s[5]) or 0

local resume = now + tonumber(ARGV[2])
local current = math.max(pause, now)
if resume <= current then
  return {0, current - now, shift}
end
local extension = resume - current
if rq > now then rq = rq + extension end
if tk > now then tk = tk + extension end
if last > now then last = last + extension end
shift = shift + extension
redis.call('HSET', KEYS[1], 'rq', string.format('%.0f', rq), 'tk', string.format('%.0f', tk),
  'last', string.format('%.0f', last), 'pause', string.format('%.0f', resume),
  'shift', string.format('%.0f', shift))
local horizon = math.max(math.max(rq, tk), math.max(last, resume))
redis.call('PEXPIRE', KEYS[1], math.ceil((horizon - now) / 1000) + tonumber(ARGV[3]))
return {1, resume - now, shift}
