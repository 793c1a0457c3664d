-- Apply ERP events for MANY (sku, location) keys in one call, each key's events in the order
-- given, with the seq rules of inventory.KeyLedger; then settle confirmed lines whose erp_seq
-- is now reflected. Exactly-once by (key, seq): a redelivered or retried event is a
-- duplicate, never reapplied. All changed records go out in one change-stream entry.
-- A key left behind a gap gets one resync entry ('g:<key>') in the background outbox, due
-- after the gap window, unless resync is off (no ERP): the gateway then asks the ERP.
-- KEYS: 1 INV, 2 BUF, 3 SETTLE, 4 CHANGES, 5 OUTBOX(background)
-- ARGV: 1 now_ms, 2 stream maxlen, 3 gap window ms (-1 = no resync),
--       4 writer tag ('' = none; else the stream entry gets a '~w' field first, so the
--         writer's own tailer can skip what it already has from this reply),
--       then per key: key, n, and n events of one argument each:
--         's<seq>|<on_hand>|<allocated>|<safety_stock>'   (snapshot)
--         'a<seq>|<on_hand_delta>|<allocated_delta>'       (adjustment)
--       (validated by decode before this script runs)
-- Returns {applied, duplicates, buffered, negative, settled, then per key in order its
-- record after the call, or '' if the key has none}.
--
-- The common case touches no sorted set: the buffer is read only for a key that may have
-- buffered events (no record yet, FLAG_GAP set, or buffered in this call: FLAG_GAP is
-- recomputed from the buffer whenever a key may have some, so it is exact), and the
-- settlement set only for a key with pending > 0 (an unsettled line's qty counts in pending
-- until it is settled or released, so pending <= 0 means the key has none).
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[3])
local tag = ARGV[4]
local applied, dups, buffered, negative, settled = 0, 0, 0, 0, 0

local names, firsts, counts = {}, {}, {}
do
  local i = 5
  while i <= #ARGV do
    local n = tonumber(ARGV[i + 1])
    names[#names + 1], firsts[#firsts + 1], counts[#counts + 1] = ARGV[i], i + 2, n
    i = i + 2 + n
  end
end
local raws = #names > 0 and redis.call('HMGET', KEYS[1], unpack(names)) or {}

local function figures(s)
  local f = {}
  for x in string.gmatch(s, '[^|]+') do f[#f + 1] = tonumber(x) end
  return f
end

-- returns the record (table) if it must be saved, else the packed record or '' to report
local function apply_key(key, raw, first, n)
  local r = nil
  if raw then
    r = {struct.unpack(FMT, raw)}
    r[9] = nil -- struct.unpack returns the next position last
  end
  local maybe_buf = r == nil or bit.band(r[FLAGS], FLAG_GAP) ~= 0
  local bufmin, bufmax = key .. '\0', key .. '\1'

  local function has_snapshot()
    return r ~= nil and bit.band(r[FLAGS], FLAG_SNAPSHOT) ~= 0
  end

  local function adjust(seq, d1, d2)
    local oh, al = r[ON_HAND] + d1, r[ALLOCATED] + d2
    r[ON_HAND], r[ALLOCATED], r[SEQ] = oh, al, seq
    if oh < 0 or al < 0 then negative = negative + 1 end
  end

  -- Apply buffered adjustments that became next in line; drop those now at or below seq.
  local function drain()
    if not maybe_buf then return end
    while true do
      local head = redis.call('ZRANGEBYLEX', KEYS[2], '[' .. bufmin, '(' .. bufmax, 'LIMIT', 0, 1)
      if #head == 0 then return end
      local m = head[1]
      local seq = tonumber(string.sub(m, #key + 2, #key + 17))
      if seq <= r[SEQ] then
        redis.call('ZREM', KEYS[2], m)
      elseif seq == r[SEQ] + 1 then
        redis.call('ZREM', KEYS[2], m)
        local f = figures(string.sub(m, #key + 19))
        adjust(seq, f[1], f[2])
        applied = applied + 1
      else
        return
      end
    end
  end

  local touched = false
  for i = first, first + n - 1 do
    local e = ARGV[i]
    if string.byte(e, 1) == 115 then -- 's'
      local seq, oh, al, ss = string.match(e, '^s(%d+)|(%d+)|(%d+)|(%d+)$')
      seq = tonumber(seq)
      if has_snapshot() and seq <= r[SEQ] then
        dups = dups + 1
      else
        if r == nil then r = {0, 0, 0, 0, 0, 0, 0, 0} end
        r[ON_HAND], r[ALLOCATED], r[SAFETY], r[SEQ] = tonumber(oh), tonumber(al), tonumber(ss), seq
        r[FLAGS] = bit.bor(r[FLAGS], FLAG_SNAPSHOT)
        applied = applied + 1
        touched = true
        drain()
      end
    else
      local seq, d1, d2 = string.match(e, '^a(%d+)|(%-?%d+)|(%-?%d+)$')
      seq = tonumber(seq)
      if has_snapshot() and seq <= r[SEQ] then
        dups = dups + 1
      elseif has_snapshot() and seq == r[SEQ] + 1 then
        adjust(seq, tonumber(d1), tonumber(d2))
        applied = applied + 1
        touched = true
        drain()
      else
        local prefix = key .. '\0' .. pad(seq) .. '\0'
        local same = redis.call('ZRANGEBYLEX', KEYS[2], '[' .. prefix, '(' .. key .. '\0' .. pad(seq) .. '\1', 'LIMIT', 0, 1)
        if #same > 0 then
          dups = dups + 1
        else
          redis.call('ZADD', KEYS[2], 0, prefix .. d1 .. '|' .. d2)
          buffered = buffered + 1
          maybe_buf = true
        end
      end
    end
  end

  if not touched and r == nil then return '' end

  -- Settle: confirmed lines whose erp_seq is now reflected stop counting in pending.
  if has_snapshot() and r[PENDING] > 0 then
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

  if maybe_buf then
    local flags = r[FLAGS]
    local gap = redis.call('ZRANGEBYLEX', KEYS[2], '[' .. bufmin, '(' .. bufmax, 'LIMIT', 0, 1)
    if #gap > 0 then
      flags = bit.bor(flags, FLAG_GAP)
      if window >= 0 then redis.call('ZADD', KEYS[5], 'NX', redis_now_ms() + window, 'g:' .. key) end
    else
      flags = bit.band(flags, bit.bnot(FLAG_GAP))
    end
    if flags ~= r[FLAGS] then r[FLAGS] = flags; touched = true end
  end
  if not touched then return raw end
  r[UPDATED] = now
  r[VER] = r[VER] + 1
  return r
end

-- Save every changed record (version bump) and publish them in one stream entry.
local out = {0, 0, 0, 0, 0}
local hset = {'HSET', KEYS[1]}
local xadd = {'XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*'}
if tag ~= '' then xadd[7], xadd[8] = '~w', tag end
for k = 1, #names do
  local key = names[k]
  local res = apply_key(key, raws[k], firsts[k], counts[k])
  if type(res) == 'table' then
    res = struct.pack(FMT, res[1], res[2], res[3], res[4], res[5], res[6], res[7], res[8])
    hset[#hset + 1], hset[#hset + 2] = key, res
    xadd[#xadd + 1], xadd[#xadd + 2] = key, res
  end
  out[k + 5] = res
end
if #hset > 2 then
  redis.call(unpack(hset))
  redis.call(unpack(xadd))
end
out[1], out[2], out[3], out[4], out[5] = applied, dups, buffered, negative, settled
return out
