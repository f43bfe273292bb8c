-- wrk script: POST /v1/queues/{queue}/messages/batch with 100 JSON messages
-- of 128 bytes each (a durable sendBatch; 201 only once all are stored).
-- Env: BENCH_QUEUE (bench), BENCH_TOKEN (an API key). Prints RESULT with
-- msgs_per_s = 100 x requests per second.
local queue = os.getenv("BENCH_QUEUE") or "bench"
local msgs = {}
for i = 1, 100 do
  msgs[i] = '{"body":"' .. string.rep("x", 126) .. '"}'
end
local body = '{"messages":[' .. table.concat(msgs, ",") .. ']}'
local headers = { ["Content-Type"] = "application/json" }
if (os.getenv("BENCH_TOKEN") or "") ~= "" then
  headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
end

function request()
  return wrk.format("POST", "/v1/queues/" .. queue .. "/messages/batch", headers, body)
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "RESULT rps=%.0f msgs_per_s=%.0f p50_ms=%.2f p99_ms=%.2f requests=%d non2xx=%d socket_errors=%d\n",
    summary.requests / secs, 100 * summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests, e.status, e.connect + e.read + e.write + e.timeout))
end
