-- Appended to a script: sends its requests on a schedule, at the rate given as the script's
-- last argument (requests/s per wrk thread), instead of each connection's next request as soon
-- as its previous answer is in. Each request takes the next slot of the schedule, whichever
-- connection is free; wrk's delay() has 1 ms steps, so requests go out in bursts of up to 1 ms
-- worth, and a schedule that fell behind (every connection busy) catches up by at most 1 ms.
-- wrk times each request from its send, so latencies are the service's at that arrival rate
-- (up to the connection count outstanding).
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } atp_timespec;
  int clock_gettime(int clk_id, atp_timespec *tp);
]]
local ts = ffi.new("atp_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local paced_init = init
local slot_ms, next_at

init = function(args)
  paced_init(args)
  slot_ms = 1000 / tonumber(args[#args])
end

delay = function()
  local now = now_ms()
  if next_at == nil or next_at < now - 1 then
    next_at = now
  end
  local wait = next_at - now
  next_at = next_at + slot_ms
  if wait < 1 then
    return 0
  end
  return math.floor(wait)
end
