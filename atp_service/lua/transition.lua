-- Commit, release or expire one reservation (reservation.TRANSITIONS), returning its stock
-- when it leaves held/confirmed.
-- With an ERP, a commit queues the reservation for the ERP; a release takes a not-yet-sent
-- reservation off the outbox, or queues a cancel (DELETE) when the ERP has, or may have,
-- allocated it (confirmed, or an earlier attempt's outcome is unknown). One that is in flight
-- right now is left to its outcome (erp_outcome.lua queues the cancel if it was confirmed).
-- KEYS: 1 reservation hash, 2 INV, 3 CHANGES, 4 EXPIRY, 5 SETTLE,
--       6..8 OUTBOX(checkout, sales, background), 9 ATTEMPTS, 10 HELD
-- ARGV: 1 action ('commit'|'release'|'expire'), 2 now_ms, 3 mode ('standalone'|'erp'),
--       4 stream maxlen, 5 cancel delay ms (the ERP call timeout),
--       6 owner ('' = any: an admin key, or the service itself), 7 retention ms (finished),
--       8, 9 request id and traceparent of a release (its ERP cancel carries them; may be '')
-- Returns {'missing'} | {'not_committable', <fields>} | {'ok', <fields>, '', key, record, ...}
local res = KEYS[1]
if redis.call('EXISTS', res) == 0 then return {'missing'} end
if ARGV[6] ~= '' and redis.call('HGET', res, 'owner') ~= ARGV[6] then return {'missing'} end
local action, now, erp = ARGV[1], tonumber(ARGV[2]), ARGV[3] == 'erp'
local status = redis.call('HGET', res, 'status')
local cart = tonumber(redis.call('HGET', res, 'hold')) > 0
  and redis.call('HGET', res, 'committed') == '0'
local due = cart and tonumber(redis.call('HGET', res, 'expires_ms') or '0') <= now

local function fields(tag)
  local out = {tag}
  for _, v in ipairs(redis.call('HGETALL', res)) do out[#out + 1] = v end
  return out
end

-- An uncommitted cart hold past its expiry is expired by whichever step sees it first.
if status == 'held' and cart and due then action = 'expire' end

local new = status
if status == 'held' and cart then
  if action == 'commit' then new = erp and 'held' or 'confirmed'
  elseif action == 'release' then new = 'released'
  elseif action == 'expire' then new = 'expired' end
elseif (status == 'held' or status == 'confirmed') and action == 'release' then
  new = 'released'
end

if new == status and not (action == 'commit' and status == 'held' and cart) then
  if ARGV[1] == 'commit' and (status == 'released' or status == 'expired'
      or status == 'rejected') then
    return fields('not_committable')
  end
  return fields('ok')
end

local id = redis.call('HGET', res, 'id')
if cart then
  -- Committed, released or expired: the hold no longer counts against its owner's quota.
  local units = redis.call('HGET', res, 'quota_units')
  if units then
    local owner = redis.call('HGET', res, 'owner')
    if redis.call('HINCRBY', KEYS[10], owner, -tonumber(units)) <= 0 then
      redis.call('HDEL', KEYS[10], owner)
    end
    redis.call('HDEL', res, 'quota_units')
  end
end
local box = KEYS[5 + PRIORITY_INDEX[redis.call('HGET', res, 'priority')]]
redis.call('HSET', res, 'status', new, 'updated_ms', ARGV[2])
if action == 'commit' then
  redis.call('HSET', res, 'committed', '1')
  redis.call('ZREM', KEYS[4], id)
  if erp then redis.call('ZADD', box, redis_now_ms(), 'r:' .. id) end
  return fields('ok')
end

if erp and new == 'released' and not cart then
  if ARGV[8] ~= '' then
    redis.call('HSET', res, 'cancel_request_id', ARGV[8], 'cancel_traceparent', ARGV[9])
  end
  if status == 'confirmed' then
    redis.call('ZADD', box, redis_now_ms(), 'c:' .. id)
  elseif redis.call('ZREM', box, 'r:' .. id) == 1 then
    -- Not sent again. If an earlier attempt timed out it may still have been allocated:
    -- cancel after that attempt can no longer be in progress.
    if tonumber(redis.call('HGET', KEYS[9], 'r:' .. id) or '0') > 0 then
      redis.call('ZADD', box, redis_now_ms() + tonumber(ARGV[5]), 'c:' .. id)
    end
    redis.call('HDEL', KEYS[9], 'r:' .. id)
  end
end

-- Leaving held/confirmed: give back what this reservation still holds in `pending`.
redis.call('ZREM', KEYS[4], id)
local changed = {}
for _, line in ipairs(cjson.decode(redis.call('HGET', res, 'lines'))) do
  local key = line.sku .. '|' .. line.location
  local counted = true
  if line.erp_seq then
    -- A confirmed line stops counting once an ERP event reflected it (settled).
    local member = key .. '\0' .. pad(line.erp_seq) .. '\0' .. id .. '\0' .. line.qty
    counted = redis.call('ZREM', KEYS[5], member) == 1
  end
  if counted then
    local r = rec_load(KEYS[2], key)
    if r then
      r[PENDING] = r[PENDING] - line.qty
      changed[#changed + 1] = {key, r}
    end
  end
end
retire(res, id, box, tonumber(ARGV[7]))
local out = fields('ok')
if ARGV[1] == 'commit' then out[1] = 'not_committable' end
out[#out + 1] = ''
for _, v in ipairs(rec_save_all(KEYS[2], KEYS[3], ARGV[4], changed, now)) do
  out[#out + 1] = v
end
return out
