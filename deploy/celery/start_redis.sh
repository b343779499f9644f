#!/usr/bin/env bash
# A local Redis (Debian's redis-server) as the Celery broker and result backend, on 127.0.0.1 only.
#
#   deploy/celery/start_redis.sh start DIR [PORT]   # start (idempotent), print `export SYNID_REDIS_URL=...`
#   deploy/celery/start_redis.sh env DIR            # print the export line again
#   deploy/celery/start_redis.sh stop DIR           # shut down (no-op when not running)
#
# DIR holds the pid file, the log and the port. Nothing is persisted: a queued task lives as long as Redis.
set -euo pipefail

REDIS_SERVER=${REDIS_SERVER:-/usr/bin/redis-server}
die() { echo "start_redis.sh: $*" >&2; exit 1; }

[ $# -ge 2 ] || die "usage: $0 start|stop|env DIR [PORT]"
command=$1
dir=$(realpath -m "$2")
port_arg=${3:-}

running() { [ -f "$dir/redis.pid" ] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; }
print_env() { echo "export SYNID_REDIS_URL=redis://127.0.0.1:$(cat "$dir/redis_port")/0"; }

case "$command" in
  stop)
    if running; then
      pid=$(cat "$dir/redis.pid")
      kill "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    exit 0 ;;
  env)
    [ -f "$dir/redis_port" ] || die "$dir: no Redis set up here (run: $0 start $dir PORT)"
    print_env; exit 0 ;;
  start) ;;
  *) die "unknown command '$command' (start, stop or env)" ;;
esac

[ -x "$REDIS_SERVER" ] || die "no redis-server at $REDIS_SERVER (apt-get install redis-server, or set REDIS_SERVER)"
mkdir -p "$dir"
if [ -n "$port_arg" ]; then echo "$port_arg" > "$dir/redis_port"; fi
[ -f "$dir/redis_port" ] || echo 6379 > "$dir/redis_port"
port=$(cat "$dir/redis_port")

if ! running; then
  "$REDIS_SERVER" --bind 127.0.0.1 --port "$port" --protected-mode yes --save "" --appendonly no \
    --dir "$dir" --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
    || die "redis-server did not start: see $dir/redis.log"
  for _ in $(seq 100); do
    if running && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
  done
  running || die "redis-server did not start: see $dir/redis.log"
fi
print_env
