"""Fault 1, kill -9: a 64-identity batch with live images, killed with SIGKILL at five random points, then rerun.

Real `synid demo` subprocesses on the embedded defaults. An uninterrupted run gives the reference and each step's
duration; five kill points are drawn from a seeded generator: five distinct steps, each with a random time
into it. Each attempt is a rerun of the batch on the same SYNID_HOME, killed once its target step
has run that long (or has just ended, if it ends sooner: reused images make reruns faster). After a final rerun
the manifest's rows, the LanceDB rows and every image's sha256 equal the reference's, and no temporary file is
left anywhere under SYNID_HOME. The seed and the points are printed (`pytest -s`) and recorded as test properties.
The fast single-kill variant that `make test` runs is test_run_recovery's test_sigkill_mid_batch_then_rerun_...
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

import dagster as dg
import pytest
from dagster._core.events import DagsterEventType
from dagster._core.storage.dagster_run import DagsterRunStatus

from synid_assets.core.dataset.run_owner import PID_TAG
from tests.fault_helpers import (
    held_slots,
    image_hashes,
    manifest_rows,
    new_home,
    open_instance,
    run_demo,
    runs_of,
    start_demo,
    temp_files,
    vector_rows,
)

pytestmark = [pytest.mark.fault, pytest.mark.slow]

DEMO = ["demo", "--identities", "64", "--live", "2", "--seed", "11"]
KILLS = 5
SEED = int(os.environ.get("SYNID_FAULT_SEED", "1205"))
STEP_EVENTS = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE}


class KillPoint(NamedTuple):
    step: str
    seconds_in: float


def step_durations(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Seconds from each step's start to its end, in the order the steps started."""
    started: dict[str, float] = {}
    durations: dict[str, float] = {}
    for entry in instance.all_logs(run_id, of_type=STEP_EVENTS):
        event = entry.dagster_event
        if event.event_type == DagsterEventType.STEP_START:
            started[event.step_key] = entry.timestamp
        elif event.step_key in started:
            durations[event.step_key] = entry.timestamp - started[event.step_key]
    return durations


def draw_kill_points(durations: dict[str, float], rng: random.Random, count: int = KILLS) -> list[KillPoint]:
    """`count` distinct steps drawn at random, in step order, each with a random time into it (its reference
    duration): kills land in short steps (the manifest's DuckDB build, say) as well as in the long GPU ones."""
    steps = sorted(rng.sample(list(durations), count), key=list(durations).index)
    return [KillPoint(step, round(rng.uniform(0, durations[step]), 2)) for step in steps]


def step_states(instance: dg.DagsterInstance, run_id: str) -> tuple[dict[str, float], set[str]]:
    """(start timestamps of the steps that started, steps that ended) of a run, from its event log."""
    started, ended = {}, set()
    for entry in instance.all_logs(run_id, of_type=STEP_EVENTS):
        event = entry.dagster_event
        if event.event_type == DagsterEventType.STEP_START:
            started[event.step_key] = entry.timestamp
        else:
            ended.add(event.step_key)
    return started, ended


def kill_at(instance: dg.DagsterInstance, process: subprocess.Popen, point: KillPoint, timeout: float = 300) -> str:
    """SIGKILL `process` `point.seconds_in` after its batch run started `point.step`, or as soon as that step
    ends if sooner; returns the steps that were running then."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"the demo ended (rc {process.returncode}) before its kill point {point}"
        assert time.monotonic() < deadline, f"no kill point {point} after {timeout} s"
        runs = [r for r in runs_of(instance, "synid_batch") if r.tags.get(PID_TAG) == str(process.pid)]
        if runs:
            started, ended = step_states(instance, runs[0].run_id)
            if point.step in ended or (point.step in started and time.time() - started[point.step] >= point.seconds_in):
                process.send_signal(signal.SIGKILL)
                process.wait()
                return ", ".join(sorted(set(started) - ended)) or "between steps"
        time.sleep(0.05)


def test_five_sigkills_across_a_64_identity_batch_then_a_rerun_equal_an_uninterrupted_run(
    tmp_path: Path, record_property
) -> None:
    reference = new_home(tmp_path / "reference")
    started = time.monotonic()
    done = run_demo(reference, *DEMO, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    reference_seconds = time.monotonic() - started
    with open_instance(reference / "dagster") as instance:
        [reference_run] = runs_of(instance, "synid_batch")
        durations = step_durations(instance, reference_run.run_id)
    points = draw_kill_points(durations, random.Random(SEED))
    assert len(points) == KILLS
    print(f"\nkill -9 fault test: seed {SEED} (SYNID_FAULT_SEED), uninterrupted run {reference_seconds:.0f} s, "
          f"steps {', '.join(f'{s} {d:.1f} s' for s, d in durations.items())}")
    record_property("kill_seed", SEED)

    home = new_home(tmp_path / "killed")
    killed_runs = []
    with open_instance(home / "dagster") as instance:
        for number, point in enumerate(points, 1):
            process, _ = start_demo(home, *DEMO, log=home / f"attempt-{number}.log")
            try:
                running = kill_at(instance, process, point)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            [run] = [r for r in runs_of(instance, "synid_batch") if r.tags.get(PID_TAG) == str(process.pid)]
            assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED  # killed, not ended
            killed_runs.append(run.run_id)
            line = f"kill {number}: SIGKILL {point.seconds_in} s into {point.step} (running: {running})"
            print(line)
            record_property(f"kill_{number}", line)

        started = time.monotonic()
        rerun = run_demo(home, *DEMO, timeout=600)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        print(f"final rerun {time.monotonic() - started:.0f} s")
        assert f"recovered: run {killed_runs[-1]} (synid_batch) was STARTED" in rerun.stdout
        statuses = {r.run_id: r.status for r in runs_of(instance, "synid_batch")}
        assert all(statuses[run_id] == DagsterRunStatus.FAILURE for run_id in killed_runs)
        assert list(statuses.values()).count(DagsterRunStatus.SUCCESS) == 1
        assert held_slots(instance) == {}

    assert manifest_rows(home) == manifest_rows(reference)
    assert vector_rows(home) == vector_rows(reference)
    hashes = image_hashes(home)
    assert hashes == image_hashes(reference) and len(hashes) > 64 * 2
    recorded = {path: sha for _, _, _, path, sha, *_ in manifest_rows(home)["images"]}
    assert recorded and all(hashes[path] == sha for path, sha in recorded.items())
    assert temp_files(home) == []
