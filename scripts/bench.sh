#!/usr/bin/env bash
# Load benchmarks of dotdo with wrk: a yardstick (scripts/benchload: a bare
# handler, and a bare handler reading SQLite), all-in-one mode (GET one
# thing, list 20, PUT) and split mode (db process + gateway process: the
# latency each hop adds). Results and how to read them: docs/benchmarks.md.
#
#   bash scripts/bench.sh            # everything
#   bash scripts/bench.sh aio        # yardstick and all-in-one only
#   bash scripts/bench.sh split      # split mode only
#
# Needs go, curl and wrk (apt-get install -y wrk). Environment:
#   BENCH_DURATION    each wrk run (default 10s)
#   BENCH_RUNS        runs of each scenario (default 2: runs vary 5-15%)
#   BENCH_THINGS      things loaded (default 10000)
#   BENCH_PORT        first of three loopback ports (default 8790: 8790
#                     all-in-one, 8791 db process, 8792 gateway process)
#   BENCH_LOG         where the servers' logs go (default /dev/null; an
#                     access line is written per request, so a file grows
#                     by about 250 bytes a request)
#   BENCH_BIN         a dotdo binary to use instead of building one
#   BENCH_QUIET       the most background CPU, in percent of the machine,
#                     to accept before a run (default 15); the script waits
#                     up to BENCH_QUIET_WAIT seconds (default 300) for it,
#                     then runs anyway and says so
#   BENCH_PROFILE     a directory: also take a 10 s CPU profile of the
#                     all-in-one GET path there (builds a temporary copy of
#                     the tree with net/http/pprof on 127.0.0.1:6061; the
#                     repository never serves pprof)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
lua="$root/scripts/bench"
what=${1:-all}
duration=${BENCH_DURATION:-10s}
runs=${BENCH_RUNS:-2}
things=${BENCH_THINGS:-10000}
port=${BENCH_PORT:-8790}
logto=${BENCH_LOG:-/dev/null}
quiet=${BENCH_QUIET:-15}
quiet_wait=${BENCH_QUIET_WAIT:-300}
aio=127.0.0.1:$port
dbaddr=127.0.0.1:$((port + 1))
gwaddr=127.0.0.1:$((port + 2))
# Secrets of this run only: the internal service credential, the key that
# seals token signing keys, and the admin API key every request carries
# (created on first start from DOTDO_BOOTSTRAP_ADMIN_KEY).
rnd() { head -c 4096 /dev/urandom | tr -dc "$1" | head -c "$2"; }
export DOTDO_INTERNAL_TOKEN=$(rnd 'a-f0-9' 64)
export DOTDO_SECRET_KEY=$(rnd 'a-f0-9' 64)
export DOTDO_BOOTSTRAP_ADMIN_KEY=sk_live_$(rnd 'A-Za-z0-9' 43)
export BENCH_NS=bench BENCH_N=$things BENCH_TOKEN=$DOTDO_BOOTSTRAP_ADMIN_KEY

for tool in go curl wrk; do
	command -v "$tool" >/dev/null || { echo "bench: $tool is not installed (wrk: apt-get install -y wrk)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/dotdo-bench.XXXXXX)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bin=${BENCH_BIN:-}
if [[ -z $bin ]]; then
	bin=$work/dotdo
	(cd "$root" && go build -o "$bin" ./cmd/dotdo)
fi
(cd "$root" && go build -o "$work/benchload" ./scripts/benchload)

# Options that depend on what this build has: a benchmark measures the
# request path, so the per-key rate limit (6000/min by default) is off;
# and a gateway in its own process needs the auth service, which runs
# beside it there (the hop measured is the one to the db process).
help=$("$bin" serve --help 2>&1 || true)
serveopts=()
if grep -q -- '-rate-limit ' <<<"$help"; then
	serveopts+=(--rate-limit off)
fi
gwservices=gateway
if grep -q -- '-auth-url' <<<"$help"; then
	gwservices=gateway,auth
fi

# start NAME ADDR ARGS... starts a dotdo process and waits for its /health.
start() {
	local name=$1 addr=$2 pid
	shift 2
	if curl -sS -o /dev/null "http://$addr/" 2>/dev/null; then
		echo "bench: something already listens on $addr; stop it or set BENCH_PORT" >&2
		exit 1
	fi
	"$bin" serve --addr "$addr" --log-format json "${serveopts[@]}" "$@" >>"$logto" 2>&1 &
	pid=$!
	pids+=("$pid")
	for _ in $(seq 100); do
		if curl -fsS -o /dev/null "http://$addr/health" 2>/dev/null; then
			return
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			break
		fi
		sleep 0.1
	done
	echo "bench: $name did not become healthy on $addr (its log: $logto)" >&2
	exit 1
}

# stop PID stops one process this script started.
stop() {
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	local keep=() pid
	for pid in "${pids[@]}"; do
		[[ $pid == "$1" ]] || keep+=("$pid")
	done
	pids=("${keep[@]}")
}

# load ADDR puts $things things of type User in namespace bench through the
# batch route, 1000 ops a request.
load() {
	local addr=$1 from=0
	while ((from < things)); do
		local n=$((things - from < 1000 ? things - from : 1000))
		awk -v s=$from -v n=$n 'BEGIN {
			printf "{\"ops\":["
			for (i = s; i < s + n; i++) {
				if (i > s) printf ","
				printf "{\"op\":\"upsert\",\"id\":\"u%05d\",\"type\":\"User\",\"data\":{\"name\":\"user %d\",\"email\":\"user%d@example.com\",\"age\":%d,\"active\":true}}", i, i, i, 18 + i % 60
			}
			printf "]}"
		}' | curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $BENCH_TOKEN" \
			--data-binary @- "http://$addr/v1/things/bench/batch"
		from=$((from + n))
	done
	echo "loaded $things things into $addr"
}

