-- Apply a batch of ERP events for ONE (sku, location) key, in the order given, with the seq
-- rules of inventory.KeyLedger; then settle confirmed lines whose erp_seq is now reflected.
-- Exactly-once by (key, seq): a redelivered or retried event is a duplicate, never reapplied.
-- KEYS: 1 INV, 2 BUF, 3 SETTLE, 4 CHANGES
-- ARGV: 1 key, 2 now_ms, 3 stream maxlen,
--       4.. groups of 3: 's', seq, on_hand|allocated|safety_stock  (snapshot)
--                        'a', seq, on_hand_delta|allocated_delta   (adjustment)
--       (figures joined by '|', validated by decode.event before this script runs)
-- Returns {applied, duplicates, buffered, negative, settled, key, record | ''}
local key, now = ARGV[1], tonumber(ARGV[2])
local r = rec_load(KEYS[1], key)
local applied, dups, buffered, negative, settled = 0, 0, 0, 0, 0
local bufmin, bufmax = key .. '\0', key .. '\1'

local function has_snapshot()
  return r ~= nil and bit.band(r[FLAGS], FLAG_SNAPSHOT) ~= 0
end

local function figures(s)
  local out = {}
  for x in string.gmatch(s, '[^|]+') do out[#out + 1] = tonumber(x) end
  return out
end

local function adjust(seq, f)
  r[ON_HAND] = r[ON_HAND] + f[1]
  r[ALLOCATED] = r[ALLOCATED] + f[2]
  r[SEQ] = seq
  if r[ON_HAND] < 0 or r[ALLOCATED] < 0 then negative = negative + 1 end
end

-- Apply buffered adjustments that became next in line; drop those now at or below seq.
local function drain()
  while true do
    local first = redis.call('ZRANGEBYLEX', KEYS[2], '[' .. bufmin, '(' .. bufmax, 'LIMIT', 0, 1)
    if #first == 0 then return end
    local m = first[1]
    local seq = tonumber(string.sub(m, #key + 2, #key + 17))
    if seq <= r[SEQ] then
      redis.call('ZREM', KEYS[2], m)
    elseif seq == r[SEQ] + 1 then
      redis.call('ZREM', KEYS[2], m)
      adjust(seq, figures(string.sub(m, #key + 19)))
      applied = applied + 1
    else
      return
    end
  end
end

local touched = false
for i = 4, #ARGV, 3 do
  local kind, seq, f = ARGV[i], tonumber(ARGV[i + 1]), figures(ARGV[i + 2])
  if has_snapshot() and seq <= r[SEQ] then
    dups = dups + 1
  elseif kind == 's' then
    if r == nil then r = {0, 0, 0, 0, 0, 0, 0, 0} end
    r[ON_HAND], r[ALLOCATED], r[SAFETY], r[SEQ] = f[1], f[2], f[3], seq
    r[FLAGS] = bit.bor(r[FLAGS], FLAG_SNAPSHOT)
    applied = applied + 1
    touched = true
    drain()
  elseif has_snapshot() and seq == r[SEQ] + 1 then
    adjust(seq, f)
    applied = applied + 1
    touched = true
    drain()
  else
    local prefix = key .. '\0' .. pad(seq) .. '\0'
    local same = redis.call('ZRANGEBYLEX', KEYS[2], '[' .. prefix, '(' .. key .. '\0' .. pad(seq) .. '\1', 'LIMIT', 0, 1)
    if #same > 0 then
      dups = dups + 1
    else
      redis.call('ZADD', KEYS[2], 0, prefix .. ARGV[i + 2])
      buffered = buffered + 1
    end
  end
end

if not touched and r == nil then
  return {applied, dups, buffered, negative, settled, key, ''}
end

-- Settle: confirmed lines whose erp_seq is now reflected stop counting in pending.
if has_snapshot() then
  local upto = '(' .. key .. '\0' .. pad(r[SEQ] + 1)
  for _, m in ipairs(redis.call('ZRANGEBYLEX', KEYS[3], '[' .. bufmin, upto)) do
    local qty = tonumber(string.match(m, '\0(%d+)$'))
    r[PENDING] = r[PENDING] - qty
    redis.call('ZREM', KEYS[3], m)
    settled = settled + 1
    touched = true
  end
end

local gap = redis.call('ZRANGEBYLEX', KEYS[2], '[' .. bufmin, '(' .. bufmax, 'LIMIT', 0, 1)
local flags = r[FLAGS]
if #gap > 0 then flags = bit.bor(flags, FLAG_GAP) else flags = bit.band(flags, bit.bnot(FLAG_GAP)) end
if flags ~= r[FLAGS] then r[FLAGS] = flags; touched = true end
if not touched then
  return {applied, dups, buffered, negative, settled, key, rec_pack(r)}
end
r[UPDATED] = now
local saved = rec_save_all(KEYS[1], KEYS[4], ARGV[3], {{key, r}}, now)
return {applied, dups, buffered, negative, settled, saved[1], saved[2]}
