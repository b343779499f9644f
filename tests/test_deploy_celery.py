"""The Celery deployment for real: PostgreSQL instance, Redis broker, two `dagster-celery` worker processes.

Batches run through the workers give the same files as the single-machine default, and the pools (gpu,
identity_filter, duckdb; limit 1) hold across the workers and across two runs at once, read from the event log.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import polars as pl
import yaml

from synid_assets.core.dataset.layout import DatasetLayout
from tests.deploy_helpers import (
    REPO,
    CeleryDeployment,
    celery_workers_of,
    deployment_env,
    new_dagster_home,
    open_instance,
    peak_steps_per_pool,
    run_synid,
    start_batch_run,
    step_intervals,
    stop_process_group,
)

# Workers build the resources from their own environment: every process of a deployment gets the same SYNID_*.
SETTINGS = {"SYNID_LIVE": "1", "SYNID_BATCH_SIZE": "4", "SYNID_SEED": "5"}
DEMO = ["demo", "--live", "1", "--seed", "5"]


def image_hashes(home: Path) -> dict[str, str]:
    return {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((home / "batches").rglob("*.png"))}


def batch_tables(home: Path, table: str) -> dict[str, list[dict]]:
    layout = DatasetLayout(home)
    rows = {}
    for path in sorted((home / "batches").glob(f"*/{table}.parquet")):
        frame = pl.read_parquet(path)
        rows[path.parent.name] = frame.sort(frame.columns[0]).to_dicts()
    assert rows, f"no {table} tables under {layout.batches_dir}"
    return rows


def run_pipelined(deployment: CeleryDeployment, keys: list[str], size: int, timeout: float = 600,
                  decided: Callable[[str], bool] | None = None) -> None:
    """Batch runs, each in its own process, at most two at once; a run starts once the previous run's filter
    has decided (the order-stable filter decides batches in key order, so a later batch must not pass it first).
    `decided(key)` says so; by default, that batch's filter_decisions table exists under a local SYNID_HOME."""
    layout = DatasetLayout(deployment.home)
    decided = decided or (lambda key: layout.table(key, "filter_decisions").exists())
    running, deadline = [], time.monotonic() + timeout
    try:
        for index, key in enumerate(keys):
            if index:
                while not decided(keys[index - 1]) or len(running) >= 2:
                    running = _reap(running)
                    assert time.monotonic() < deadline, f"{keys[index - 1]} not decided after {timeout} s"
                    time.sleep(0.3)
            log = deployment.home.parent / f"run-{key}.log"
            running.append((key, start_batch_run(deployment.env, key, size, log), log))
        while running:
            running = _reap(running)
            assert time.monotonic() < deadline, f"runs {[k for k, _, _ in running]} not done after {timeout} s"
            time.sleep(0.3)
    finally:
        for _, process, _ in running:
            stop_process_group(process)


def _reap(running: list) -> list:
    still = []
    for key, process, log in running:
        if process.poll() is None:
            still.append((key, process, log))
        else:
            assert process.returncode == 0, f"run of {key} failed:\n{log.read_text()[-4000:]}"
    return still


def test_executor_config_matches_the_worker_config() -> None:
    from synid_assets.defs.executors import CELERY_EXECUTOR_CONFIG

    worker_config = yaml.safe_load((REPO / "deploy" / "celery" / "celery.yaml").read_text())["execution"]["config"]
    assert worker_config == CELERY_EXECUTOR_CONFIG


def test_gpu_steps_go_to_the_gpu_queue_and_request_one_gpu() -> None:
    import json

    from synid_assets.defs.assets import ALL_ASSETS

    for asset in ALL_ASSETS:
        op = getattr(asset, "op", None)
        if op is None:
            continue
        if op.pool == "gpu":
            assert op.tags["dagster-celery/queue"] == "gpu", op.name
            resources = json.loads(op.tags["dagster-k8s/config"])["container_config"]["resources"]
            assert resources["limits"]["nvidia.com/gpu"] == 1 == resources["requests"]["nvidia.com/gpu"], op.name
        else:
            assert "dagster-celery/queue" not in op.tags, op.name  # CPU steps: the default queue


def test_celery_workers_run_batches_like_one_machine_and_pools_hold(tmp_path: Path, celery_deployment) -> None:
    reference = tmp_path / "reference"
    reference_env = deployment_env(reference / "home", new_dagster_home(reference, REPO / "dagster.yaml"), {},
                                   **SETTINGS)
    done = run_synid(reference_env, *DEMO, "--identities", "12")
    assert done.returncode == 0, done.stdout + done.stderr

    deployment = celery_deployment(**SETTINGS)
    deployment.start_workers(2)
    done = run_synid(deployment.env, *DEMO, "--identities", "4")  # the spec and batch-00000
    assert done.returncode == 0, done.stdout + done.stderr
    run_pipelined(deployment, ["batch-00001", "batch-00002"], 4)

    assert image_hashes(deployment.home) == image_hashes(reference / "home") and image_hashes(reference / "home")
    for table in ("identities", "prompts", "documents", "document_faces", "filter_decisions", "live", "live_faces"):
        assert batch_tables(deployment.home, table) == batch_tables(reference / "home", table), table

    instance = open_instance(deployment.dagster_home, deployment.env)
    try:
        runs = list(instance.get_runs())
        assert {run.status.value for run in runs} == {"SUCCESS"} and len(runs) == 4
        batch_runs = [run.run_id for run in runs if run.job_name == "synid_batch"]
        # Every step ran in a worker, and both workers took steps.
        assert len(celery_workers_of(instance, batch_runs)) == 2
        intervals = step_intervals(instance, batch_runs)
        assert {pool for pool, *_ in intervals} == {"gpu", "identity_filter", "duckdb"}
        assert peak_steps_per_pool(intervals) == {"gpu": 1, "identity_filter": 1, "duckdb": 1}
        # The check had something to check: the two pipelined runs were going at the same time.
        records = sorted(instance.get_run_records(dg.RunsFilter(run_ids=batch_runs)), key=lambda r: r.start_time)
        assert any(later.start_time < earlier.end_time for earlier, later in zip(records, records[1:], strict=False))
        assert not any(instance.event_log_storage.get_concurrency_info(pool).claimed_slots
                       for pool in ("gpu", "identity_filter", "duckdb"))
    finally:
        instance.dispose()
