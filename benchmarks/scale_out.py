"""Scale-out figures: batches per hour on the embedded defaults with 1, 2 and 4 Celery workers on this machine,
and the per-step overhead of each deployment against the single-machine default, as ratios, in one run.

    .venv/bin/python -m benchmarks.scale_out --batches 6 --workers 1,2,4   # from the repository root

Every row runs the same batches (4 identities each, no live images, seed 5) the same way: the spec and the first
batch by `synid demo`, then the other batches as separate run processes, at most two at once, each started once
the previous batch's filter has decided (tests/test_deploy_celery.run_pipelined). Rows:
- `single machine`: the default deployment (SQLite instance, in-process executor), the baseline;
- `celery xN`: PostgreSQL instance, Redis broker and N `dagster-celery` workers (deploy/celery);
- `s3 home`: the default deployment with SYNID_HOME=s3://... (`s3_home_row`; by default on moto's S3 server,
  started here on 127.0.0.1).
Batches per hour count the batches after the first (the pipelined part). The per-step time of a run is its
duration over its executed steps (run records and event log); the ratio is its mean over the baseline's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.deploy_helpers import (
    REPO,
    CeleryDeployment,
    PostgresServer,
    RedisServer,
    deployment_env,
    new_dagster_home,
    open_instance,
    run_synid,
    start_postgres,
    start_redis,
)
from tests.test_deploy_celery import run_pipelined

SETTINGS = {"SYNID_LIVE": "0", "SYNID_BATCH_SIZE": "4", "SYNID_SEED": "5"}
BATCH_SIZE = 4


@dataclass
class Row:
    name: str
    batches_per_hour: float
    seconds_per_step: float


def _measure(name: str, deployment: CeleryDeployment, batches: int, decided: Callable[[str], bool] | None = None
             ) -> Row:
    """Runs `batches` batches on a prepared deployment; batches/hour of the pipelined ones, mean s per step."""
    from dagster._core.events import DagsterEventType

    from synid_assets.defs.partitions import batch_key

    done = run_synid(deployment.env, "demo", "--identities", str(BATCH_SIZE), "--live", "0", "--seed", "5")
    if done.returncode != 0:
        raise RuntimeError(f"{name}: synid demo failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    started = time.monotonic()
    run_pipelined(deployment, [batch_key(i) for i in range(1, batches)], BATCH_SIZE, timeout=600 + 120 * batches,
                  decided=decided)
    elapsed = time.monotonic() - started
    instance = open_instance(deployment.dagster_home, deployment.env)
    try:
        per_step = []
        for record in instance.get_run_records():
            if record.dagster_run.job_name != "synid_batch" or not record.end_time:
                continue
            steps = len(instance.all_logs(record.dagster_run.run_id, of_type=DagsterEventType.STEP_SUCCESS))
            per_step.append((record.end_time - record.start_time) / max(steps, 1))
    finally:
        instance.dispose()
    return Row(name, 3600 * (batches - 1) / elapsed, statistics.mean(per_step))


def single_machine_row(root: Path, batches: int) -> Row:
    """The default deployment: SQLite instance (the repository's dagster.yaml), in-process executor."""
    home = root / "single" / "home"
    dagster_home = new_dagster_home(root / "single", REPO / "dagster.yaml")
    return _measure("single machine", CeleryDeployment(home, dagster_home,
                                                       deployment_env(home, dagster_home, {}, **SETTINGS)), batches)


def celery_row(root: Path, batches: int, workers: int, postgres: PostgresServer, redis: RedisServer) -> Row:
    """PostgreSQL instance, Redis broker, `workers` dagster-celery workers taking both queues (no GPU here)."""
    base = root / f"celery{workers}"
    home = base / "home"
    home.mkdir(parents=True)
    dagster_home = new_dagster_home(base, REPO / "deploy" / "celery" / "dagster.yaml")
    deployment = CeleryDeployment(home, dagster_home,
                                  deployment_env(home, dagster_home, postgres.new_database(), redis.url, **SETTINGS))
    try:
        deployment.start_workers(workers)
        return _measure(f"celery x{workers}", deployment, batches)
    finally:
        deployment.stop_workers()


def s3_home_row(root: Path, batches: int, s3_home: str) -> Row:
    """The default deployment with SYNID_HOME on object storage (s3://bucket/prefix; the endpoint and keys come
    from the AWS_* variables, e.g. a moto server on 127.0.0.1). A batch counts as decided once the instance has a
    materialization of its identity_filter, since its files are not on this machine's disk."""
    import dagster as dg

    dagster_home = new_dagster_home(root / "s3", REPO / "dagster.yaml")
    env = deployment_env(root / "s3" / "mirror", dagster_home, {}, **SETTINGS)
    env["SYNID_HOME"] = s3_home
    deployment = CeleryDeployment(root / "s3" / "mirror", dagster_home, env)
    instance = open_instance(dagster_home, env)

    def decided(key: str) -> bool:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("identity_filter"), asset_partitions=[key]), limit=1)
        return bool(records.records)

    try:
        return _measure("s3 home", deployment, batches, decided)
    finally:
        instance.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=6, help="batches per row (4 identities each), >= 2")
    parser.add_argument("--workers", default="1,2,4", help="Celery worker counts, comma-separated")
    parser.add_argument("--s3-home", default=os.environ.get("SYNID_BENCH_S3_HOME", "moto"),
                        help="the S3 row's SYNID_HOME: an s3:// URL (endpoint and keys from AWS_*), 'moto' (default: "
                             "moto's S3 server started here on 127.0.0.1) or 'none' to leave the row out")
    args = parser.parse_args()
    if args.batches < 2:
        parser.error("--batches must be >= 2")
    counts = [int(n) for n in args.workers.split(",") if n]
    root = Path(tempfile.mkdtemp(prefix="synid-scale-out-"))
    postgres, redis = start_postgres(), start_redis()
    rows = []
    try:
        rows.append(single_machine_row(root, args.batches))
        rows += [celery_row(root, args.batches, n, postgres, redis) for n in counts]
        if args.s3_home == "moto":
            from benchmarks.s3_overhead import local_s3_store

            with local_s3_store("synid-scale-out") as aws_env:
                os.environ.update(aws_env)  # the S3 row's processes inherit the store's endpoint and keys
                rows.append(s3_home_row(root, args.batches, "s3://synid-scale-out/ds"))
        elif args.s3_home and args.s3_home != "none":
            rows.append(s3_home_row(root, args.batches, args.s3_home))
    finally:
        postgres.remove()
        redis.remove()
    base = rows[0].seconds_per_step
    print(f"{args.batches} batches x {BATCH_SIZE} identities, no live images, embedded defaults, "
          f"{os.cpu_count()} cores")
    print(f"{'deployment':<16}{'batches/h':>10}{'s/step':>9}{'step overhead':>15}")
    for row in rows:
        print(f"{row.name:<16}{row.batches_per_hour:>10.0f}{row.seconds_per_step:>9.2f}"
              f"{row.seconds_per_step / base:>14.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
