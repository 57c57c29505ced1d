#!/usr/bin/env bash
# The main job: builds the gateway (Release, into build/) and runs it with its
# local services: a Redis server and the PSP sandbox, all on loopback, with
# their data under var/. The gateway serves gRPC on 127.0.0.1:${GATEWAY_PORT}
# in the foreground; Ctrl-C (SIGINT) or SIGTERM stops all of them cleanly.
#
# Callers are enforced: the dev tokens are var/dev/app.token (role app) and
# var/dev/ops.token (role ops); only their SHA-256 reaches the gateway's
# config (through RECHARGE_DEV_*_TOKEN_SHA256). GATEWAY_TLS=1 serves TLS with
# mTLS required on the same port: trust var/dev/ca.pem and present
# var/dev/app-client.pem/.key or var/dev/ops-client.pem/.key.
#
# Provider notifications (3-D Secure results, wallet approvals) reach the
# gateway on https://127.0.0.1:${WEBHOOK_PORT}/webhooks/<instance>, signed
# with var/secrets/webhook_secret; the sandbox trusts var/dev/ca.pem for it.
#
# Environment: GATEWAY_PORT (50051), REDIS_PORT (6390), SANDBOX_PORT (8443),
# WEBHOOK_PORT (8444), METRICS_PORT (9464: Prometheus, GET /metrics),
# ACTION_EXPIRY (15m: how long a buyer has for a 3-D Secure challenge or a
# wallet approval),
# SANDBOX_LATENCY_MS (0: the sandbox's injected provider latency, in ms),
# GATEWAY_TLS (0), GATEWAY_LOG_LEVEL (info).
#
# LEDGER=postgres: the ledger is a throwaway PostgreSQL cluster instead of
# SQLite (scripts/dev-postgres.sh: data in var/postgres, port PG_PORT, 5433;
# role and database `recharge`, password var/secrets/pg_password).
# REPLICAS=N (1; more needs LEDGER=postgres): N gateways sharing the ledger
# and Redis, replica i on GATEWAY_PORT+i (WEBHOOK_PORT+i, METRICS_PORT+i);
# the dev tokens and certificates are valid on each. Provider webhooks go to
# replica 0's port.
# REDIS=cluster (the default when REPLICAS > 1; REDIS=single, one server, is
# the default for one replica and may be asked for with more): a 3-master
# Redis Cluster instead of the one server (scripts/dev-redis-cluster.sh: six
# nodes on REDIS_PORT..REDIS_PORT+5, cluster bus ports +10000, one replica
# per master, data and logs in var/redis-cluster/<port>/); the gateways get
# its first three nodes as seeds in REDIS_CLUSTER.
# Safe to run twice: set-up steps skip what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
export GATEWAY_PORT="${GATEWAY_PORT:-50051}" REDIS_PORT="${REDIS_PORT:-6390}" SANDBOX_PORT="${SANDBOX_PORT:-8443}"
export WEBHOOK_PORT="${WEBHOOK_PORT:-8444}" METRICS_PORT="${METRICS_PORT:-9464}"
export LEDGER="${LEDGER:-sqlite}" PG_PORT="${PG_PORT:-5433}"
REPLICAS="${REPLICAS:-1}"
REDIS="${REDIS:-}"
case "$LEDGER" in sqlite | postgres) ;; *) echo "run.sh: LEDGER must be sqlite or postgres" >&2; exit 2 ;; esac
if ! [[ "$REPLICAS" =~ ^[1-9][0-9]*$ ]]; then echo "run.sh: REPLICAS must be a number from 1" >&2; exit 2; fi
if [ "$REPLICAS" -gt 1 ] && [ "$LEDGER" != postgres ]; then
  echo "run.sh: REPLICAS=$REPLICAS needs LEDGER=postgres (replicas share one ledger; SQLite is one node's)" >&2
  exit 2
