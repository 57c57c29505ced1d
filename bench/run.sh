#!/usr/bin/env bash
# The RecordRecharge benchmark (bench/README.md). Builds Release, starts a
# bare gRPC echo server and the full stack (Redis, the PSP sandbox, the
# gateway) on free loopback ports with their state under var/bench/ (ledger
# and sandbox journal wiped at start), runs loadgen against the echo server
# and then against the gateway with the same settings, and prints both side
# by side with the CPU each process used while measured. It then checks the
# run's books: recharges loadgen saw approved = charges the sandbox journaled
# = approved recharges in the ledger.
#
# Environment (defaults): BENCH_CONCURRENCY (64), BENCH_CHANNELS (4),
# BENCH_DURATION seconds measured (10), BENCH_WARMUP seconds (2),
# BENCH_SANDBOX_LATENCY_MS (0), BENCH_SANDBOX_SCRIPT (sandbox/psp_sandbox.py:
# to try a patched copy), BUILD_JOBS (nproc, see scripts/build.sh).
# Results: var/bench/results/<time>.{txt,echo.json,recharge.json}.
# Everything started here is stopped on exit (also on Ctrl-C). Safe to run
# twice; a second run at the same time is refused (lock file).
set -euo pipefail
cd "$(dirname "$0")/.."
CONCURRENCY="${BENCH_CONCURRENCY:-64}"
CHANNELS="${BENCH_CHANNELS:-4}"
DURATION="${BENCH_DURATION:-10}"
WARMUP="${BENCH_WARMUP:-2}"
SANDBOX_LATENCY_MS="${BENCH_SANDBOX_LATENCY_MS:-0}"
SANDBOX_SCRIPT="${BENCH_SANDBOX_SCRIPT:-sandbox/psp_sandbox.py}"
PY=/usr/bin/python3
B=var/bench

./scripts/build.sh Release recharge-gateway loadgen bench-echo-server
mkdir -p "$B/log" "$B/redis" "$B/results"
exec 9> "$B/lock"
if ! flock -n 9; then
  echo "bench/run.sh: another bench/run.sh is running (lock $B/lock)" >&2
  exit 1
