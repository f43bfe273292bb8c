-- wrk script for inbound webhooks: each request is a distinct, verified
-- Stripe delivery read from the file that
--   go run ./scripts/webhookload -secret <whsec> -n <N> -dump <file>
-- wrote (one "signature<TAB>body" per line). Each wrk thread takes every
-- Nth line so no delivery is sent twice; a thread that runs out stops.
--   WEBHOOKS_FILE=/tmp/deliveries.tsv wrk -t2 -c8 -d10s -s scripts/bench/webhooks.lua --latency http://127.0.0.1:8787
local file = os.getenv("WEBHOOKS_FILE")
local threads, counter = {}, 0

function setup(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
  for _, t in ipairs(threads) do t:set("step", counter) end
end

function init(args)
  reqs, i = {}, 0
  local n = 0
  for line in io.lines(file) do
    if n % step == id then
      local sig, body = line:match("^([^\t]+)\t(.*)$")
      reqs[#reqs + 1] = wrk.format("POST", "/webhooks/stripe", {["Content-Type"] = "application/json", ["Stripe-Signature"] = sig}, body)
    end
    n = n + 1
  end
  non2xx = 0
end

function request()
  i = i + 1
  if i > #reqs then
    wrk.thread:stop()
    return reqs[#reqs]
  end
  return reqs[i]
end

function response(status, headers, body)
  if status ~= 200 then non2xx = non2xx + 1 end
end

function done(summary, latency, requests)
  io.write(string.format("accepted/s %.0f  p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms  non-2xx/errors %d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