# busy prints the machine's CPU use, in percent, over one second.
busy() {
	local a b
	a=($(head -1 /proc/stat))
	sleep 1
	b=($(head -1 /proc/stat))
	local total=0 idle=$(((b[4] - a[4]) + (b[5] - a[5])))
	for i in 1 2 3 4 5 6 7 8; do
		total=$((total + b[i] - a[i]))
	done
	echo $((total > 0 ? 100 * (total - idle) / total : 0))
}

# wait_quiet waits for other work on the machine to stop (the servers are
# idle between runs, so what remains is someone else's) and prints the
# background CPU it accepted.
wait_quiet() {
	local b deadline=$((SECONDS + quiet_wait))
	b=$(busy)
	while ((b > quiet && SECONDS < deadline)); do
		sleep 4
		b=$(busy)
	done
	if ((b > quiet)); then
		echo "  warning: ${b}% of the CPU was busy with other work before this run" >&2
	fi
	echo "$b"
}

# cputicks PID... prints the CPU time (user + system, in clock ticks) the
# processes have used.
cputicks() {
	local sum=0 pid st
	for pid in "$@"; do
		st=($(sed 's/^.*) //' "/proc/$pid/stat"))
		sum=$((sum + st[11] + st[12]))
	done
	echo "$sum"
}
hz=$(getconf CLK_TCK)

# measured are the server processes whose CPU time each run reports, per
# request: a figure that background load disturbs much less than req/s.
measured=()

results=$work/results.txt
: >"$results"

# bench LABEL THREADS CONNS SCRIPT URL runs wrk $runs times and records
# each run's RESULT line.
bench() {
	local label=$1 t=$2 c=$3 script=$4 url=$5
	# A short warm-up: connections, prepared statements, page cache.
	wrk -t"$t" -c"$c" -d2s -s "$lua/$script" "$url" >/dev/null
	for run in $(seq "$runs"); do
		local bg out line c0 c1 reqs us
		bg=$(wait_quiet)
		echo "== $label, run $run: wrk -t$t -c$c -d$duration --latency -s scripts/bench/$script $url (background CPU ${bg}%)"
		c0=$(cputicks "${measured[@]}")
		out=$(wrk -t"$t" -c"$c" -d"$duration" --latency -s "$lua/$script" "$url")
		c1=$(cputicks "${measured[@]}")
		echo "$out" | grep -E 'Latency  |Requests/sec|Non-2xx|Socket errors' | sed 's/^/   /'
		line=$(echo "$out" | grep '^RESULT' | sed 's/^RESULT //')
		reqs=$(echo "$line" | sed 's/.*requests=\([0-9]*\).*/\1/')
		us=$(((c1 - c0) * 1000000 / hz / (reqs > 0 ? reqs : 1)))
		line="$line server_cpu_us_per_req=$us"
		echo "   $line"
		printf '%-40s run %d  %s bg_cpu=%s%%\n' "$label" "$run" "$line" "$bg" >>"$results"
	done
}

