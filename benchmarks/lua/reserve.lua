-- POST /v1/reservations, each with a unique reservation_id: <run nonce>-<thread>-<counter>.
-- One line of qty 1, rotating over n_skus x n_locs keys (seeded with large stock).
-- args: run nonce, n_skus, n_locs, bearer token
local nonce, nskus, nlocs, counter, tid, headers
local tids = 0

setup = function(thread)
  tids = tids + 1
  thread:set("tid", tids)
end

init = function(args)
  nonce = args[1]
  nskus, nlocs = tonumber(args[2]), tonumber(args[3])
  tid = tonumber(wrk.thread:get("tid")) or 1
  counter = tid * 104729
  headers = {
    ["Authorization"] = "Bearer " .. args[4],
    ["Content-Type"] = "application/json",
    ["Host"] = wrk.host,
  }
end

request = function()
  counter = counter + 1
  local k = counter % (nskus * nlocs)
  local body = string.format(
    '{"reservation_id":"r%s-%d-%d","priority":"checkout",'
    .. '"lines":[{"sku":"SKU-%06d","location":"LOC-%02d","qty":1}]}',
    nonce, tid, counter, k % nskus, math.floor(k / nskus))
  return wrk.format("POST", "/v1/reservations", headers, body)
end
