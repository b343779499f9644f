"""Fault test 2: two batches run by two processes at once on the default deployment (SQLite instance, one
SYNID_HOME, the shipped dagster.yaml with pool limit 1) lose no LanceDB row and no Parquet file, and the
order-stable filter still decides batches in key order: a later batch waits while an earlier one is being
made, and is refused with a message when nobody makes it.

Real processes: `dagster job execute` on the code location, and Python processes running the batch job.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from dagster._core.events import DagsterEventType
from dagster._core.storage.dagster_run import DagsterRunStatus

from synid_assets.core.dataset.layout import DatasetLayout
from synid_assets.core.dataset.run_owner import RunOwner
from synid_assets.core.dataset.vectorstore import ACCEPTED_TABLE, DOCUMENT_TABLE, LIVE_TABLE, EmbeddingStore
from synid_assets.core.filtering.incremental import strict_filter
from synid_assets.core.filtering.similarity import unit_rows

pytestmark = pytest.mark.fault

REPO = Path(__file__).resolve().parents[1]
KEYS = ["batch-00000", "batch-00001"]
UPSTREAM = "identity_attributes,identity_vectors,prompts,document_images,document_embeddings"
DOWNSTREAM = "identity_filter,live_images,live_embeddings"
BATCH_TABLES = ["identities", "attributes", "prompts", "documents", "document_faces", "filter_decisions", "live",
                "live_faces"]

# Runs `job:partition:asset,asset` steps of the code location in one process (partition/assets '-' for none);
# prints one line per step failure and exits 1 when any run failed.
DRIVER = r"""
import sys
import dagster as dg
from synid_assets.definitions import defs

instance = dg.DagsterInstance.get()
failed = False
for command in sys.argv[1:]:
    job, key, names = command.split(":")
    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance,
        partition_key=None if key == "-" else key,
        asset_selection=None if names == "-" else [dg.AssetKey(n) for n in names.split(",")],
        run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
        raise_on_error=False,
    )
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            text = data.user_failure_data.description if data.user_failure_data else data.error.message
            print(f"FAILED {key} {event.step_key}: {text}", flush=True)
    failed = failed or not result.success
instance.dispose()
sys.exit(1 if failed else 0)
"""


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "SYNID_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "SYNID_LIVE": "1",
           "SYNID_BATCH_SIZE": "4", "SYNID_SEED": "3"}
    for variable in ("SYNID_PROFILE", "SYNID_ATTRIBUTES", "SYNID_EXECUTOR"):
        env.pop(variable, None)
    return env


def _new_home(root: Path) -> Path:
    home = root / "home"
    (home / "dagster").mkdir(parents=True)
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster" / "dagster.yaml")
    return home


def _driver(*commands: str) -> list[str]:
    return [sys.executable, "-c", DRIVER, *commands]


def _dagster_batch(key: str, steps: str | None = None) -> list[str]:
    """`dagster job execute` of one batch partition on the code location's executor (all steps, or `steps`)."""
    dagster = str(Path(sys.executable).with_name("dagster"))
    command = [dagster, "job", "execute", "-m", "synid_assets.definitions", "-j", "synid_batch",
               "--tags", json.dumps({"dagster/partition": key})]
    return command + (["-o", steps] if steps else [])


@pytest.fixture
def processes() -> Iterator[Callable[..., subprocess.Popen]]:
    """Starts processes whose output goes to a log; every one still running at the end is killed."""
    started: list[subprocess.Popen] = []

    def start(command: list[str], home: Path, log_name: str) -> subprocess.Popen:
        with (home / log_name).open("w") as log:
            started.append(subprocess.Popen(command, env=_env(home), stdout=log, stderr=subprocess.STDOUT, text=True))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def _finish(process: subprocess.Popen, home: Path, log_name: str, timeout: float = 300) -> tuple[int, str]:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return process.returncode, (home / log_name).read_text()


def _wait_for(condition: Callable[[], bool], what: str, processes: list[subprocess.Popen], timeout: float = 180):
    deadline = time.monotonic() + timeout
    while not condition():
        assert all(p.poll() is None for p in processes), f"a process ended before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.5)


