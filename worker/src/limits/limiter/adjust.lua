-- Charges a model's buckets more (debt) or less (refund): `State::adjust`.
-- KEYS[1] the model's hash. ARGV: now (µs; '' = Redis TIME), request interval,
-- token interval (0 = unlimited), request delta, token delta, idle expiry (ms).
-- Returns 1.
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local ri, ti = tonumber(ARGV[2]), tonumber(ARGV[3])
local dr, dt = tonumber(ARGV[4]), tonumber(ARGV[5])
local s = redis.call('HMGET', KEYS[1], 'rq', 'tk', 'last', 'pause')
local rq, tk = tonumber(s[1]) or 0, tonumber(s[2]) or 0
local last, pause = tonumber(s[3]) or 0, tonumber(s[4]) or 0

local function adjust(tat, interval, delta)
  return math.max(math.ceil(math.max(tat, now) + delta * interval), now)
end

if ri > 0 and dr ~= 0 then rq = adjust(rq, ri, dr) end
if ti > 0 and dt ~= 0 then tk = adjust(tk, ti, dt) end
redis.call('HSET', KEYS[1], 'rq', string.format('%.0f', rq), 'tk', string.format('%.0f', tk))
local horizon = math.max(math.max(rq, tk), math.max(last, pause))
redis.call('PEXPIRE', KEYS[1], math.max(math.ceil((horizon - now) / 1000), 0) + tonumber(ARGV[6]))
return 1
