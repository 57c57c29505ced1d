#!/usr/bin/env bash
# The gateway benchmark (bench/README.md). Builds Release, starts on free
# loopback ports, with their state under var/bench/ (wiped at start):
#   - Redis (as run.sh runs it: append-only file, fsync every second),
#   - the C++ PSP sandbox (fresh journal, provider latency 0),
#   - the gateway (fresh SQLite ledger, synchronous=FULL, the shipped config
#     and default fraud rules, plaintext gRPC on loopback),
#   - two reference servers: a bare gRPC callback echo server, and the same
#     echo server doing one async EVALSHA per call on the same Redis.
# Then, in one run, with the same load generator (tools/loadgen):
#   echo          bare echo, BENCH_CONCURRENCY calls in flight
#   echo_redis    echo + one EVALSHA per call
#   recharge      RecordRecharge, fresh keys and buyers, BENCH_MIX payment methods
#   replay        RecordRecharge repeating one key (every answer a replay)
#   inflight      RecordRecharge with BENCH_INFLIGHT calls in flight and the
#                 sandbox answering after BENCH_INFLIGHT_LATENCY_MS
# It prints one table (calls/s, latency, CPU per call of server + Redis, the
# gateway's peak RSS and thread count), checks the targets of bench/README.md,
# runs the rule-evaluation and ledger micro-benchmarks, and checks the books:
# APPROVED recharges loadgen saw = charges in the sandbox journal = approved
# rows in the ledger. Everything is written as JSON to
# var/bench/results/<time>.json (the table to <time>.txt).
#
# Environment (defaults): BENCH_CONCURRENCY (256), BENCH_CHANNELS (4),
# BENCH_DURATION seconds measured per phase (10), BENCH_WARMUP seconds (2),
# BENCH_MIX (card=85,paypal=8,gcash=7), BENCH_INFLIGHT (5000),
# BENCH_INFLIGHT_LATENCY_MS (300), BENCH_INFLIGHT_CHANNELS (16),
# BENCH_PHASES (all five, space-separated), BUILD_JOBS (nproc).
# Everything started here is stopped on exit (also on Ctrl-C). Safe to run
# twice; a second run at the same time is refused (lock file). Exit status:
# 0 when the books balance (targets missed are reported, not failed), 3 when
# they do not, 1 on any other failure.
set -euo pipefail
cd "$(dirname "$0")/.."
CONCURRENCY="${BENCH_CONCURRENCY:-256}"
CHANNELS="${BENCH_CHANNELS:-4}"
DURATION="${BENCH_DURATION:-10}"
WARMUP="${BENCH_WARMUP:-2}"
MIX="${BENCH_MIX:-card=85,paypal=8,gcash=7}"
INFLIGHT="${BENCH_INFLIGHT:-5000}"
INFLIGHT_LATENCY_MS="${BENCH_INFLIGHT_LATENCY_MS:-300}"
INFLIGHT_CHANNELS="${BENCH_INFLIGHT_CHANNELS:-16}"
PHASES="${BENCH_PHASES:-echo echo_redis recharge replay inflight}"
PY=/usr/bin/python3
B=var/bench
# Thousands of calls in flight need thousands of provider connections: one
# file descriptor each (configs/adapters.yaml, pool_size).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

./scripts/build.sh Release recharge-gateway psp-sandbox loadgen bench-echo-server rules_bench ledger_bench
mkdir -p "$B/log" "$B/redis" "$B/results"
exec 9> "$B/lock"
if ! flock -n 9; then
  echo "bench/run.sh: another bench/run.sh is running (lock $B/lock)" >&2
  exit 1
fi
./scripts/dev-secrets.sh "$B"
rm -f "$B"/ledger.db "$B"/ledger.db-wal "$B"/ledger.db-shm "$B"/journal.jsonl \
      "$B"/sandbox.port "$B"/ledger-bench.db*
