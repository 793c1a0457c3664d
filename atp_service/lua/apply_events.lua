-- Apply ERP events for MANY (sku, location) keys in one call, each key's events in the order
-- given, with the seq rules of inventory.KeyLedger; then settle confirmed lines whose erp_seq
-- is now reflected. Exactly-once by (key, seq): a redelivered or retried event is a
-- duplicate, never reapplied. All changed records go out in one change-stream entry.
-- A key left behind a gap gets one resync entry ('g:<key>') in the background outbox, due
-- after the gap window, unless resync is off (no ERP): the gateway then asks the ERP.
-- KEYS: 1 INV, 2 BUF, 3 SETTLE, 4 CHANGES, 5 OUTBOX(background)
-- ARGV: 1 now_ms, 2 stream maxlen, 3 gap window ms (-1 = no resync),
--       then per key: key, n, and n groups of 3:
--         's', seq, 'on_hand|allocated|safety_stock'   (snapshot)
--         'a', seq, 'on_hand_delta|allocated_delta'     (adjustment)
--       (validated by decode.event before this script runs)
-- Returns per key, in order: {applied, duplicates, buffered, negative, settled, key, record|''}
-- flattened into one list of 7 items per key.
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[3])
local changed, out = {}, {}

local function figures(s)
  local f = {}
  for x in string.gmatch(s, '[^|]+') do f[#f + 1] = tonumber(x) end
  return f
end

local function apply_key(key, first, n)
  local r = rec_load(KEYS[1], key)
  local applied, dups, buffered, negative, settled = 0, 0, 0, 0, 0
  local bufmin, bufmax = key .. '\0', key .. '\1'

  local function has_snapshot()
    return r ~= nil and bit.band(r[FLAGS], FLAG_SNAPSHOT) ~= 0
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
      local head = redis.call('ZRANGEBYLEX', KEYS[2], '[' .. bufmin, '(' .. bufmax, 'LIMIT', 0, 1)
      if #head == 0 then return end
      local m = head[1]
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
  for i = first, first + 3 * n - 1, 3 do
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
      -- member: key \0 erp_seq(16) \0 id \0 qty (Lua 5.1 patterns cannot hold \0: plain find)
      local rest = string.sub(m, #key + 19)
      local qty = tonumber(string.sub(rest, string.find(rest, '\0', 1, true) + 1))
      r[PENDING] = r[PENDING] - qty
      redis.call('ZREM', KEYS[3], m)
      settled = settled + 1
      touched = true
    end
  end

  local gap = redis.call('ZRANGEBYLEX', KEYS[2], '[' .. bufmin, '(' .. bufmax, 'LIMIT', 0, 1)
  local flags = r[FLAGS]
  if #gap > 0 then
    flags = bit.bor(flags, FLAG_GAP)
    if window >= 0 then redis.call('ZADD', KEYS[5], 'NX', redis_now_ms() + window, 'g:' .. key) end
  else
    flags = bit.band(flags, bit.bnot(FLAG_GAP))
  end
  if flags ~= r[FLAGS] then r[FLAGS] = flags; touched = true end
  if not touched then
    return {applied, dups, buffered, negative, settled, key, rec_pack(r)}
  end
  r[UPDATED] = now
  changed[#changed + 1] = {key, r}
  return {applied, dups, buffered, negative, settled, key, false}
end

local results = {}
local i = 4
while i <= #ARGV do
  local n = tonumber(ARGV[i + 1])
  results[#results + 1] = apply_key(ARGV[i], i + 2, n)
  i = i + 2 + 3 * n
end
-- Save every changed record (version bump) and publish them in one stream entry.
local saved = {}
local packed = rec_save_all(KEYS[1], KEYS[4], ARGV[2], changed, now)
for j = 1, #packed, 2 do saved[packed[j]] = packed[j + 1] end
for _, res in ipairs(results) do
  if res[7] == false then res[7] = saved[res[6]] end
  for _, v in ipairs(res) do out[#out + 1] = v end
end
return out
