-- Record what the ERP answered for one outbox entry (idempotent: a late or repeated outcome
-- of an entry another replica took over changes nothing more).
-- KEYS: 1 reservation hash, 2 INV, 3 CHANGES, 4 SETTLE, 5 INFLIGHT,
--       6..8 OUTBOX(checkout, sales, background), 9 ATTEMPTS, 10 ERP_NEXT
-- ARGV: 1 member ('r:<id>' | 'c:<id>'), 2 priority, 3 outcome, 4 now_ms, 5 stream maxlen,
--       6 outcome data, 7 pause ms (429: no replica calls the ERP before now + pause),
--       8 retention ms of a finished reservation
--   outcome 'confirmed' (r:): data = JSON lines [{sku, location, qty, erp_seq}] as sent back
--   outcome 'rejected'  (r:): data = reason
--   outcome 'retry':          data = delay ms before this entry may be sent again
--   outcome 'done'      (c:): the ERP no longer holds the allocation (200 or 404)
-- Returns {status, '', key, record, ...}
local member, prio, outcome = ARGV[1], ARGV[2], ARGV[3]
local box = KEYS[5 + PRIORITY_INDEX[prio]]
local rnow = redis_now_ms()
redis.call('ZREM', KEYS[5], prio .. '|' .. member)

local pause = tonumber(ARGV[7])
if pause > 0 then
  local allowed = tonumber(redis.call('GET', KEYS[10]) or '0')
  if allowed < rnow + pause then
    redis.call('SET', KEYS[10], tostring(rnow + pause), 'PX', 3600000)
  end
end

if outcome == 'retry' then
  redis.call('ZADD', box, rnow + tonumber(ARGV[6]), member)
  return {''}
end
redis.call('ZREM', box, member)
redis.call('HDEL', KEYS[9], member)

local res = KEYS[1]
if redis.call('EXISTS', res) == 0 then return {''} end
local id = redis.call('HGET', res, 'id')
local status = redis.call('HGET', res, 'status')
if string.sub(member, 1, 2) == 'c:' then
  redis.call('HSET', res, 'erp_cancelled', '1')
  if status ~= 'held' and status ~= 'confirmed' then retire(res, id, box, tonumber(ARGV[8])) end
  return {status, ''}
end
if status ~= 'held' and status ~= 'released' then return {status, ''} end
if status == 'released' and redis.call('HEXISTS', res, 'erp_outcome') == 1 then
  return {status, ''}
end

local changed = {}
local lines = cjson.decode(redis.call('HGET', res, 'lines'))
redis.call('HSET', res, 'erp_outcome', outcome, 'updated_ms', ARGV[4])
if outcome == 'rejected' then
  redis.call('HSET', res, 'reason', ARGV[6])
  if status == 'held' then
    redis.call('HSET', res, 'status', 'rejected')
    for _, line in ipairs(lines) do
      local key = line.sku .. '|' .. line.location
      local r = rec_load(KEYS[2], key)
      if r then
        r[PENDING] = r[PENDING] - line.qty
        changed[#changed + 1] = {key, r}
      end
    end
    status = 'rejected'
  end
else -- confirmed
  local seqs = {}
  for _, l in ipairs(cjson.decode(ARGV[6])) do seqs[l.sku .. '|' .. l.location] = l.erp_seq end
  for _, line in ipairs(lines) do
    local key = line.sku .. '|' .. line.location
    line.erp_seq = seqs[key]
    if status == 'held' then
      -- Settled once the key's applied seq reaches erp_seq, whichever comes first.
      local r = rec_load(KEYS[2], key)
      if r and r[SEQ] >= tonumber(line.erp_seq) then
        r[PENDING] = r[PENDING] - line.qty
        changed[#changed + 1] = {key, r}
      else
        redis.call('ZADD', KEYS[4], 0,
          key .. '\0' .. pad(line.erp_seq) .. '\0' .. id .. '\0' .. line.qty)
      end
    end
  end
  redis.call('HSET', res, 'lines', cjson.encode(lines))
  if status == 'held' then
    redis.call('HSET', res, 'status', 'confirmed')
    status = 'confirmed'
  else
    -- Released while in flight: the stock came back locally then; free it at the ERP too.
    redis.call('ZADD', box, rnow, 'c:' .. id)
  end
end

if status ~= 'held' and status ~= 'confirmed' then retire(res, id, box, tonumber(ARGV[8])) end
local out = {status, ''}
for _, v in ipairs(rec_save_all(KEYS[2], KEYS[3], ARGV[5], changed, tonumber(ARGV[4]))) do
  out[#out + 1] = v
end
return out