def _filter_retries(instance: dg.DagsterInstance, key: str) -> list[str]:
    """The messages of identity_filter steps of `key`'s runs that were put up for a retry (waits)."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": key}))
    return [
        entry.dagster_event.message or ""
        for run in runs
        for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)
        if entry.dagster_event and entry.dagster_event.step_key == "identity_filter"
    ]


def _key_order_reference(layout: DatasetLayout) -> dict[str, bool]:
    """The strict filter's decisions over both batches' document embeddings, decided in key order in one go."""
    store = EmbeddingStore(layout.lancedb_uri)
    accepted_ids: list[str] = []
    accepted_vectors: list[np.ndarray] = []
    expected: dict[str, bool] = {}
    for key in KEYS:
        threshold = float(pl.read_parquet(layout.table(key, "filter_decisions"))["threshold"][0])
        faces = pl.read_parquet(layout.table(key, "document_faces")).sort("image_id")
        embedded = store.vectors(DOCUMENT_TABLE, batch_id=key)
        by_image = dict(zip(embedded["image_id"], embedded["vector"], strict=True))
        rows = [r for r in faces.iter_rows(named=True) if r["face_detected"] and r["image_id"] in by_image]
        ids = [r["identity_id"] for r in rows]
        vectors = np.stack([by_image[r["image_id"]] for r in rows])
        prior = unit_rows(np.stack(accepted_vectors)) if accepted_vectors else None

        def search(queries: np.ndarray, prior: np.ndarray | None = prior) -> list[tuple[str | None, float | None]]:
            if prior is None:
                return [(None, None)] * len(queries)
            sims = queries @ prior.T
            return [(accepted_ids[int(np.argmax(s))], float(np.max(s))) for s in sims]

        for decision, vector in zip(strict_filter(ids, vectors, threshold, search), vectors, strict=True):
            expected[decision.identity_id] = decision.accepted
            if decision.accepted:
                accepted_ids.append(decision.identity_id)
                accepted_vectors.append(vector)
    return expected


def _check_nothing_lost(layout: DatasetLayout) -> None:
    """Every batch has every table, and LanceDB holds exactly the rows its Parquet files promise."""
    store = EmbeddingStore(layout.lancedb_uri)
    for key in KEYS:
        for table in BATCH_TABLES:
            assert layout.table(key, table).exists(), f"{key}: {table}.parquet is missing"
        for faces, table in (("document_faces", DOCUMENT_TABLE), ("live_faces", LIVE_TABLE)):
            detected = pl.read_parquet(layout.table(key, faces)).filter(pl.col("face_detected"))["image_id"]
            assert sorted(store.vectors(table, batch_id=key)["image_id"]) == sorted(detected.to_list()), (key, table)
        decisions = pl.read_parquet(layout.table(key, "filter_decisions"))
        accepted = decisions.filter(pl.col("accepted"))["identity_id"].to_list()
        assert sorted(store.vectors(ACCEPTED_TABLE, batch_id=key)["identity_id"]) == sorted(accepted)
    recorded = {
        r["identity_id"]: r["accepted"]
        for key in KEYS
        for r in pl.read_parquet(layout.table(key, "filter_decisions")).iter_rows(named=True)
    }
    assert recorded == _key_order_reference(layout)
    assert not [p for p in layout.home.rglob("*") if p.name.endswith(".tmp")], "a temp file was left"


def _hold_gpu_slot(instance: dg.DagsterInstance, owner_pid: int) -> str:
    """A STARTED run of a live process holding the one `gpu` slot, as a run in another process would."""
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="slot_holder", run_id=run_id, status=DagsterRunStatus.STARTED,
                                   tags=RunOwner.of_process(owner_pid).tags()))
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default("gpu")
    assert storage.claim_concurrency_slot("gpu", run_id, "hold").is_claimed
    return run_id


def test_concurrent_lancedb_writers_lose_no_row(tmp_path: Path) -> None:
    """Four processes replace their batch's rows, five times each, in tables whose first fragment they share."""
    writer = r"""
import sys
import numpy as np
from synid_assets.core.dataset.vectorstore import EmbeddingStore
store, batch = EmbeddingStore(sys.argv[1]), sys.argv[2]
for round in range(5):
    rows = [{"identity_id": f"{batch}-{i}", "image_id": f"{batch}-{i}-doc", "batch_id": batch, "model_id": "m",
             "vector": np.full(8, round + i, np.float32)} for i in range(5)]
    for table in ("document_embeddings", "accepted_identities"):
        store.replace_batch(table, batch, rows, 8)
"""
    uri = tmp_path / "lancedb"
    store = EmbeddingStore(uri)
    batches = [f"b{i}" for i in range(4)]
    seed_rows = [{"identity_id": f"{b}-{i}", "image_id": f"{b}-{i}-doc", "batch_id": b, "model_id": "m",
                  "vector": np.zeros(8, np.float32)} for b in batches for i in range(5)]
    for table in ("document_embeddings", "accepted_identities"):
        store.replace_batch(table, "seed", seed_rows, 8)  # one fragment holding every batch's rows
    workers = [subprocess.Popen([sys.executable, "-c", writer, str(uri), b], stderr=subprocess.PIPE, text=True)
               for b in batches]
    try:
        errors = [w.communicate(timeout=240)[1] for w in workers]
    finally:
        for w in workers:
            w.kill() if w.poll() is None else None
    assert [w.returncode for w in workers] == [0] * 4, errors
    for table in ("document_embeddings", "accepted_identities"):
        rows = EmbeddingStore(uri).vectors(table)
        got = sorted(zip(rows["batch_id"], rows["image_id"], rows["vector"][:, 0].tolist(), strict=True))
        assert got == sorted((b, f"{b}-{i}-doc", float(4 + i)) for b in batches for i in range(5)), table


