-- Hold every line of a reservation or none; write the reservation (and, with an ERP and no
-- cart hold, its outbox entry) in the same atomic step.
-- KEYS: 1 reservation hash, 2 INV, 3 CHANGES, 4 EXPIRY, 5..7 OUTBOX(checkout, sales, background),
--       8 HELD (owner -> units in uncommitted cart holds)
-- ARGV: 1 id, 2 fingerprint, 3 priority, 4 hold_seconds (0 = none), 5 now_ms,
--       6 mode ('standalone'|'erp'), 7 budget: the most outbox entries of this priority and
--       those above it that may wait before this priority is refused (-1 = no limit),
--       8 stream maxlen, 9 owner, 10 request id, 11 traceparent (of the creating request,
--       validated by the caller; '' = none), 12 hold quota: the most units the owner may
--       have in uncommitted cart holds (0 = none kept), 13.. triples sku|loc, qty, raw line
--       json (summed)
-- Returns {'created', key, record, ...} (the caller knows every field it just sent)
--      or {'exists', <fields>} | {'conflict'} | {'short', key, atp, key, atp, ...}
--      or {'quota', units held} | {'busy', backlog}
-- Idempotent by reservation id: a client retry (redis-py retries on timeout) finds the
-- reservation already written and answers 'exists' instead of holding twice. The request id
-- and traceparent are not part of the body: a retry under another request id is the same
-- reservation, and its ERP calls keep the first request's trace.
local res = KEYS[1]
if redis.call('EXISTS', res) == 1 then
  -- Ids are scoped to the calling key: another caller's id is never shown or reused.
  if redis.call('HGET', res, 'fp') ~= ARGV[2] or redis.call('HGET', res, 'owner') ~= ARGV[9] then
    return {'conflict'}
  end
  local out = {'exists'}
  for _, v in ipairs(redis.call('HGETALL', res)) do out[#out + 1] = v end
  return out
end

local now = tonumber(ARGV[5])
local hold = tonumber(ARGV[4])
local erp = ARGV[6] == 'erp'
local recs, short = {}, {'short'}
local n = 0
for i = 13, #ARGV, 3 do
  n = n + 1
  local key, qty = ARGV[i], tonumber(ARGV[i + 1])
  local r = rec_load(KEYS[2], key)
  local avail = rec_atp(r)
  if avail < qty then
    short[#short + 1] = key
    short[#short + 1] = avail
  end
  recs[n] = {key, r, qty}
end
if #short > 1 then return short end

-- A cart hold counts against its owner's quota until it is committed, released or expired
-- (transition.lua gives its `quota_units` back).
local quota, units = tonumber(ARGV[12]), 0
if hold > 0 and quota > 0 then
  for _, e in ipairs(recs) do units = units + e[3] end
  local held = tonumber(redis.call('HGET', KEYS[8], ARGV[9]) or '0')
  if held + units > quota then return {'quota', held} end
end

local pi = PRIORITY_INDEX[ARGV[3]]
if erp and hold == 0 and tonumber(ARGV[7]) >= 0 then
  -- Stock was checked first (a short request is 409, not 429). The wait of a new entry is
  -- the backlog of its own priority and of those served before it.
  local backlog = 0
  for i = 1, pi do backlog = backlog + redis.call('ZCARD', KEYS[4 + i]) end
  if backlog >= tonumber(ARGV[7]) then return {'busy', backlog} end
end

-- Validated: from here on every call is a write that cannot fail on its input.
local changed = {}
local lines = {}
for i, e in ipairs(recs) do
  e[2][PENDING] = e[2][PENDING] + e[3]
  changed[i] = {e[1], e[2]}
  lines[i] = ARGV[13 + (i - 1) * 3 + 2]
end

local status = 'held'
if hold == 0 and not erp then status = 'confirmed' end
local fields = {
  'id', ARGV[1], 'fp', ARGV[2], 'priority', ARGV[3], 'hold', ARGV[4], 'status', status,
  'lines', '[' .. table.concat(lines, ',') .. ']', 'created_ms', ARGV[5], 'updated_ms', ARGV[5],
  'owner', ARGV[9], 'committed', '0',
}
if hold > 0 then
  local expires = now + hold * 1000
  fields[#fields + 1] = 'expires_ms'
  fields[#fields + 1] = tostring(expires)
  redis.call('ZADD', KEYS[4], expires, ARGV[1])
  if units > 0 then
    fields[#fields + 1] = 'quota_units'
    fields[#fields + 1] = tostring(units)
    redis.call('HINCRBY', KEYS[8], ARGV[9], units)
  end
elseif erp then
  redis.call('ZADD', KEYS[4 + pi], redis_now_ms(), 'r:' .. ARGV[1])
end
if erp then
  -- Read by the gateway for this reservation's ERP calls (a cart hold's too, once committed).
  if ARGV[10] ~= '' then
    fields[#fields + 1] = 'request_id'
    fields[#fields + 1] = ARGV[10]
  end
  if ARGV[11] ~= '' then
    fields[#fields + 1] = 'traceparent'
    fields[#fields + 1] = ARGV[11]
  end
end
redis.call('HSET', res, unpack(fields))

local out = {'created'}
for _, v in ipairs(rec_save_all(KEYS[2], KEYS[3], ARGV[8], changed, now)) do
  out[#out + 1] = v
end
return out