rm -rf "${B:?}"/redis/*
for f in gateway sandbox redis echo echo_redis; do : > "$B/log/$f.log"; done

# The gateway's own config files, with every var/ path moved under var/bench/;
# plaintext on loopback, the load generator calling as dev-app with a token
# made for this run (only its SHA-256 reaches the gateway).
sed -e "s#var/#$B/#g" -e "s#configs/adapters.yaml#$B/adapters.yaml#" configs/gateway.yaml > "$B/gateway.yaml"
export GATEWAY_TRANSPORT=plaintext
BENCH_TOKEN=$(openssl rand -hex 24)
RECHARGE_DEV_APP_TOKEN_SHA256=$(printf '%s' "$BENCH_TOKEN" | sha256sum | cut -d' ' -f1)
export RECHARGE_DEV_APP_TOKEN_SHA256
# The wallets that shipped with `flow: redirect` wait for a person to approve
# on the wallet's page: the bench pays them directly (flow: direct), as the
# GCash share of the mix always did.
sed -e "s#var/#$B/#g" -e "s#flow: redirect#flow: direct#" configs/adapters.yaml > "$B/adapters.yaml"

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {  # name port pid log
  for _ in $(seq 1 100); do
    port_open "$2" && return 0
    kill -0 "$3" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench/run.sh: $1 did not start on port $2 (see $4)" >&2
  exit 1
}

pids=()
loadgen_pid=""
sampler_pid=""
cleanup() {
  trap - INT TERM EXIT
  if [ -n "$loadgen_pid" ]; then kill -TERM "$loadgen_pid" 2>/dev/null || true; fi
  if [ -n "$sampler_pid" ]; then kill -TERM "$sampler_pid" 2>/dev/null || true; fi
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export REDIS_PORT GATEWAY_PORT SANDBOX_PORT WEBHOOK_PORT METRICS_PORT
REDIS_PORT=$(free_port)
WEBHOOK_PORT=$(free_port)
METRICS_PORT=$(free_port)
ECHO_PORT=$(free_port)
ECHO_REDIS_PORT=$(free_port)
GATEWAY_PORT=$(free_port)

redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$PWD/$B/redis" \
  --appendonly yes --save "" --daemonize no --loglevel warning >> "$B/log/redis.log" 2>&1 &
redis_pid=$!; pids+=("$redis_pid")

build/sandbox/psp-sandbox --host 127.0.0.1 --port 0 \
  --cert "$B/certs/server.pem" --key "$B/certs/server.key" \
  --journal "$B/journal.jsonl" --card-secret-file "$B/secrets/card_api_key" \
  --paypal-credentials-file "$B/secrets/paypal_credentials" \
  --ewallet-secret-file "$B/secrets/ewallet_secret" \
  --latency-ms 0 --threads 1 --port-file "$B/sandbox.port" >> "$B/log/sandbox.log" 2>&1 &
sandbox_pid=$!; pids+=("$sandbox_pid")

build/bench/bench-echo-server --listen "127.0.0.1:$ECHO_PORT" >> "$B/log/echo.log" 2>&1 &
echo_pid=$!; pids+=("$echo_pid")

for _ in $(seq 1 100); do [ -s "$B/sandbox.port" ] && break; sleep 0.1; done
[ -s "$B/sandbox.port" ] || { echo "bench/run.sh: sandbox did not start ($B/log/sandbox.log)" >&2; exit 1; }
SANDBOX_PORT=$(cat "$B/sandbox.port")
wait_port redis "$REDIS_PORT" "$redis_pid" "$B/log/redis.log"

build/bench/bench-echo-server --listen "127.0.0.1:$ECHO_REDIS_PORT" --redis "127.0.0.1:$REDIS_PORT" \
  >> "$B/log/echo_redis.log" 2>&1 &
echo_redis_pid=$!; pids+=("$echo_redis_pid")

build/gateway/recharge-gateway --config "$B/gateway.yaml" --listen "127.0.0.1:$GATEWAY_PORT" \
  >> "$B/log/gateway.log" 2>&1 &
gateway_pid=$!; pids=("$gateway_pid" "${pids[@]}")
wait_port gateway "$GATEWAY_PORT" "$gateway_pid" "$B/log/gateway.log"
wait_port echo-server "$ECHO_PORT" "$echo_pid" "$B/log/echo.log"
wait_port echo-redis-server "$ECHO_REDIS_PORT" "$echo_redis_pid" "$B/log/echo_redis.log"

# CPU time (clock ticks) of a process, all threads; of the whole machine.
proc_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
machine_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
redis_commands() { redis-cli -p "$REDIS_PORT" info stats | awk -F: '/^total_commands_processed/{print $2+0}'; }
# EVALSHA calls so far: the round trips of fraud decisions (and of the echo
# reference); total_commands_processed also counts the commands a script runs.
redis_evalsha() { redis-cli -p "$REDIS_PORT" info commandstats | awk -F'[=,]' '/^cmdstat_evalsha:/{print $2+0}' | grep . || echo 0; }
HZ=$(getconf CLK_TCK)
sandbox_config() {  # JSON body
  curl -sS --fail --cacert "$B/certs/ca.pem" -X POST -H 'Content-Type: application/json' \
    --data "$1" "https://127.0.0.1:$SANDBOX_PORT/_sandbox/config" > /dev/null
}

stamp=$(date -u +%Y%m%dT%H%M%SZ)
export BENCH_LOAD_BEFORE; BENCH_LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
out="$B/results/$stamp"

# Samples the gateway's resident memory and thread count every 100 ms into
# $out.PHASE.mem (one "rss_kib threads" line each) until killed.
sample_gateway() {
  while kill -0 "$gateway_pid" 2>/dev/null; do
    awk '/^VmRSS:/{r=$2} /^Threads:/{t=$2} END{print r, t}' "/proc/$gateway_pid/status"
    sleep 0.1
  done
}

# Runs loadgen for PHASE (loadgen mode MODE) against PORT; meanwhile samples
# the CPU the named processes used in the measured window, the Redis commands
# processed, and the gateway's memory. Writes $out.PHASE.{json,txt,cpu,mem}.
measure() {  # phase mode port concurrency channels name=pid...
  local phase=$1 mode=$2 port=$3 conc=$4 chans=$5; shift 5
  sample_gateway > "$out.$phase.mem" &
  sampler_pid=$!
  build/tools/loadgen --mode "$mode" --target "127.0.0.1:$port" --concurrency "$conc" \
    --channels "$chans" --duration "$DURATION" --warmup "$WARMUP" --token "$BENCH_TOKEN" \
    --mix "$MIX" --timeout 10 --json-out "$out.$phase.json" > "$out.$phase.txt" &
  loadgen_pid=$!
  sleep "$WARMUP"
  local -A t0; local m0 w0 r0 e0 p
  for p in "$@"; do t0[$p]=$(proc_ticks "${p#*=}"); done
  m0=$(machine_ticks); w0=$(date +%s.%N); r0=$(redis_commands); e0=$(redis_evalsha)
  sleep "$DURATION"
  local m1 w1 r1 e1 line=""
  for p in "$@"; do
    line+=" ${p%%=*}=$(awk -v a="${t0[$p]}" -v b="$(proc_ticks "${p#*=}")" -v hz="$HZ" \
                         'BEGIN{print (b - a) / hz}')"
  done
  m1=$(machine_ticks); w1=$(date +%s.%N); r1=$(redis_commands); e1=$(redis_evalsha)
  line+=" machine=$(awk -v a="$m0" -v b="$m1" -v hz="$HZ" 'BEGIN{print (b - a) / hz}')"
  echo "wall=$(awk -v a="$w0" -v b="$w1" 'BEGIN{print b - a}') redis_commands=$((r1 - r0)) redis_evalsha=$((e1 - e0))$line" \
    > "$out.$phase.cpu"
  local rc=0
  wait "$loadgen_pid" || rc=$?
  loadgen_pid=""
  kill -TERM "$sampler_pid" 2>/dev/null || true; wait "$sampler_pid" 2>/dev/null || true
  sampler_pid=""
  if [ "$rc" -ne 0 ]; then
    cat "$out.$phase.txt" >&2
    echo "bench/run.sh: loadgen for $phase failed" >&2
    exit 1
  fi
  echo "bench/run.sh: $phase: $(sed -n 3p "$out.$phase.txt" | sed 's/^ *//')" >&2
}

