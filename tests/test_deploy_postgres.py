"""The Postgres deployment for real: `synid demo` on an instance in a PostgreSQL server (deploy/postgres/).

Run records, events and pool slots live in Postgres; pools hold there; run recovery leaves runs of other
machines alone and still fails this machine's dead runs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRunStatus

from synid_assets.core.dataset.run_owner import RunOwner
from tests.deploy_helpers import (
    REPO,
    PostgresServer,
    deployment_env,
    new_dagster_home,
    open_instance,
    run_synid,
    stop_process_group,
)

POOLS = ("gpu", "identity_filter", "duckdb")


def _postgres_home(tmp_path: Path, server: PostgresServer) -> tuple[Path, Path, dict[str, str]]:
    home = tmp_path / "home"
    dagster_home = new_dagster_home(tmp_path, REPO / "deploy" / "postgres" / "dagster.yaml")
    return home, dagster_home, deployment_env(home, dagster_home, server.new_database())


def _holder_run(instance: dg.DagsterInstance, owner: RunOwner, pool: str = "gpu") -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="slot_holder", run_id=run_id, status=DagsterRunStatus.STARTED,
                                   tags=owner.tags()))
    instance.event_log_storage.initialize_concurrency_limit_to_default(pool)
    assert instance.event_log_storage.claim_concurrency_slot(pool, run_id, "hold").is_claimed
    return run_id


def test_batch_on_postgres_storage(tmp_path: Path, postgres_server: PostgresServer) -> None:
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    home, dagster_home, env = _postgres_home(tmp_path, postgres_server)
    done = run_synid(env, "demo", "--identities", "4", "--live", "1", "--seed", "5")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "identities by status" in done.stdout

    instance = open_instance(dagster_home, env)
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        runs = {run.job_name: run for run in instance.get_runs()}
        assert set(runs) == {"attribute_spec_job", "synid_batch"}
        assert all(run.status == DagsterRunStatus.SUCCESS for run in runs.values())
        batch = runs["synid_batch"]
        assert RunOwner.from_tags(dict(batch.tags)).host == socket.gethostname()  # the owner, recorded in Postgres
        materialized = instance.get_latest_materialization_event(dg.AssetKey("identity_filter"))
        assert materialized is not None and materialized.run_id == batch.run_id
        assert materialized.dagster_event.partition == "batch-00000"
        # The pools were created in Postgres with the instance's default limit, and nothing holds a slot.
        for pool in POOLS:
            info = instance.event_log_storage.get_concurrency_info(pool)
            assert info.slot_count == 1 and not info.claimed_slots and not info.pending_steps, pool
    finally:
        instance.dispose()
    assert (home / "manifest.duckdb").exists()


def test_pools_and_run_recovery_across_machines_on_postgres(tmp_path: Path, postgres_server: PostgresServer) -> None:
    from synid_assets.defs.runs import owner_is_alive, recover_dead_runs

    home, dagster_home, env = _postgres_home(tmp_path, postgres_server)
    instance = open_instance(dagster_home, env)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    demo = None
    try:
        this_machine = RunOwner.current()
        # A machine with the same host name (another boot id) shares this instance: its runs are not ours to judge.
        twin = RunOwner(this_machine.host, os.getpid(), f"another-boot-id/{this_machine.process_start or '1'}")
        assert owner_is_alive(instance, twin) is None
        other_host = _holder_run(instance, RunOwner("another-machine", 4242, "boot/1"))
        twin_run = _holder_run(instance, twin, pool="duckdb")
        local_dead = _holder_run(instance, RunOwner.of_process(sleeper.pid), pool="identity_filter")
        sleeper.kill()
        sleeper.wait()
        [message] = recover_dead_runs(instance)
        assert local_dead in message
        assert instance.get_run_by_id(local_dead).status == DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(other_host).status == DagsterRunStatus.STARTED
        assert instance.get_run_by_id(twin_run).status == DagsterRunStatus.STARTED

        # The pool holds on Postgres: the demo waits for the other machine's run's slot and does not fail that run.
        log = tmp_path / "demo.log"
        with log.open("w") as out:
            demo = subprocess.Popen([sys.executable, "-m", "synid_assets.cli", "demo", "--identities", "2", "--live",
                                     "0", "--seed", "5"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                    start_new_session=True)
        deadline = time.monotonic() + 240
        while "waits for a slot in pool 'gpu'" not in log.read_text():
            assert demo.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no wait message"
            time.sleep(0.3)
        assert "on another host" in log.read_text() and other_host in log.read_text()
        assert instance.get_run_by_id(other_host).status == DagsterRunStatus.STARTED
        # That machine's run ends (its own recovery, or an operator): the slot is free and the demo finishes.
        for run_id in (other_host, twin_run):
            instance.report_run_failed(instance.get_run_by_id(run_id), message="ended on its own machine")
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
        assert demo.wait(timeout=300) == 0, log.read_text()
        assert not any(instance.event_log_storage.get_concurrency_info(pool).claimed_slots for pool in POOLS)
    finally:
        if demo is not None:
            stop_process_group(demo)
        sleeper.kill()
        sleeper.wait()
        instance.dispose()
