-- Shared by every script (prepended at load time). Record layout: inventory.FIELDS.
local FMT = '<i8i8i8i8i8i8i8i8'
local ON_HAND, ALLOCATED, SAFETY, SEQ, PENDING, VER, FLAGS, UPDATED = 1, 2, 3, 4, 5, 6, 7, 8
local FLAG_SNAPSHOT, FLAG_GAP = 1, 2

local function rec_load(inv, key)
  local raw = redis.call('HGET', inv, key)
  if not raw then return nil end
  local r = {struct.unpack(FMT, raw)}
  r[9] = nil -- struct.unpack returns the next position last
  return r
end

local function rec_pack(r)
  return struct.pack(FMT, r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8])
end

local function rec_atp(r)
  if r == nil or bit.band(r[FLAGS], FLAG_SNAPSHOT) == 0 then return 0 end
  local v = r[ON_HAND] - r[ALLOCATED] - r[SAFETY] - r[PENDING]
  if v < 0 then return 0 end
  return v
end

-- Redis's own clock: one clock for every replica (outbox order, ERP pacing, leases).
local function redis_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local PRIORITY_INDEX = {checkout = 1, sales = 2, background = 3}

local function pad(n)
  return string.format('%016d', n)
end

-- Save changed records and publish them on the change stream in one entry.
-- changed: list of {key, record}
local function rec_save_all(inv, changes, maxlen, changed, now)
  if #changed == 0 then return {} end
  local xadd = {'XADD', changes, 'MAXLEN', '~', maxlen, '*'}
  local out = {}
  for _, kv in ipairs(changed) do
    kv[2][VER] = kv[2][VER] + 1
    local packed = rec_pack(kv[2])
    redis.call('HSET', inv, kv[1], packed)
    xadd[#xadd + 1] = kv[1]
    xadd[#xadd + 1] = packed
    out[#out + 1] = kv[1]
    out[#out + 1] = packed
  end
  redis.call(unpack(xadd))
  return out
end

-- A finished reservation (released, expired, rejected) is kept for the retention, then Redis
-- deletes it; one with an ERP cancel still to send is kept until that cancel is answered.
local function retire(res, id, box, retention_ms)
  if redis.call('ZSCORE', box, 'c:' .. id) then
    redis.call('PERSIST', res)
  else
    redis.call('PEXPIRE', res, retention_ms)
  end
end
