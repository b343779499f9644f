"""Fault 6, load: a Dagster backfill of many small batch partitions (4 identities, no live images, embedded
defaults) through the Celery deployment: PostgreSQL instance, Redis, a real `dagster-daemon`
(deploy/celery/start_daemon.sh: its backfill thread requests the runs, the queued run coordinator launches
them, at most two at once) and two `dagster-celery` workers that take every step.

The backfill is submitted as the UI's "Materialize" over partitions does (launch_asset_backfill), over the
synid_batch job's assets. It completes; every run succeeds and every batch asset is materialized once per
partition; no pool ever runs more steps than its limit (from the event log); the resident memory of the daemon
(with its code server) and of the workers is sampled every second and its peak reported, and over 200
partitions it stays flat (the last tenth's median within 25% of the first tenth's).
`-m "fault and not slow"` runs 6 partitions (CI); the 200-partition run is marked slow.
"""

from __future__ import annotations

import statistics
import threading
import time

import dagster as dg
import pytest

from synid_assets.defs.assets import BATCH_ASSETS
from synid_assets.defs.partitions import batch_key
from tests.deploy_helpers import (
    launch_asset_backfill,
    open_instance,
    peak_steps_per_pool,
    run_synid,
    step_intervals,
    wait_for_backfill,
)

pytestmark = pytest.mark.fault
SETTINGS = {"SYNID_LIVE": "0", "SYNID_BATCH_SIZE": "4", "SYNID_SEED": "5"}


class MemorySampler(threading.Thread):
    """Samples the RSS (KiB) of the daemon (with its code server) and of each worker once a second."""

    def __init__(self, dagster_daemon, workers) -> None:
        super().__init__(daemon=True)
        self.dagster_daemon, self.workers, self.samples, self.done = dagster_daemon, workers, [], threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            daemon_kib, runs_kib = self.dagster_daemon.rss_kib()
            self.samples.append((daemon_kib, runs_kib, [worker.rss_kib() for worker in self.workers]))

    def peak_mib(self, index: int) -> float:
        return max(sample[index] for sample in self.samples) / 1024


def flat(totals: list[int]) -> tuple[bool, float, float]:
    """Whether the last tenth's median is within 25% of the second tenth's (the first holds the warm-up)."""
    tenth = max(1, len(totals) // 10)
    first, last = statistics.median(totals[tenth:2 * tenth]), statistics.median(totals[-tenth:])
    return last <= 1.25 * first, first / 1024, last / 1024


@pytest.mark.parametrize("partitions", [6, pytest.param(200, marks=pytest.mark.slow)])
def test_backfill_through_the_daemon_and_celery_workers(celery_deployment, capsys, partitions: int) -> None:
    deployment = celery_deployment(**SETTINGS)
    workers = deployment.start_workers(2)
    # The spec (and batch-00000): the code location's first state, before the daemon's sensors look at it.
    done = run_synid(deployment.env, "demo", "--identities", "4", "--live", "0", "--seed", "5")
    assert done.returncode == 0, done.stdout + done.stderr
    keys = [batch_key(i) for i in range(1, partitions)]  # with the demo's batch-00000: `partitions` in all

    instance = open_instance(deployment.dagster_home, deployment.env)
    try:
        daemon = deployment.start_daemon()
        sampler = MemorySampler(daemon, workers)
        sampler.start()
        started = time.monotonic()
        try:
            backfill_id = launch_asset_backfill(instance, keys)
            status = wait_for_backfill(instance, backfill_id, daemon, timeout=600 + 60 * partitions)
        finally:
            sampler.done.set()
            sampler.join()
        elapsed = time.monotonic() - started
        assert status == "COMPLETED_SUCCESS", f"backfill {status}:\n{daemon.log.read_text()[-4000:]}"

        runs = instance.get_runs(filters=dg.RunsFilter.for_backfill(backfill_id))
        assert runs and {run.status.value for run in runs} == {"SUCCESS"}, [(r.run_id, r.status) for r in runs]
        by_partition = [run.tags.get("dagster/partition") for run in runs]
        assert sorted(key for key in by_partition if key) == keys  # one run per partition (+ the manifest's)
        for asset in BATCH_ASSETS:
            materialized = instance.get_materialized_partitions(asset.key)
            assert set(keys) <= materialized, (asset.key, set(keys) - materialized)
            records = instance.fetch_materializations(asset.key, limit=10 * partitions).records
            counted = [r.partition_key for r in records if r.partition_key in keys]
            assert sorted(counted) == keys, (asset.key, counted)  # once each
        peaks = peak_steps_per_pool(step_intervals(instance, [run.run_id for run in runs]))
        limits = {pool: instance.event_log_storage.get_concurrency_info(pool).slot_count for pool in peaks}
        assert set(peaks) == {"gpu", "identity_filter", "duckdb"}
        assert all(peaks[pool] <= limits[pool] for pool in peaks), (peaks, limits)
    finally:
        instance.dispose()

    workers_kib = [sum(sample[2]) for sample in sampler.samples]
    per_worker = [max(sample[2][i] for sample in sampler.samples) // 1024 for i in range(len(workers))]
    with capsys.disabled():
        print(f"\n{len(keys)} partitions (after the demo's) by a daemon backfill through 2 Celery workers "
              f"in {elapsed:.0f} s "
              f"({3600 * len(keys) / elapsed:.0f} batches/h), {len(runs)} runs; pool peaks {peaks} (limits {limits}); "
              f"RSS peaks: daemon with code server {sampler.peak_mib(0):.0f} MiB, run processes "
              f"{sampler.peak_mib(1):.0f} MiB, workers {max(workers_kib) / 1024:.0f} MiB (per worker {per_worker} MiB)")
    if partitions >= 50:
        for name, totals in (("daemon", [s[0] for s in sampler.samples]), ("workers", workers_kib)):
            ok, first, last = flat(totals)
            assert ok, f"the {name}' memory grew from {first:.0f} to {last:.0f} MiB"
