"""Fault 5, Postgres part: the instance's PostgreSQL server restarts during a batch run.

The run fails cleanly (the process ends with a message, its run is not left STARTED holding slots) or rides
through; the rerun completes, and every image and table equals those of an uninterrupted run; no temporary
file is left.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster._core.storage.dagster_run import DagsterRunStatus

from tests.deploy_helpers import (
    REPO,
    PostgresServer,
    deployment_env,
    new_dagster_home,
    open_instance,
    require_postgres,
    run_synid,
    start_postgres,
    stop_process_group,
)
from tests.test_deploy_celery import batch_tables, image_hashes

pytestmark = [pytest.mark.fault, pytest.mark.slow]  # about 2 min: `make test-faults` runs it
DEMO = ["demo", "--identities", "8", "--live", "1", "--seed", "5"]
SETTINGS = {"SYNID_BATCH_SIZE": "4"}


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this test alone: it is restarted."""
    require_postgres()
    server = start_postgres()
    yield server
    server.remove()


def test_postgres_restart_mid_run_then_rerun_gives_identical_outputs(tmp_path: Path, own_postgres) -> None:
    reference = tmp_path / "reference"
    reference_env = deployment_env(reference / "home", new_dagster_home(reference, REPO / "dagster.yaml"), {},
                                   **SETTINGS)
    done = run_synid(reference_env, *DEMO)
    assert done.returncode == 0, done.stdout + done.stderr

    home = tmp_path / "home"
    dagster_home = new_dagster_home(tmp_path, REPO / "deploy" / "postgres" / "dagster.yaml")
    env = deployment_env(home, dagster_home, own_postgres.new_database(), **SETTINGS)
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        demo = subprocess.Popen([sys.executable, "-m", "synid_assets.cli", *DEMO], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while len(list((home / "batches").rglob("*.png")) if (home / "batches").exists() else []) < 3:
            assert demo.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no images"
            time.sleep(0.1)
        own_postgres.stop()  # fast shutdown: every connection of the run is cut
        time.sleep(2)
        own_postgres.start()
        first_rc = demo.wait(timeout=300)  # it ends: no hang on a dead connection
    finally:
        stop_process_group(demo)
    first_output = log.read_text()
    if first_rc != 0:
        assert "Traceback" not in first_output.splitlines()[-1], first_output[-3000:]

    rerun = run_synid(env, *DEMO)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert image_hashes(home) == image_hashes(reference / "home")
    for table in ("identities", "filter_decisions", "documents", "live"):
        assert batch_tables(home, table) == batch_tables(reference / "home", table), table
    assert not list(home.rglob("*.tmp")), "a temporary file was left"

    instance = open_instance(dagster_home, env)
    try:
        runs = list(instance.get_runs())
        assert not [run.run_id for run in runs if not run.is_finished], "a run was left unfinished"
        batch_statuses = [run.status for run in runs if run.job_name == "synid_batch"]
        assert batch_statuses.count(DagsterRunStatus.SUCCESS) >= 2  # both batches, at the first try or the rerun
        assert not any(instance.event_log_storage.get_concurrency_info(pool).claimed_slots
                       for pool in ("gpu", "identity_filter", "duckdb"))
    finally:
        instance.dispose()
    print(f"first run: rc {first_rc}; last lines: {first_output.strip().splitlines()[-3:]}")
