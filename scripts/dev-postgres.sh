#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the dev stack and the tests, on
# loopback, its data under DIR (var/postgres for run.sh). As root, the server
# runs as the `postgres` user (PostgreSQL refuses root) and DIR belongs to it.
#
#   dev-postgres.sh init DIR                  initdb DIR/data unless it exists
#   dev-postgres.sh run DIR PORT [ARGS...]    the server, in the foreground (exec);
#                                             ARGS go to postgres (e.g. -c fsync=off)
#   dev-postgres.sh setup DIR PORT PWFILE     waits (bounded) until it answers, then
#                                             makes the role `recharge` (password:
#                                             the content of PWFILE) and the database
#                                             `recharge` it owns, unless they exist
#
# The superuser `postgres` is trusted on the Unix socket in DIR only; TCP
# (127.0.0.1:PORT) asks for a password (scram-sha-256). Safe to run twice.
set -euo pipefail
cmd="${1:?usage: dev-postgres.sh init|run|setup DIR ...}"
dir=$(realpath -m "${2:?DIR}")  # absolute: the server runs in its data directory
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bindir/postgres" ] || { echo "dev-postgres.sh: no PostgreSQL server (apt-get install postgresql-15)" >&2; exit 1; }
as_pg=()
if [ "$(id -u)" = 0 ]; then as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --); fi

case "$cmd" in
  init)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
    if [ ! -s "$dir/data/PG_VERSION" ]; then
      "${as_pg[@]}" "$bindir/initdb" -D "$dir/data" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 -E UTF8 --no-instructions > "$dir/initdb.log" 2>&1 ||
        { echo "dev-postgres.sh: initdb failed ($dir/initdb.log)" >&2; exit 1; }
    fi
    ;;
  run)
    port="${3:?PORT}"
    shift 3
    exec "${as_pg[@]}" "$bindir/postgres" -D "$dir/data" -p "$port" -k "$dir" \
      -c listen_addresses=127.0.0.1 "$@"
    ;;
  setup)
    port="${3:?PORT}"
    pwfile="${4:?PWFILE}"
    for _ in $(seq 1 300); do
      "$bindir/pg_isready" -q -h "$dir" -p "$port" && break
      sleep 0.1
    done
    "$bindir/pg_isready" -q -h "$dir" -p "$port" ||
      { echo "dev-postgres.sh: postgres on port $port did not start" >&2; exit 1; }
    password=$(tr -d '\n' < "$pwfile")
    case "$password" in *\'*) echo "dev-postgres.sh: a quote in $pwfile" >&2; exit 1 ;; esac
    psql=("$bindir/psql" -h "$dir" -p "$port" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1)
    if [ -z "$("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = 'recharge'")" ]; then
      "${psql[@]}" -c "CREATE ROLE recharge LOGIN PASSWORD '$password'" >/dev/null
    else
      "${psql[@]}" -c "ALTER ROLE recharge PASSWORD '$password'" >/dev/null
    fi
    if [ -z "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'recharge'")" ]; then
      "${psql[@]}" -c "CREATE DATABASE recharge OWNER recharge" >/dev/null
    fi
    ;;
  *)
    echo "dev-postgres.sh: unknown command $cmd (init, run, setup)" >&2
    exit 2
    ;;
esac