echo "bench/run.sh: echo :$ECHO_PORT, echo+redis :$ECHO_REDIS_PORT, gateway :$GATEWAY_PORT (sandbox :$SANDBOX_PORT, redis :$REDIS_PORT)" >&2
echo "bench/run.sh: $CONCURRENCY in flight over $CHANNELS channels (inflight phase: $INFLIGHT over $INFLIGHT_CHANNELS, provider latency ${INFLIGHT_LATENCY_MS} ms), warm-up ${WARMUP}s, measured ${DURATION}s per phase" >&2
gw="server=$gateway_pid" sb="sandbox=$sandbox_pid" rd="redis=$redis_pid"
for phase in $PHASES; do
  case "$phase" in
    echo)       measure echo echo "$ECHO_PORT" "$CONCURRENCY" "$CHANNELS" "server=$echo_pid" ;;
    echo_redis) measure echo_redis echo "$ECHO_REDIS_PORT" "$CONCURRENCY" "$CHANNELS" \
                  "server=$echo_redis_pid" "$rd" ;;
    recharge)   measure recharge recharge "$GATEWAY_PORT" "$CONCURRENCY" "$CHANNELS" "$gw" "$sb" "$rd" ;;
    replay)     measure replay replay "$GATEWAY_PORT" "$CONCURRENCY" "$CHANNELS" "$gw" "$sb" "$rd" ;;
    inflight)
      sandbox_config "{\"latency_ms\": $INFLIGHT_LATENCY_MS}"
      measure inflight recharge "$GATEWAY_PORT" "$INFLIGHT" "$INFLIGHT_CHANNELS" "$gw" "$sb" "$rd"
      sandbox_config '{"latency_ms": 0}' ;;
    *) echo "bench/run.sh: unknown phase $phase" >&2; exit 2 ;;
  esac
