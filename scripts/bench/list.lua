-- wrk script: GET /v1/things/{ns}?type=User&limit=20, the first page of
-- a type (the default order, createdAt). Env: BENCH_NS (bench),
-- BENCH_TOKEN (an API key, sent as Authorization: Bearer).
dofile(debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") .. "report.lua")

wrk.path = string.format("/v1/things/%s?type=User&limit=20", os.getenv("BENCH_NS") or "bench")
if (os.getenv("BENCH_TOKEN") or "") ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
end
