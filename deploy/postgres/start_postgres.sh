#!/usr/bin/env bash
# A local PostgreSQL (Debian's package) for a Postgres-backed Dagster instance, bound to 127.0.0.1 only.
#
#   deploy/postgres/start_postgres.sh start DATA_DIR [PORT]   # initdb once, start, create the database,
#                                                             # print the `export SYNID_PG_...` lines
#   deploy/postgres/start_postgres.sh env DATA_DIR            # print the export lines again
#   deploy/postgres/start_postgres.sh stop DATA_DIR           # fast shutdown (no-op when not running)
#
# Idempotent: `start` on a running server only prints the env lines. The password is generated once and
# kept in DATA_DIR/synid_password (mode 600); deploy/postgres/dagster.yaml reads it from SYNID_PG_PASSWORD.
# PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user (created by the
# Debian package) and DATA_DIR must be reachable by it (e.g. under /tmp or /var/lib, not /root).
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_USER=${SYNID_PG_USER:-synid}
PG_DB=${SYNID_PG_DB:-dagster}

die() { echo "start_postgres.sh: $*" >&2; exit 1; }

[ $# -ge 2 ] || die "usage: $0 start|stop|env DATA_DIR [PORT]"
command=$1
data=$(realpath -m "$2")
port_arg=${3:-}
[ -x "$PG_BIN/postgres" ] || die "no PostgreSQL at $PG_BIN (apt-get install postgresql, or set PG_BIN)"

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

running() { [ -f "$data/postmaster.pid" ] && as_owner "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; }

print_env() {
  echo "export SYNID_PG_HOST=127.0.0.1"
  echo "export SYNID_PG_PORT=$(cat "$data/synid_port")"
  echo "export SYNID_PG_USER=$PG_USER"
  echo "export SYNID_PG_PASSWORD=$(cat "$data/synid_password")"
  echo "export SYNID_PG_DB=$PG_DB"
}

case "$command" in
  stop)
    if running; then as_owner "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null; fi
    exit 0 ;;
  env)
    [ -f "$data/synid_port" ] || die "$data: no server set up here (run: $0 start $data PORT)"
    print_env; exit 0 ;;
  start) ;;
  *) die "unknown command '$command' (start, stop or env)" ;;
esac

mkdir -p "$data"
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$data"
  runuser -u postgres -- test -w "$data" || die "$data: the postgres user cannot write here (a parent directory is private); choose a data dir under /tmp or /var/lib"
fi
chmod 700 "$data"

if [ ! -f "$data/PG_VERSION" ]; then
  pwfile=$(mktemp)
  head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$pwfile"
  chmod 644 "$pwfile"  # readable by the postgres user for initdb; removed right after
  as_owner "$PG_BIN/initdb" -D "$data" -U "$PG_USER" --pwfile="$pwfile" --auth=scram-sha-256 -E UTF8 \
    >"$data.initdb.log" 2>&1 || { rm -f "$pwfile"; die "initdb failed: see $data.initdb.log"; }
  install -m 600 "$pwfile" "$data/synid_password"
  rm -f "$pwfile" "$data.initdb.log"
fi

if [ -n "$port_arg" ]; then echo "$port_arg" > "$data/synid_port"; fi
[ -f "$data/synid_port" ] || echo 5432 > "$data/synid_port"
port=$(cat "$data/synid_port")

if ! running; then
  # The Unix socket lives in the data dir: /var/run/postgresql may not be writable.
  as_owner "$PG_BIN/pg_ctl" -D "$data" -l "$data/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $data" start >/dev/null \
    || die "PostgreSQL did not start: see $data/postgres.log"
fi

export PGPASSWORD
PGPASSWORD=$(cat "$data/synid_password")
psql=("$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U "$PG_USER" -v ON_ERROR_STOP=1 -qtA)
if [ "$("${psql[@]}" -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]; then
  "${psql[@]}" -d postgres -c "CREATE DATABASE \"$PG_DB\"" >/dev/null
fi
print_env
