-- Take the next ERP call for this replica, if the shared pace allows one now.
-- One token bucket with a burst of 1 for ALL replicas (contract s4: at most ATP_ERP_RATE calls
-- in any 1-second window, every call counted): a call may start only at or after ERP_NEXT,
-- which then moves one interval on. The token is spent only when there is work.
-- Choice: strict priority checkout > sales > background, with aging: an entry's claim is
-- its wait plus its priority's bonus, so a long-waiting background entry is never starved.
-- Leases of replicas that died are taken back into their queue first.
-- KEYS: 1..3 OUTBOX(checkout, sales, background), 4 INFLIGHT, 5 ERP_NEXT, 6 ATTEMPTS
-- ARGV: 1 interval ms (float), 2 lease ms, 3..5 aging bonus ms (checkout, sales, background)
-- Returns {'claimed', member, priority, attempts, waited_ms} | {'wait', ms} | {'idle', ms}
local now = redis_now_ms()
local names = {'checkout', 'sales', 'background'}

for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 100)) do
  local sep = string.find(m, '|', 1, true)
  local prio, member = string.sub(m, 1, sep - 1), string.sub(m, sep + 1)
  redis.call('ZREM', KEYS[4], m)
  redis.call('ZADD', KEYS[PRIORITY_INDEX[prio]], now, member)
end

local best, best_claim, best_score, next_due = nil, nil, nil, nil
for i = 1, 3 do
  local head = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  if head[1] then
    local score = tonumber(head[2])
    if score <= now then
      local claim = now - score + tonumber(ARGV[2 + i])
      if best == nil or claim > best_claim then
        best, best_claim, best_score = i, claim, score
      end
    elseif next_due == nil or score < next_due then
      next_due = score
    end
  end
end
if best == nil then
  return {'idle', next_due and (next_due - now) or -1}
end

local allowed = tonumber(redis.call('GET', KEYS[5]) or '0')
if now < allowed then return {'wait', tostring(allowed - now)} end
if allowed < now then allowed = now end
redis.call('SET', KEYS[5], tostring(allowed + tonumber(ARGV[1])), 'PX', 3600000)

local member = redis.call('ZRANGE', KEYS[best], 0, 0)[1]
redis.call('ZREM', KEYS[best], member)
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[2]), names[best] .. '|' .. member)
local attempts = redis.call('HINCRBY', KEYS[6], member, 1)
return {'claimed', member, names[best], attempts, now - best_score}
