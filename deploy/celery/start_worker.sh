#!/usr/bin/env bash
# Celery workers of the SynID Celery deployment (dagster-celery), in the foreground.
#
#   deploy/celery/start_worker.sh gpu          # one worker per GPU of this machine (nvidia-smi -L, or
#                                              # SYNID_GPUS=N), each on the `gpu` queue with concurrency 1
#                                              # and CUDA_VISIBLE_DEVICES=<its GPU>: a GPU never holds two models
#   deploy/celery/start_worker.sh cpu [N]      # one worker on the default `dagster` queue, N processes (default 1)
#   deploy/celery/start_worker.sh all          # one process taking both queues (a machine without GPUs
#                                              # running the embedded defaults: CI, tests, benchmarks)
#
# Needs the deployment's environment: DAGSTER_HOME (with deploy/celery/dagster.yaml), SYNID_PG_*,
# SYNID_REDIS_URL, SYNID_HOME (shared by all machines) and any SYNID_PROFILE/SYNID_* the runs use, and
# synid installed (`pip install -e .`). SYNID_WORKER_NAME overrides the worker's name (default: mode-pid).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
config=${SYNID_CELERY_CONFIG:-$here/celery.yaml}
die() { echo "start_worker.sh: $*" >&2; exit 1; }

[ $# -ge 1 ] || die "usage: $0 gpu | cpu [N] | all"
[ -n "${DAGSTER_HOME:-}" ] && [ -f "$DAGSTER_HOME/dagster.yaml" ] \
  || die "DAGSTER_HOME must hold the deployment's dagster.yaml (deploy/celery/dagster.yaml)"
[ -n "${SYNID_REDIS_URL:-}" ] || die "SYNID_REDIS_URL is not set (deploy/celery/start_redis.sh prints it)"
command -v dagster-celery >/dev/null || die "dagster-celery is not on PATH (activate the venv)"
export SYNID_EXECUTOR=${SYNID_EXECUTOR:-celery}

worker() {  # worker NAME QUEUES -- CELERY_ARGS...   (QUEUES comma-separated)
  local name=$1 queues=$2; shift 3
  # One -q with a comma list: dagster-celery turns each -q into a `-Q` and celery 5 keeps only the last one.
  dagster-celery worker start -A dagster_celery.app -y "$config" -n "$name" -q "$queues" -- "$@"
}

case "$1" in
  gpu)
    gpus=${SYNID_GPUS:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)}
    [ "${gpus:-0}" -gt 0 ] || die "no GPU found (nvidia-smi -L); set SYNID_GPUS=N to override"
    trap 'kill 0' EXIT  # a stopped script stops its workers
    for ((i = 0; i < gpus; i++)); do
      CUDA_VISIBLE_DEVICES=$i worker "${SYNID_WORKER_NAME:-gpu$i}" gpu -- --concurrency=1 &
    done
    wait ;;
  cpu)
    CUDA_VISIBLE_DEVICES="" worker "${SYNID_WORKER_NAME:-cpu-$$}" dagster -- --concurrency="${2:-1}" ;;
  all)
    worker "${SYNID_WORKER_NAME:-all-$$}" dagster,gpu -- --concurrency=1 ;;
  *) die "unknown mode '$1' (gpu, cpu or all)" ;;
esac