done

# Stop the gateway first so that the ledger has committed everything, then
# the sandbox so that its journal is complete.
kill -TERM "$gateway_pid"; wait "$gateway_pid" || true
kill -TERM "$sandbox_pid"; wait "$sandbox_pid" || true
approved_ledger=$(sqlite3 "$B/ledger.db" 'SELECT count(*) FROM recharges WHERE status = 1;' 2>/dev/null || echo "?")
pending_ledger=$(sqlite3 "$B/ledger.db" 'SELECT count(*) FROM recharges WHERE status = 6;' 2>/dev/null || echo "?")

echo "bench/run.sh: micro-benchmarks (rule evaluation, SQLite ledger)" >&2
build/bench/rules_bench --benchmark_filter='BM_EvaluateDefaultRules_Ordinary|BM_FillAndEvaluateDefaultRules' \
  --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
  --benchmark_format=json > "$out.rules.json" 2> /dev/null
build/bench/ledger_bench --path "$B/ledger-bench.db" --seconds 5 --json-out "$out.ledger.json" \
  > "$out.ledger.txt" 2>&1 || { cat "$out.ledger.txt" >&2; echo "bench/run.sh: ledger_bench failed" >&2; exit 1; }

"$PY" bench/report.py "$out" "$B/journal.jsonl" "$approved_ledger" "$pending_ledger" "$PHASES" \
  "$INFLIGHT_LATENCY_MS" | tee "$out.txt"