profile() {
	local dir=$1 src=$work/src
	mkdir -p "$dir" "$src"
	(cd "$root" && git ls-files -z | xargs -0 cp --parents -t "$src")
	# Local only: the repository does not serve pprof.
	cat >"$src/cmd/dotdo/zz_bench_pprof.go" <<-'EOF'
		package main

		import (
			"net/http"
			_ "net/http/pprof"
			"os"
		)

		func init() {
			if a := os.Getenv("DOTDO_BENCH_PPROF"); a != "" {
				go http.ListenAndServe(a, nil)
			}
		}
	EOF
	(cd "$src" && go build -o "$work/dotdo-pprof" ./cmd/dotdo)
	mkdir -p "$work/prof-data"
	DOTDO_BENCH_PPROF=127.0.0.1:6061 "$work/dotdo-pprof" serve --addr "$aio" --data-dir "$work/prof-data" --log-format json "${serveopts[@]}" >>"$logto" 2>&1 &
	local pid=$!
	pids+=("$pid")
	for _ in $(seq 100); do curl -fsS -o /dev/null "http://$aio/health" 2>/dev/null && break; sleep 0.1; done
	load "$aio"
	wrk -t2 -c32 -d2s -s "$lua/get.lua" "http://$aio" >/dev/null
	curl -fsS -o "$dir/get.cpu.pprof" 'http://127.0.0.1:6061/debug/pprof/profile?seconds=10' &
	local curlpid=$!
	wrk -t2 -c32 -d12s -s "$lua/get.lua" "http://$aio" | grep RESULT
	wait "$curlpid"
	cp "$work/dotdo-pprof" "$dir/dotdo-pprof"
	stop "$pid"
	echo "profile: go tool pprof -top $dir/dotdo-pprof $dir/get.cpu.pprof"
	go tool pprof -top -nodecount=25 "$dir/dotdo-pprof" "$dir/get.cpu.pprof" 2>/dev/null | sed -n '4,40p'
}

echo "dotdo load benchmark: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "wrk runs for $duration, $runs runs each; server logs to $logto"

if [[ $what == all || $what == aio ]]; then
	# The yardstick: what this machine gives a bare handler, and a bare
	# handler reading one row from SQLite as dotdo does, in this run.
	echo
	echo "# baseline: go run ./scripts/benchload -addr $aio (bare net/http; SQLite opened by internal/sqlite)"
	if curl -sS -o /dev/null "http://$aio/" 2>/dev/null; then
		echo "bench: something already listens on $aio; stop it or set BENCH_PORT" >&2
		exit 1
	fi
	"$work/benchload" -addr "$aio" -dir "$work/benchload-data" -things "$things" >>"$logto" 2>&1 &
	pids+=($!)
	blpid=${pids[-1]}
	measured=("$blpid")
	for _ in $(seq 100); do curl -fsS -o /dev/null "http://$aio/trivial" 2>/dev/null && break; sleep 0.1; done
	bench "baseline trivial handler (c32)" 2 32 report.lua "http://$aio/trivial"
	bench "baseline handler + SQLite row (c32)" 2 32 get.lua "http://$aio"
	stop "$blpid"

	echo
	echo "# all-in-one: dotdo serve --addr $aio --data-dir $work/aio --log-format json ${serveopts[*]} >$logto 2>&1"
	start all-in-one "$aio" --data-dir "$work/aio"
	aiopid=${pids[-1]}
	measured=("$aiopid")
	load "$aio"
	bench "aio GET one thing (c32)" 2 32 get.lua "http://$aio"
	bench "aio list 20 (c32)" 2 32 list.lua "http://$aio"
	bench "aio PUT (c32)" 2 32 put.lua "http://$aio"
	bench "aio GET one thing, 1 connection" 1 1 get.lua "http://$aio"
	bench "aio Connect Get, 1 connection" 1 1 connect_get.lua "http://$aio"
	stop "$aiopid"
fi

if [[ $what == all || $what == split ]]; then
	echo
	echo "# split: dotdo serve --services db --addr $dbaddr ${serveopts[*]}"
	echo "#        dotdo serve --services $gwservices --addr $gwaddr --db-url http://$dbaddr ${serveopts[*]}"
	start db "$dbaddr" --services db --data-dir "$work/split-db"
	start gateway "$gwaddr" --services "$gwservices" --data-dir "$work/split-gw" --db-url "http://$dbaddr"
	# CPU per request counts both processes, also for direct calls to db
	# (the idle gateway adds nothing).
	measured=("${pids[-2]}" "${pids[-1]}")
	load "$gwaddr"
	bench "split GET via gateway, 1 connection" 1 1 get.lua "http://$gwaddr"
	bench "split Connect Get direct to db, 1 conn" 1 1 connect_get.lua "http://$dbaddr"
	bench "split Connect Get via gateway, 1 conn" 1 1 connect_get.lua "http://$gwaddr"
	bench "split GET via gateway (c32)" 2 32 get.lua "http://$gwaddr"
	bench "split Connect Get direct to db (c32)" 2 32 connect_get.lua "http://$dbaddr"
	bench "split Connect Get via gateway (c32)" 2 32 connect_get.lua "http://$gwaddr"
fi

echo
echo "# summary (targets: GET >= 20000 req/s with p99 <= 10 ms; list 20 >= 6000 req/s; PUT >= 3000 req/s)"
cat "$results"

if [[ -n ${BENCH_PROFILE:-} ]]; then
	for pid in "${pids[@]}"; do stop "$pid"; done
	echo
	echo "# CPU profile of the all-in-one GET path"
	profile "$BENCH_PROFILE"
fi
