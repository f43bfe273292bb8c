#!/usr/bin/env bash
# Side by side: GET one thing, unauthenticated (pre-auth build 5a627ea) vs with an API key (HEAD).
set -e
K=sk_live_e2eAdminKey0123456789abcdefghijklmnopqrstuv
load() { # $1 base, $2 auth header value or empty
  for b in $(seq 0 9); do
    python3 - "$b" > /tmp/batch.json <<'PY'
import json,sys
b=int(sys.argv[1]); print(json.dumps({"ops":[{"op":"upsert","id":"u%05d"%(b*1000+i),"type":"User","data":{"name":"user %d"%(b*1000+i),"age":i%90,"email":"u%d@example.com"%i}} for i in range(1000)]}))
PY
    curl -fsS -o /dev/null -X POST -H "Authorization: Bearer $K" "$1/v1/things/bench/batch" --data-binary @/tmp/batch.json
  done
}
run() { BENCH_TOKEN=$K BENCH_NS=bench BENCH_N=10000 wrk -t2 -c32 -d10s --latency -s scripts/bench/get.lua "$1" | grep RESULT; }
for round in 1 2; do
  rm -rf /tmp/rb1 /tmp/rb2
  /tmp/dotdo-preauth serve --addr 127.0.0.1:8897 --data-dir /tmp/rb1 --log-format json >/dev/null 2>&1 & P1=$!
  sleep 1.5; load http://127.0.0.1:8897; echo -n "round $round unauthenticated (5a627ea): "; run http://127.0.0.1:8897; kill $P1; wait $P1 2>/dev/null || true
  DOTDO_BOOTSTRAP_ADMIN_KEY=$K /tmp/dotdo-head serve --addr 127.0.0.1:8898 --data-dir /tmp/rb2 --log-format json --rate-limit off >/dev/null 2>&1 & P2=$!
  sleep 1.5; load http://127.0.0.1:8898; echo -n "round $round API key (HEAD): "; run http://127.0.0.1:8898; kill $P2; wait $P2 2>/dev/null || true
done
