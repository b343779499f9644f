"""Fault 6, load: many small batch partitions (4 identities, no live images, embedded defaults) through the
Celery deployment (PostgreSQL instance, Redis, two `dagster-celery` workers).

Every run succeeds; no pool ever runs more steps than its limit (from the event log); the workers' resident
memory is sampled every second and its peak reported, and over 200 partitions it stays flat (the last tenth's
median within 25% of the first tenth's). The runs are started as a backfill's would be, in partition order,
at most two at once, each once the previous batch's filter has decided (see run_pipelined).
`-m "fault and not slow"` runs 6 partitions (CI); the 200-partition run is marked slow.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import pytest

from synid_assets.defs.partitions import batch_key
from tests.deploy_helpers import open_instance, peak_steps_per_pool, run_synid, step_intervals
from tests.test_deploy_celery import run_pipelined

pytestmark = pytest.mark.fault
SETTINGS = {"SYNID_LIVE": "0", "SYNID_BATCH_SIZE": "4", "SYNID_SEED": "5"}


class MemorySampler(threading.Thread):
    """Samples the workers' total RSS (KiB) once a second until stopped."""

    def __init__(self, workers) -> None:
        super().__init__(daemon=True)
        self.workers, self.samples, self.done = workers, [], threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            self.samples.append((time.monotonic(), [worker.rss_kib() for worker in self.workers]))


@pytest.mark.parametrize("partitions", [6, pytest.param(200, marks=pytest.mark.slow)])
def test_backfill_through_celery_workers(tmp_path: Path, celery_deployment, capsys, partitions: int) -> None:
    deployment = celery_deployment(**SETTINGS)
    workers = deployment.start_workers(2)
    sampler = MemorySampler(workers)
    sampler.start()
    started = time.monotonic()
    try:
        done = run_synid(deployment.env, "demo", "--identities", "4", "--live", "0", "--seed", "5")
        assert done.returncode == 0, done.stdout + done.stderr
        run_pipelined(deployment, [batch_key(i) for i in range(1, partitions)], 4, timeout=600 + 60 * partitions)
    finally:
        sampler.done.set()
        sampler.join()
    elapsed = time.monotonic() - started

    instance = open_instance(deployment.dagster_home, deployment.env)
    try:
        runs = [run for run in instance.get_runs() if run.job_name == "synid_batch"]
        assert len(runs) == partitions and {run.status.value for run in runs} == {"SUCCESS"}
        assert len({run.tags["dagster/partition"] for run in runs}) == partitions
        peaks = peak_steps_per_pool(step_intervals(instance, [run.run_id for run in runs]))
        limits = {pool: instance.event_log_storage.get_concurrency_info(pool).slot_count for pool in peaks}
        assert set(peaks) == {"gpu", "identity_filter", "duckdb"}
        assert all(peaks[pool] <= limits[pool] for pool in peaks), (peaks, limits)
    finally:
        instance.dispose()

    totals = [sum(rss) for _, rss in sampler.samples]
    peak_mib = max(totals) / 1024
    per_worker = [max(rss[i] for _, rss in sampler.samples) // 1024 for i in range(len(workers))]
    with capsys.disabled():
        print(f"\n{partitions} partitions through 2 Celery workers in {elapsed:.0f} s "
              f"({3600 * partitions / elapsed:.0f} batches/h); pool peaks {peaks} (limits {limits}); "
              f"workers' RSS peak {peak_mib:.0f} MiB, per worker {per_worker} MiB")
    if partitions >= 50:
        tenth = max(1, len(totals) // 10)
        first, last = statistics.median(totals[tenth:2 * tenth]), statistics.median(totals[-tenth:])
        assert last <= 1.25 * first, f"workers' memory grew from {first / 1024:.0f} to {last / 1024:.0f} MiB"