fi
./scripts/dev-secrets.sh "$B"
rm -f "$B"/ledger.db "$B"/ledger.db-wal "$B"/ledger.db-shm "$B"/journal.jsonl \
      "$B"/sandbox.port "$B"/redis/*
: > "$B/log/gateway.log"; : > "$B/log/sandbox.log"; : > "$B/log/redis.log"; : > "$B/log/echo.log"

# The gateway's own config files, with every var/ path moved under var/bench/;
# plaintext on loopback, the load generator calling as dev-app with a token
# made for this run (only its SHA-256 reaches the gateway).
sed -e "s#var/#$B/#g" -e "s#configs/adapters.yaml#$B/adapters.yaml#" configs/gateway.yaml > "$B/gateway.yaml"
export GATEWAY_TRANSPORT=plaintext
BENCH_TOKEN=$(openssl rand -hex 24)
RECHARGE_DEV_APP_TOKEN_SHA256=$(printf '%s' "$BENCH_TOKEN" | sha256sum | cut -d' ' -f1)
export RECHARGE_DEV_APP_TOKEN_SHA256
sed -e "s#var/#$B/#g" configs/adapters.yaml > "$B/adapters.yaml"

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
cleanup() {
  trap - INT TERM EXIT
  if [ -n "$loadgen_pid" ]; then kill -TERM "$loadgen_pid" 2>/dev/null || true; fi
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export REDIS_PORT GATEWAY_PORT SANDBOX_PORT
REDIS_PORT=$(free_port)
ECHO_PORT=$(free_port)
GATEWAY_PORT=$(free_port)

# Redis keeps nothing on disk: every run starts with empty fraud counters.
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$PWD/$B/redis" \
  --appendonly no --save "" --daemonize no --loglevel warning >> "$B/log/redis.log" 2>&1 &
redis_pid=$!; pids+=("$redis_pid")

"$PY" "$SANDBOX_SCRIPT" --host 127.0.0.1 --port 0 \
  --cert "$B/certs/server.pem" --key "$B/certs/server.key" \
  --journal "$B/journal.jsonl" --card-secret-file "$B/secrets/card_api_key" \
  --latency-ms "$SANDBOX_LATENCY_MS" --port-file "$B/sandbox.port" >> "$B/log/sandbox.log" 2>&1 &
sandbox_pid=$!; pids+=("$sandbox_pid")

build/bench/bench-echo-server --listen "127.0.0.1:$ECHO_PORT" >> "$B/log/echo.log" 2>&1 &
echo_pid=$!; pids+=("$echo_pid")

for _ in $(seq 1 100); do [ -s "$B/sandbox.port" ] && break; sleep 0.1; done
[ -s "$B/sandbox.port" ] || { echo "bench/run.sh: sandbox did not start ($B/log/sandbox.log)" >&2; exit 1; }
SANDBOX_PORT=$(cat "$B/sandbox.port")
wait_port redis "$REDIS_PORT" "$redis_pid" "$B/log/redis.log"

build/gateway/recharge-gateway --config "$B/gateway.yaml" --listen "127.0.0.1:$GATEWAY_PORT" \
  >> "$B/log/gateway.log" 2>&1 &
gateway_pid=$!; pids=("$gateway_pid" "${pids[@]}")
wait_port gateway "$GATEWAY_PORT" "$gateway_pid" "$B/log/gateway.log"
wait_port echo-server "$ECHO_PORT" "$echo_pid" "$B/log/echo.log"

# CPU time (clock ticks) of a process, all threads; of the whole machine.
proc_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
machine_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
HZ=$(getconf CLK_TCK)

stamp=$(date -u +%Y%m%dT%H%M%SZ)
export BENCH_LOAD_BEFORE; BENCH_LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
out="$B/results/$stamp"

# Runs loadgen in MODE against PORT; meanwhile samples the CPU the named
# processes used in the measured window. Writes $out.MODE.json and .cpu.
measure() {  # mode port name=pid...
  local mode=$1 port=$2; shift 2
  build/tools/loadgen --mode "$mode" --target "127.0.0.1:$port" --concurrency "$CONCURRENCY" \
    --channels "$CHANNELS" --duration "$DURATION" --warmup "$WARMUP" --token "$BENCH_TOKEN" \
    --json-out "$out.$mode.json" > "$out.$mode.txt" &
  loadgen_pid=$!
  sleep "$WARMUP"
  local -A t0; local m0 w0 p
  for p in "$@"; do t0[$p]=$(proc_ticks "${p#*=}"); done
  m0=$(machine_ticks); w0=$(date +%s.%N)
  sleep "$DURATION"
  local m1 w1 line=""
  for p in "$@"; do
    line+=" ${p%%=*}=$(awk -v a="${t0[$p]}" -v b="$(proc_ticks "${p#*=}")" -v hz="$HZ" \
                         'BEGIN{print (b - a) / hz}')"
  done
  m1=$(machine_ticks); w1=$(date +%s.%N)
  line+=" machine=$(awk -v a="$m0" -v b="$m1" -v hz="$HZ" 'BEGIN{print (b - a) / hz}')"
  echo "wall=$(awk -v a="$w0" -v b="$w1" 'BEGIN{print b - a}')$line" > "$out.$mode.cpu"
  local rc=0
  wait "$loadgen_pid" || rc=$?
  loadgen_pid=""
  if [ "$rc" -ne 0 ]; then
    cat "$out.$mode.txt" >&2
    echo "bench/run.sh: loadgen --mode $mode failed" >&2
    exit 1
  fi
  cat "$out.$mode.txt"
}

echo "bench/run.sh: echo server on :$ECHO_PORT, gateway on :$GATEWAY_PORT (sandbox :$SANDBOX_PORT, redis :$REDIS_PORT)" >&2
echo "bench/run.sh: concurrency $CONCURRENCY over $CHANNELS channels, warm-up ${WARMUP}s, measured ${DURATION}s" >&2
measure echo "$ECHO_PORT" "server=$echo_pid"
measure recharge "$GATEWAY_PORT" "server=$gateway_pid" "sandbox=$sandbox_pid" "redis=$redis_pid"

# Stop the gateway first so that the ledger has committed everything.
kill -TERM "$gateway_pid"; wait "$gateway_pid" || true
approved_ledger=$(sqlite3 "$B/ledger.db" 'SELECT count(*) FROM recharges WHERE status = 1;' 2>/dev/null || echo "?")

"$PY" - "$out" "$B/journal.jsonl" "$approved_ledger" <<'EOF' | tee "$out.txt"
import json, os, subprocess, sys
out, journal_path, approved_ledger = sys.argv[1], sys.argv[2], sys.argv[3]
runs = {m: json.load(open(f"{out}.{m}.json")) for m in ("echo", "recharge")}
cpu = {}
for m in runs:
    fields = dict(kv.split("=") for kv in open(f"{out}.{m}.cpu").read().split())
    wall = float(fields.pop("wall"))
    cpu[m] = {k: float(v) / wall for k, v in fields.items()}

model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"machine: {os.cpu_count()} CPUs, {model}; load average before the run: {os.environ['BENCH_LOAD_BEFORE']}")
e = runs["echo"]
print(f"settings: concurrency {e['concurrency']}, {e['channels']} channels, warm-up {e['warmup_s']:g} s, "
      f"measured {e['duration_s']:g} s, plaintext gRPC on 127.0.0.1")
print()
print(f"{'':24}{'calls/s':>10}{'good/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
      f"{'errors':>8}{'not ok*':>9}")
labels = {"echo": "bare gRPC echo", "recharge": "RecordRecharge"}
for m, r in runs.items():
    ms = r["measured"]
    lat = r["latency_ms"]
    print(f"{labels[m]:24}{r['throughput']:>10.0f}{r['good_throughput']:>10.0f}{lat['p50']:>9.2f}"
          f"{lat['p90']:>9.2f}{lat['p99']:>9.2f}{lat['max']:>9.1f}{ms['errors']:>8}"
          f"{ms['calls'] - ms['good']:>9}")
print("* not ok = calls that were not good: a non-OK gRPC status, or a recharge not APPROVED or replayed")
rs = runs["recharge"]["measured"]
print(f"  RecordRecharge gRPC status: {rs['grpc_status']}, recharge status: {rs.get('recharge_status', {})}")
print()
print("CPU used while measured (cores; 1.00 = one core busy):")
print(f"{'':24}{'loadgen':>9}{'server':>9}{'sandbox':>9}{'redis':>9}{'others':>9}{'machine':>9}")
for m, r in runs.items():
    c = cpu[m]
    ours = r["loadgen_cpu_cores"] + sum(v for k, v in c.items() if k != "machine")
    others = max(0.0, c["machine"] - ours)
    cell = lambda k: f"{c[k]:>9.2f}" if k in c else f"{'-':>9}"
    print(f"{labels[m]:24}{r['loadgen_cpu_cores']:>9.2f}{cell('server')}{cell('sandbox')}{cell('redis')}"
          f"{others:>9.2f}{c['machine']:>9.2f}")
print()
journal = [json.loads(l) for l in open(journal_path) if l.strip()]
succeeded = sum(1 for j in journal if j.get("status") == "succeeded")
total = runs["recharge"]["total"]
approved = total.get("recharge_status", {}).get("APPROVED", 0)
ok = (succeeded == approved and len(journal) == succeeded and approved_ledger == str(approved)
      and total["replayed"] == 0)
print(f"books (whole run, warm-up included): loadgen saw {approved} APPROVED "
      f"({total['replayed']} replayed); sandbox journal "
      f"{len(journal)} lines, {succeeded} succeeded; ledger {approved_ledger} approved -> "
      f"{'consistent' if ok else 'MISMATCH'}")
sys.exit(0 if ok else 3)
EOF
