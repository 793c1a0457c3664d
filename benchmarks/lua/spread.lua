-- Spreads wrk's threads over several servers on 127.0.0.1: thread i (1-based) connects to
-- port i mod n of WRK_PORTS (comma list, from the environment: setup() gets no args).
-- Loaded after the request script, whose setup() it wraps.
local spread_ports, spread_n = {}, 0
for p in string.gmatch(os.getenv("WRK_PORTS") or "", "%d+") do
  spread_ports[#spread_ports + 1] = p
end
local request_setup = setup

setup = function(thread)
  spread_n = spread_n + 1
  if #spread_ports > 0 then
    local port = spread_ports[(spread_n - 1) % #spread_ports + 1]
    thread.addr = wrk.lookup("127.0.0.1", port)[1]
  end
  if request_setup then
    request_setup(thread)
  end
end
