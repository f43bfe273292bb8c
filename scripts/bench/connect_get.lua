-- wrk script: the db service's Connect RPC Get with the JSON codec, for a
-- random loaded id: POST /dotdo.db.v1.DBService/Get. Aimed at the db
-- process it is a direct call; aimed at a gateway it goes through the
-- gateway's RPC proxy. Env: BENCH_NS (bench), BENCH_N (10000),
-- DOTDO_INTERNAL_TOKEN (sent as Dotdo-Internal-Token).
dofile(debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") .. "report.lua")

local ns = os.getenv("BENCH_NS") or "bench"
local n = tonumber(os.getenv("BENCH_N") or "10000")
local headers = {
  ["Content-Type"] = "application/json",
  ["Dotdo-Internal-Token"] = os.getenv("DOTDO_INTERNAL_TOKEN") or "",
}

local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
end

function request()
  local body = string.format('{"ns":"%s","id":"u%05d"}', ns, math.random(0, n - 1))
  return wrk.format("POST", "/dotdo.db.v1.DBService/Get", headers, body)
end
