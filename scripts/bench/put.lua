-- wrk script: PUT /v1/things/{ns}/{id} (an upsert) with a random id among
-- twice the loaded count, so about half the writes update a loaded thing
-- and half create one (later runs update more), and a body that differs
-- on every request. Env: BENCH_NS (bench), BENCH_N (10000),
-- BENCH_TOKEN (an API key, sent as Authorization: Bearer).
dofile(debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") .. "report.lua")

local ns = os.getenv("BENCH_NS") or "bench"
local n = tonumber(os.getenv("BENCH_N") or "10000")

local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

local seq = 0
function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
end

local headers = { ["Content-Type"] = "application/json" }
if (os.getenv("BENCH_TOKEN") or "") ~= "" then
  headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
end

function request()
  seq = seq + 1
  local k = math.random(0, 2 * n - 1)
  local body = string.format(
    '{"type":"User","data":{"name":"user %d","email":"user%d@example.com","age":%d,"active":true,"seq":%d,"writer":%d}}',
    k, k, 18 + seq % 60, seq, tid or 0)
  return wrk.format("PUT", string.format("/v1/things/%s/u%05d", ns, k), headers, body)
end