def test_later_batch_waits_for_an_earlier_batch_in_progress_and_is_refused_when_none(
    tmp_path: Path, processes, instance_at
) -> None:
    home = _new_home(tmp_path)
    layout = DatasetLayout(home)
    instance = instance_at(home)
    instance.add_dynamic_partitions("identity_batches", KEYS)
    # batch-00001 is embedded, batch-00000 is a partition nobody makes yet: its filter is refused, at once.
    setup = processes(_driver("attribute_spec_job:-:-", f"synid_batch:{KEYS[1]}:{UPSTREAM}",
                              f"synid_batch:{KEYS[1]}:identity_filter"), home, "setup.log")
    rc, log = _finish(setup, home, "setup.log")
    assert rc == 1 and "identity_filter" in log, log
    refusal = next(line for line in log.splitlines() if line.startswith("FAILED"))
    assert "batch-00000" in refusal and "key order" in refusal and "FAILED batch-00001 identity_filter" in refusal
    assert not layout.table(KEYS[1], "filter_decisions").exists()

    # Now batch-00000 is being made by `dagster job execute` (held up at its first GPU step by a slot another
    # process holds): batch-00001's filter, run by another `dagster job execute`, waits for its decisions.
    sleeper = processes([sys.executable, "-c", "import time; time.sleep(600)"], home, "sleeper.log")
    holder = _hold_gpu_slot(instance, sleeper.pid)
    first = processes(_dagster_batch(KEYS[0], f"{UPSTREAM},{DOWNSTREAM}"), home, "first.log")
    _wait_for(lambda: layout.table(KEYS[0], "prompts").exists(), "prompts of batch-00000", [first])
    second = processes(_dagster_batch(KEYS[1], DOWNSTREAM), home, "second.log")
    _wait_for(lambda: bool(_filter_retries(instance, KEYS[1])), "wait of batch-00001's filter", [first, second])
    assert not layout.table(KEYS[0], "filter_decisions").exists()
    assert not layout.table(KEYS[1], "filter_decisions").exists()
    instance.event_log_storage.free_concurrency_slots_for_run(holder)
    instance.delete_run(holder)

    (rc_first, log_first), (rc_second, log_second) = _finish(first, home, "first.log"), _finish(
        second, home, "second.log")
    assert (rc_first, rc_second) == (0, 0), log_first[-3000:] + log_second
    waits = _filter_retries(instance, KEYS[1])
    assert waits, "batch-00001's filter never waited"
    decided = [layout.table(key, "filter_decisions").stat().st_mtime_ns for key in KEYS]
    assert decided[0] < decided[1], "batch-00001 was decided before batch-00000"
    logs = [e.user_message for r in instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": KEYS[1]}))
            for e in instance.all_logs(r.run_id)]
    assert any("waits for the filter decisions of ['batch-00000']" in m for m in logs)
    _check_nothing_lost(layout)


@pytest.mark.slow
def test_two_batches_in_parallel_processes_lose_nothing(tmp_path: Path, processes, instance_at) -> None:
    """Two whole batches by two `dagster job execute` processes started together."""
    home = _new_home(tmp_path)
    layout = DatasetLayout(home)
    instance = instance_at(home)
    rc, log = _finish(processes(_driver("attribute_spec_job:-:-"), home, "spec.log"), home, "spec.log")
    assert rc == 0, log
    instance.add_dynamic_partitions("identity_batches", KEYS)
    runs = [processes(_dagster_batch(key), home, f"{key}.log") for key in reversed(KEYS)]  # the later one first
    results = [_finish(run, home, f"{key}.log") for run, key in zip(runs, reversed(KEYS), strict=True)]
    assert [rc for rc, _ in results] == [0, 0], "\n".join(log[-3000:] for _, log in results)
    decided = [layout.table(key, "filter_decisions").stat().st_mtime_ns for key in KEYS]
    assert decided[0] < decided[1]
    _check_nothing_lost(layout)