fi
if [ -z "$REDIS" ]; then
  if [ "$REPLICAS" -gt 1 ]; then REDIS=cluster; else REDIS=single; fi
fi
case "$REDIS" in single | cluster) ;; *) echo "run.sh: REDIS must be single or cluster" >&2; exit 2 ;; esac
if [ "$REDIS" = cluster ] && { ! [[ "$REDIS_PORT" =~ ^[1-9][0-9]*$ ]] || [ "$REDIS_PORT" -gt 55530 ]; }; then
  echo "run.sh: REDIS=cluster needs REDIS_PORT..REDIS_PORT+5 and their bus ports (+10000) below 65536" >&2
  exit 2
fi

./scripts/install-deps.sh
./scripts/build.sh Release recharge-gateway recharge_proto_py psp-sandbox
./scripts/dev-secrets.sh var
mkdir -p var/redis var/sandbox var/log
[ "$REDIS" = cluster ] && mkdir -p var/redis-cluster
token_sha256() { tr -d '\n' < "$1" | sha256sum | cut -d' ' -f1; }
RECHARGE_DEV_APP_TOKEN_SHA256=$(token_sha256 var/dev/app.token)
RECHARGE_DEV_OPS_TOKEN_SHA256=$(token_sha256 var/dev/ops.token)
export RECHARGE_DEV_APP_TOKEN_SHA256 RECHARGE_DEV_OPS_TOKEN_SHA256
if [ "${GATEWAY_TLS:-0}" = 1 ]; then
  export GATEWAY_TRANSPORT=mtls
else
  export GATEWAY_TRANSPORT=plaintext
fi

# One file descriptor per provider connection (configs/adapters.yaml,
# pool_size): raise the soft limit as far as the hard one allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ports=("$SANDBOX_PORT")
if [ "$REDIS" = cluster ]; then
  for ((i = 0; i < 6; i++)); do ports+=($((REDIS_PORT + i)) $((REDIS_PORT + 10000 + i))); done
else
  ports+=("$REDIS_PORT")
fi
for ((i = 0; i < REPLICAS; i++)); do
  ports+=($((GATEWAY_PORT + i)) $((WEBHOOK_PORT + i)) $((METRICS_PORT + i)))
done
[ "$LEDGER" = postgres ] && ports+=("$PG_PORT")
for p in "${ports[@]}"; do
  if port_busy "$p"; then
    echo "run.sh: port $p on 127.0.0.1 is in use (another run.sh?); stop it or set GATEWAY_PORT/REDIS_PORT/SANDBOX_PORT/WEBHOOK_PORT/METRICS_PORT/PG_PORT" >&2
    exit 1
  fi
done

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$REDIS" = cluster ]; then
  ./scripts/dev-redis-cluster.sh run var/redis-cluster "$REDIS_PORT" >> var/log/redis-cluster.log 2>&1 &
  pids+=($!)
  REDIS_CLUSTER="127.0.0.1:$REDIS_PORT,127.0.0.1:$((REDIS_PORT + 1)),127.0.0.1:$((REDIS_PORT + 2))"
else
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$PWD/var/redis" \
    --appendonly yes --save "" --daemonize no --loglevel warning \
    >> var/log/redis.log 2>&1 &
  pids+=($!)
  REDIS_CLUSTER=""  # configs/gateway.yaml: empty, the one server at REDIS_PORT
fi
export REDIS_CLUSTER

rm -f var/sandbox/port
"${SANDBOX_BIN:-build/sandbox/psp-sandbox}" --host 127.0.0.1 --port "$SANDBOX_PORT" \
  --cert var/certs/server.pem --key var/certs/server.key \
  --journal var/sandbox/journal.jsonl --card-secret-file var/secrets/card_api_key \
  --paypal-credentials-file var/secrets/paypal_credentials \
  --ewallet-secret-file var/secrets/ewallet_secret \
  --webhook-secret-file var/secrets/webhook_secret --webhook-ca-file var/dev/ca.pem \
  --latency-ms "${SANDBOX_LATENCY_MS:-0}" \
  --port-file var/sandbox/port >> var/log/sandbox.log 2>&1 &
