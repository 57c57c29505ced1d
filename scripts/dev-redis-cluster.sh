#!/usr/bin/env bash
# A throwaway Redis Cluster for the dev stack and the tests: six redis-server
# nodes on loopback, ports BASE_PORT..BASE_PORT+5 (cluster bus: +10000 each),
# 3 masters with one replica each, every node's data (nodes.conf, the
# append-only file) and log under DIR/<port>/ (var/redis-cluster for run.sh).
#
#   dev-redis-cluster.sh run DIR BASE_PORT      the six nodes, in the foreground;
#                                               SIGTERM or SIGINT stops them all, and
#                                               when one node ends the others are
#                                               stopped too (logs: DIR/<port>/redis.log)
#   dev-redis-cluster.sh node DIR PORT          one node, in the foreground (exec),
#                                               logging to stdout: the same settings as
#                                               `run`, for a caller that stops and
#                                               starts nodes one by one (the tests)
#   dev-redis-cluster.sh create DIR BASE_PORT   waits (bounded) until the six answer
#                                               PING; unless they already form the
#                                               cluster (a restart from their nodes.conf
#                                               does), `redis-cli --cluster create` with
#                                               one replica per master; then waits
#                                               (bounded) until every node says
#                                               cluster_state:ok and 3 masters each have
#                                               a replica in sync
#
# cluster-node-timeout is REDIS_CLUSTER_NODE_TIMEOUT_MS (2000): a master that
# stops answering for that long is failed over to its replica within a few
# seconds. DIR may be relative (made absolute here). Safe to run twice.
set -euo pipefail
cmd="${1:?usage: dev-redis-cluster.sh run|node|create DIR PORT}"
dir=$(realpath -m "${2:?DIR}")
port0="${3:?PORT}"
if ! [[ "$port0" =~ ^[1-9][0-9]*$ ]] || [ "$port0" -gt 55530 ]; then
  echo "dev-redis-cluster.sh: bad port $port0 (1..55530: six ports and their bus ports, +10000)" >&2
  exit 2
fi
node_timeout="${REDIS_CLUSTER_NODE_TIMEOUT_MS:-2000}"
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "dev-redis-cluster.sh: needs redis-server and redis-cli (apt-get install redis-server redis-tools)" >&2
  exit 1
fi
ports=()
for ((i = 0; i < 6; i++)); do ports+=($((port0 + i))); done

# One node's command line (its data directory must exist).
node_argv() {
  local p="$1"
  argv=(redis-server --port "$p" --bind 127.0.0.1 --dir "$dir/$p"
    --cluster-enabled yes --cluster-config-file "$dir/$p/nodes.conf"
    --cluster-node-timeout "$node_timeout"
    --appendonly yes --save "" --repl-diskless-sync-delay 0
    --daemonize no --loglevel warning)
}

# One command to the node on port $1, bounded (a paused node must not hang us).
cli() {
  local p="$1"
  shift
  timeout 5 redis-cli -h 127.0.0.1 -p "$p" "$@" 2>/dev/null | tr -d '\r'
}

# Whether every node says cluster_state:ok and, in its own view, 3 masters
# (not failing, with slots) each have a connected replica; and every replica
# is in sync with its master.
healthy() {
  local p info
  for p in "${ports[@]}"; do
    [[ "$(cli "$p" CLUSTER INFO)" == *cluster_state:ok* ]] || return 1
    cli "$p" CLUSTER NODES | awk '
      $3 ~ /master/ && $3 !~ /fail/ && NF >= 9 { if (!($1 in m)) { m[$1] = 1; masters++ } }
      $3 ~ /slave/ && $3 !~ /fail/ && $8 == "connected" { r[$4] = 1 }
      END { n = 0; for (id in m) if (id in r) n++; exit !(masters == 3 && n == 3) }' || return 1
    info=$(cli "$p" INFO replication)
    if [[ "$info" == *role:slave* && "$info" != *master_link_status:up* ]]; then return 1; fi
  done
}

case "$cmd" in
  run)
    pids=()
    cleanup() {
      # A second SIGTERM (run.sh's cleanup after a process-group SIGTERM)
      # must not end this before the nodes are reaped.
      trap - EXIT
      trap '' INT TERM
      for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
      for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    }
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    for p in "${ports[@]}"; do
      mkdir -p "$dir/$p"
      node_argv "$p"
      "${argv[@]}" >> "$dir/$p/redis.log" 2>&1 &
      pids+=($!)
    done
    set +e
    wait -n "${pids[@]}"
    status=$?
    set -e
    echo "dev-redis-cluster.sh: a node ended (status $status; logs $dir/<port>/redis.log): stopping the others" >&2
    [ "$status" -ne 0 ] || status=1
    exit "$status"
    ;;
  node)
    mkdir -p "$dir/$port0"
    node_argv "$port0"
    exec "${argv[@]}"
    ;;
  create)
    for p in "${ports[@]}"; do
      for _ in $(seq 1 300); do
        [ "$(cli "$p" PING)" = PONG ] && break
        sleep 0.1
      done
      [ "$(cli "$p" PING)" = PONG ] ||
        { echo "dev-redis-cluster.sh: the node on port $p does not answer ($dir/$p/redis.log)" >&2; exit 1; }
    done
    # A fresh node knows itself only; nodes restarted from their nodes.conf
    # know all six (and reform the cluster on their own).
    fresh=0 formed=0
    for p in "${ports[@]}"; do
      known=$(cli "$p" CLUSTER INFO | sed -n 's/^cluster_known_nodes://p' || true)
      case "$known" in 1) fresh=$((fresh + 1)) ;; 6) formed=$((formed + 1)) ;; esac
    done
    if [ "$fresh" = 6 ]; then
      addresses=()
      for p in "${ports[@]}"; do addresses+=("127.0.0.1:$p"); done
      # Masters: the first three; replicas: the other three.
      timeout 60 redis-cli --cluster create "${addresses[@]}" --cluster-replicas 1 --cluster-yes \
        > "$dir/create.log" 2>&1 ||
        { echo "dev-redis-cluster.sh: redis-cli --cluster create failed ($dir/create.log):" >&2
          tail -20 "$dir/create.log" >&2; exit 1; }
    elif [ "$formed" != 6 ]; then
      echo "dev-redis-cluster.sh: the nodes on ports ${ports[0]}..${ports[5]} are part of another" \
        "or half-made cluster (cluster_known_nodes not 1 or 6 everywhere); stop them and remove $dir" >&2
      exit 1
    fi
    for _ in $(seq 1 300); do
      healthy && exit 0
      sleep 0.1
    done
    healthy || { echo "dev-redis-cluster.sh: the cluster on ports ${ports[0]}..${ports[5]} is not" \
      "ok with 3 masters and their replicas after 30 s (CLUSTER INFO, CLUSTER NODES)" >&2; exit 1; }
    ;;
  *)
    echo "dev-redis-cluster.sh: unknown command $cmd (run, node, create)" >&2
    exit 2
    ;;
esac
