"""Shared helpers of the fault tests: `synid demo` subprocesses on a temporary SYNID_HOME, and what they left.

Each demo runs with the shipped dagster.yaml (pool limit 1) in its own DAGSTER_HOME (default $SYNID_HOME/dagster).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parents[1]
# Names of temporary files: the atomic writers' `.<name>.<random>.tmp` and `.<stem>.<random>.duckdb` (+ .wal),
# and SQLite's rollback journals.
TEMP_SUFFIXES = (".tmp", ".wal", "-journal", ".partial")


def synid_env(home: Path, dagster_home: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "SYNID_HOME": str(home), "DAGSTER_HOME": str(dagster_home or home / "dagster")}
    for variable in ("SYNID_PROFILE", "SYNID_ATTRIBUTES", "SYNID_SEED", "SYNID_BATCH_SIZE", "SYNID_LIVE",
                     "SYNID_EXECUTOR"):
        env.pop(variable, None)
    return env


def new_home(root: Path, dagster_home: Path | None = None) -> Path:
    """An empty SYNID_HOME under `root` and a DAGSTER_HOME (default inside it) with the shipped dagster.yaml."""
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    dagster_home = dagster_home or home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    return home


def run_demo(home: Path, *args: str, timeout: float = 300,
             dagster_home: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synid_assets.cli", *args], env=synid_env(home, dagster_home),
                          capture_output=True, text=True, timeout=timeout)


def start_demo(home: Path, *args: str, log: Path | None = None) -> tuple[subprocess.Popen, Path]:
    """The demo in the background, its output in `log` (default $SYNID_HOME/demo.log)."""
    log = log or home / "demo.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "synid_assets.cli", *args], env=synid_env(home),
                                   stdout=out, stderr=subprocess.STDOUT, text=True)
    return process, log


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the demo ended (rc {process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.2)


def images(home: Path) -> list[Path]:
    return sorted((home / "batches").rglob("*.png")) if (home / "batches").exists() else []


def image_hashes(home: Path) -> dict[str, str]:
    return {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest() for p in images(home)}


def temp_files(home: Path) -> list[str]:
    """Temporary files left anywhere under `home` (a writer's temp file, a DuckDB WAL, a SQLite journal)."""
    return sorted(str(p.relative_to(home)) for p in home.rglob("*")
                  if p.is_file() and (p.name.endswith(TEMP_SUFFIXES) or (p.name.startswith(".") and
                                                                          p.suffix in (".tmp", ".duckdb"))))


def manifest_rows(home: Path) -> dict[str, list[tuple]]:
    """Every table of the manifest, rows sorted; the home's own path (manifest_info.synid_home) left out."""
    import duckdb

    with duckdb.connect(str(home / "manifest.duckdb"), read_only=True) as con:
        tables = [t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        rows = {t: sorted(con.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}
    rows["manifest_info"] = [r for r in rows.get("manifest_info", []) if r[0] != "synid_home"]
    return rows


def vector_rows(home: Path) -> dict[str, list[tuple[str, str, str]]]:
    """(identity_id, image_id, batch_id) of every LanceDB row, sorted, per table: a lost or doubled row shows."""
    import lancedb

    db = lancedb.connect(str(home / "lancedb"))
    out = {}
    for name in db.list_tables().tables:
        frame = db.open_table(name).to_arrow().select(["identity_id", "image_id", "batch_id"]).to_pylist()
        out[name] = sorted((r["identity_id"], r["image_id"], r["batch_id"]) for r in frame)
    return out


@contextmanager
def open_instance(dagster_home: Path) -> Iterator[dg.DagsterInstance]:
    # Not the instance's own `with`: DagsterInstance.__exit__ leaves its defs-state context var set (dagster 1.13).
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        yield instance
    finally:
        instance.dispose()


def held_slots(instance: dg.DagsterInstance) -> dict[str, list[str]]:
    storage = instance.event_log_storage
    held = {}
    for pool in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(pool)
        held[pool] = sorted({s.run_id for s in info.claimed_slots} | {s.run_id for s in info.pending_steps})
    return {pool: runs for pool, runs in held.items() if runs}


def runs_of(instance: dg.DagsterInstance, job_name: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(job_name=job_name)))
