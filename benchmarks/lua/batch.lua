-- POST /v1/availability with a 100-item JSON body, rotating over bodies pre-built by the
-- benchmark (one per line of the bodies file).
-- args: bodies file, bearer token
local reqs, n, i = {}, 0, 0

init = function(args)
  local headers = {
    ["Authorization"] = "Bearer " .. args[2],
    ["Content-Type"] = "application/json",
    ["Host"] = wrk.host,
  }
  for line in io.lines(args[1]) do
    if #line > 0 then
      n = n + 1
      reqs[n] = wrk.format("POST", "/v1/availability", headers, line)
    end
  end
end

request = function()
  i = i % n + 1
  return reqs[i]
end
