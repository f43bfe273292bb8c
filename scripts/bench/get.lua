-- wrk script: GET /v1/things/{ns}/{id} for a random id among the loaded
-- things (u00000 .. u{N-1}). Env: BENCH_NS (bench), BENCH_N (10000), BENCH_TOKEN
-- (an API key, sent as Authorization: Bearer).
dofile(debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") .. "report.lua")

local ns = os.getenv("BENCH_NS") or "bench"
local n = tonumber(os.getenv("BENCH_N") or "10000")

local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
end

local headers = {}
if (os.getenv("BENCH_TOKEN") or "") ~= "" then
  headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
end

function request()
  return wrk.format("GET", string.format("/v1/things/%s/u%05d", ns, math.random(0, n - 1)), headers)
end