pids+=($!)

if [ "$LEDGER" = postgres ]; then
  ./scripts/dev-postgres.sh init var/postgres
  ./scripts/dev-postgres.sh run var/postgres "$PG_PORT" >> var/log/postgres.log 2>&1 &
  pids+=($!)
  ./scripts/dev-postgres.sh setup var/postgres "$PG_PORT" var/secrets/pg_password
  echo "run.sh: ledger on PostgreSQL 127.0.0.1:$PG_PORT (database recharge, data var/postgres)" >&2
fi

if [ "$REDIS" = cluster ]; then
  # Waits (bounded) for the six nodes; forms the cluster unless they already
  # did (a restart from var/redis-cluster reforms it).
  ./scripts/dev-redis-cluster.sh create var/redis-cluster "$REDIS_PORT" ||
    { echo "run.sh: the Redis Cluster did not form (var/log/redis-cluster.log, var/redis-cluster/<port>/redis.log)" >&2; exit 1; }
  echo "run.sh: Redis Cluster on 127.0.0.1:$REDIS_PORT..$((REDIS_PORT + 5)) (3 masters, a replica each; data var/redis-cluster; seeds $REDIS_CLUSTER)" >&2
fi

# Wait (bounded) for both to accept connections.
for _ in $(seq 1 100); do
  if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && [ -s var/sandbox/port ]; then break; fi
  sleep 0.1
done
redis-cli -p "$REDIS_PORT" ping >/dev/null || { echo "run.sh: redis did not start (var/log/redis.log)" >&2; exit 1; }
[ -s var/sandbox/port ] || { echo "run.sh: sandbox did not start (var/log/sandbox.log)" >&2; exit 1; }
redis_where="redis on 127.0.0.1:$REDIS_PORT"
[ "$REDIS" = cluster ] && redis_where="Redis Cluster on 127.0.0.1:$REDIS_PORT..$((REDIS_PORT + 5))"
echo "run.sh: $redis_where, PSP sandbox on https://127.0.0.1:$SANDBOX_PORT, provider webhooks to https://127.0.0.1:$WEBHOOK_PORT/webhooks/<instance>, metrics on http://127.0.0.1:$METRICS_PORT/metrics" >&2
if [ "$GATEWAY_TRANSPORT" = mtls ]; then
  echo "run.sh: gateway on 127.0.0.1:$GATEWAY_PORT, TLS with client certificates required: CA var/dev/ca.pem, clients var/dev/app-client.pem (app), var/dev/ops-client.pem (ops) (Ctrl-C stops everything)" >&2
else
  echo "run.sh: gateway on 127.0.0.1:$GATEWAY_PORT, plaintext (loopback); tokens var/dev/app.token (app), var/dev/ops.token (ops) (Ctrl-C stops everything)" >&2
fi

# Replica i (from 0) on GATEWAY_PORT+i, WEBHOOK_PORT+i, METRICS_PORT+i; the
# first one that ends ends the stack.
gateways=()
for ((i = 0; i < REPLICAS; i++)); do
  GATEWAY_PORT=$((GATEWAY_PORT + i)) WEBHOOK_PORT=$((WEBHOOK_PORT + i)) METRICS_PORT=$((METRICS_PORT + i)) \
    "${GATEWAY_BIN:-build/gateway/recharge-gateway}" --config configs/gateway.yaml &
  gateways+=($!)
done
[ "$REPLICAS" -gt 1 ] && echo "run.sh: $REPLICAS gateway replicas on 127.0.0.1:$GATEWAY_PORT..$((GATEWAY_PORT + REPLICAS - 1))" >&2
pids=("${gateways[@]}" "${pids[@]}")
set +e
wait -n "${gateways[@]}"
status=$?
set -e
exit "$status"
