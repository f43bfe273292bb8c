#!/usr/bin/env bash
# Queue benchmarks (docs/benchmarks.md, "## queue"): durable sendBatch
# in-process (Go benchmark) and over REST (wrk), nats bench JetStream
# file-storage publish on the same machine, and idle enqueue-to-handler
# latency. Needs wrk and a NATS with JetStream at NATS_BENCH_URL
# (nats://127.0.0.1:4222) for the external and nats bench figures.
set -euo pipefail
cd "$(dirname "$0")/../.."
NATS_BENCH_URL=${NATS_BENCH_URL:-nats://127.0.0.1:4222}
DUR=${DUR:-10s}

echo "== Go benchmarks (in-process Send and idle latency; embedded and external NATS)"
[ -n "${SKIP_GO:-}" ] || DOTDO_TEST_NATS_URL=$NATS_BENCH_URL go test ./internal/queue -run '^$' -bench 'SendBatch|IdleLatency' -benchtime 5s -count 2

echo "== REST: POST /v1/queues/bench/messages/batch (100 x 128 B), all-in-one binary, embedded NATS"
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
go build -o "$tmp/dotdo" ./cmd/dotdo
key=sk_live_benchQueue0123456789abcdefghijklmnopqrstuvw
run_rest() { # $1: label, $2...: extra serve args
  local label=$1; shift
  rm -rf "$tmp/data"
  DOTDO_BOOTSTRAP_ADMIN_KEY=$key DOTDO_RATE_LIMIT=off "$tmp/dotdo" serve --addr 127.0.0.1:18790 --data-dir "$tmp/data" --log-level warn --rate-limit off "$@" >"$tmp/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf 127.0.0.1:18790/health >/dev/null && break; sleep 0.1; done
  curl -sf 127.0.0.1:18790/health >/dev/null || { cat "$tmp/log"; exit 1; }
  curl -sf -X PUT -H "Authorization: Bearer $key" 127.0.0.1:18790/v1/queues/bench -d '{}' >/dev/null
  echo "-- $label"
  BENCH_TOKEN=$key wrk -t2 -c16 -d"$DUR" -s scripts/bench/queue_batch.lua http://127.0.0.1:18790 | grep -E 'RESULT|Requests/sec'
  curl -sf -X DELETE -H "Authorization: Bearer $key" 127.0.0.1:18790/v1/queues/bench >/dev/null || true
  kill $pid; wait $pid || true
}
run_rest "embedded NATS"
qprefix=DOTDOBENCH$RANDOM$RANDOM
run_rest "external NATS ($NATS_BENCH_URL)" --nats-url "$NATS_BENCH_URL" --queue-prefix "$qprefix"
# Delete what the binary made under its prefix on the shared NATS.
for s in $(go run github.com/nats-io/natscli/nats@v0.5.0 --server "$NATS_BENCH_URL" stream ls -n | grep -E "^(KV_)?${qprefix}_"); do
  go run github.com/nats-io/natscli/nats@v0.5.0 --server "$NATS_BENCH_URL" stream rm -f "$s" >/dev/null
done

echo "== nats bench: JetStream file-storage publish, 4 publishers, batches of 100 (async), 128 B"
stream=DOTDOBENCH$RANDOM$RANDOM
go run github.com/nats-io/natscli/nats@v0.5.0 --server "$NATS_BENCH_URL" bench js pub async "$stream.subj" \
  --create --storage file --stream "$stream" --clients 4 --msgs 400000 --size 128 --batch 100 --purge --no-progress || \
go run github.com/nats-io/natscli/nats@v0.5.0 --server "$NATS_BENCH_URL" bench "$stream.subj" --js --stream "$stream" --storage file --pub 4 --msgs 400000 --size 128 --pubbatch 100 --no-progress
go run github.com/nats-io/natscli/nats@v0.5.0 --server "$NATS_BENCH_URL" stream rm -f "$stream" >/dev/null
