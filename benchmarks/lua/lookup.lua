-- GET /v1/availability/{sku}, rotating over N seeded SKUs (requests pre-built in init, so
-- the per-request Lua cost is one table read). Each thread starts at a different offset.
-- args: n_skus, bearer token
local reqs, n, i = {}, 0, 0
local tid = 0

setup = function(thread)
  tid = tid + 1
  thread:set("tid", tid)
end

init = function(args)
  n = tonumber(args[1])
  local headers = { ["Authorization"] = "Bearer " .. args[2], ["Host"] = wrk.host }
  for k = 0, n - 1 do
    reqs[k + 1] = wrk.format("GET", string.format("/v1/availability/SKU-%06d", k), headers)
  end
  i = ((tonumber(wrk.thread:get("tid")) or 1) * 7919) % n
end

request = function()
  i = i % n + 1
  return reqs[i]
end
