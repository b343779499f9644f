"""Fault 4, a full disk: SYNID_HOME on a small tmpfs that fills during a batch.

The step that meets the full disk fails with one line that says so (the file, the space left), its temporary
file is gone, and once space is freed the next run completes with nothing lost or duplicated: the manifest's
rows, the LanceDB rows and every image's sha256 equal those of an uninterrupted run. The instance (DAGSTER_HOME)
stays on the normal disk, as a Postgres instance would be elsewhere: the fault is in SynID's own writers.
Needs root to mount the tmpfs; skipped with the reason where mounting is refused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from synid_assets.core.dataset.layout import DiskFullError, atomic_write_bytes, write_parquet
from tests.fault_helpers import image_hashes, manifest_rows, new_home, run_demo, temp_files, vector_rows

pytestmark = pytest.mark.fault

DEMO = ["demo", "--identities", "8", "--live", "1", "--seed", "3"]
MiB = 2**20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """mount(size_mib) -> the mount point of a fresh tmpfs of that size; every one is unmounted at the end."""
    mounted: list[Path] = []

    def mount(size_mib: int) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs for SYNID_HOME needs root")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"mounting a tmpfs was refused: {done.stderr.strip() or done.returncode}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)  # a process still in it: detach


def disk_bytes(path: Path) -> int:
    """Bytes a file or tree takes on disk (whole blocks, as a tmpfs counts pages)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_blocks * 512 for p in files)


def fill(disk: Path, leave_free: int) -> Path:
    """A filler file that leaves about `leave_free` bytes free on `disk`."""
    filler = disk / "filler"
    with filler.open("wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, shutil.disk_usage(disk).free - leave_free)
    return filler


def test_writers_say_the_disk_is_full_and_leave_no_temp_file(small_disk) -> None:
    import numpy as np
    import polars as pl

    disk = small_disk(1)
    with pytest.raises(DiskFullError) as raised:
        atomic_write_bytes(disk / "batches" / "b" / "big.png", b"\1" * (2 * MiB))
    message = str(raised.value)
    assert "disk full" in message and str(disk / "batches" / "b" / "big.png") in message and "MiB free" in message
    assert "\n" not in message and raised.value.errno == 28
    frame = pl.DataFrame({"x": np.random.default_rng(0).random(300_000)})  # 2.4 MB that zstd cannot shrink
    with pytest.raises(DiskFullError, match="disk full: could not write .*table.parquet"):
        write_parquet(frame, disk / "table.parquet")
    assert [p.name for p in disk.rglob("*") if p.is_file()] == []


def test_a_batch_that_fills_the_disk_fails_saying_so_then_completes_once_space_is_freed(
    tmp_path: Path, small_disk
) -> None:
    reference = new_home(tmp_path / "reference")
    done = run_demo(reference, *DEMO)
    assert done.returncode == 0, done.stdout + done.stderr
    batch = reference / "batches" / "batch-00000"
    # Free space for the spec and the batch's first tables, and half of its document images: the disk fills
    # while document_images writes.
    before_documents = disk_bytes(reference / "spec") + sum(disk_bytes(p) for p in batch.iterdir() if p.is_file())
    leave_free = before_documents + disk_bytes(batch / "documents") // 2

    disk = small_disk(64)
    home = new_home(disk, dagster_home=tmp_path / "dagster")
    filler = fill(disk, leave_free)
    failed = run_demo(home, *DEMO, dagster_home=tmp_path / "dagster")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    full = f"disk full: could not write {home}/batches/batch-00000/documents/"
    assert full in failed.stderr and "MiB free there); free space and rerun" in failed.stderr, failed.stderr
    assert temp_files(home) == []

    filler.unlink()  # space is freed
    rerun = run_demo(home, *DEMO, dagster_home=tmp_path / "dagster")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert manifest_rows(home) == manifest_rows(reference)
    assert vector_rows(home) == vector_rows(reference)
    hashes = image_hashes(home)
    assert hashes == image_hashes(reference) and len(hashes) > 8
    assert temp_files(home) == []

    # The demo's summary names the step and says the disk is full, in one line (not "Exceeded max_retries"):
    # a full disk does not heal by retrying.
    summary = failed.stderr.splitlines()
    step_line = summary[summary.index("batch batch-00000 failed:") + 1]
    assert step_line.startswith(f"  document_images: {full}") and step_line.endswith("free space and rerun"), (
        step_line)
