#!/usr/bin/env bash
# The dagster-daemon of the SynID Celery deployment, in the foreground: one per deployment, on any machine
# that reaches Postgres and Redis. It runs the backfills, the run queue (max_concurrent_runs of
# dagster.yaml), the sensors and schedules, run monitoring and run retries; each run it launches hands its
# steps to the Celery workers (SYNID_EXECUTOR=celery).
#
#   deploy/celery/start_daemon.sh            # the repository's workspace.yaml (the synid code location)
#   SYNID_WORKSPACE=/path/workspace.yaml deploy/celery/start_daemon.sh
#
# Needs the deployment's environment, as the workers (start_worker.sh): DAGSTER_HOME (with
# deploy/celery/dagster.yaml), SYNID_PG_*, SYNID_REDIS_URL, SYNID_HOME and any SYNID_* the runs use.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
workspace=${SYNID_WORKSPACE:-$repo/workspace.yaml}
die() { echo "start_daemon.sh: $*" >&2; exit 1; }

[ -n "${DAGSTER_HOME:-}" ] && [ -f "$DAGSTER_HOME/dagster.yaml" ] \
  || die "DAGSTER_HOME must hold the deployment's dagster.yaml (deploy/celery/dagster.yaml)"
[ -n "${SYNID_REDIS_URL:-}" ] || die "SYNID_REDIS_URL is not set (deploy/celery/start_redis.sh prints it)"
[ -f "$workspace" ] || die "no workspace file $workspace"
command -v dagster-daemon >/dev/null || die "dagster-daemon is not on PATH (activate the venv)"
export SYNID_EXECUTOR=${SYNID_EXECUTOR:-celery}

# The workspace names the code location by module: load it from the repository (synid installed or not).
cd "$repo"
exec dagster-daemon run -w "$workspace"
