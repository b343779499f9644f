"""What every export format shares: where it goes, the refusal of a foreign dir, the atomic swap, the record.

An export is built in a temp dir beside its target and renamed into place, so a killed export never leaves half
a dataset where a trainer would read it. A target that already holds files is replaced only when it is an
earlier SynID export of the same format (its `synid_export.json` says so); anything else is refused.
Each export is recorded in $SYNID_HOME/exports.duckdb (table `exports`), which only this module writes: the
manifest asset alone writes manifest.duckdb.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from synid_assets.core.dataset.layout import DatasetLayout, atomic_write_bytes
from synid_assets.core.export.samples import ExportError

MARKER = "synid_export.json"
IDENTITIES_FILE = "identities.csv"
EXPORTS_DB = "exports.duckdb"


def default_export_dir(layout: DatasetLayout, export_format: str, crop: str = "aligned") -> Path:
    """$SYNID_HOME/exports/<format> for aligned crops, exports/<format>-full for full images."""
    return layout.home / "exports" / (export_format if crop == "aligned" else f"{export_format}-{crop}")


def exports_db_path(layout: DatasetLayout) -> Path:
    return layout.home / EXPORTS_DB


def read_marker(directory: Path) -> dict | None:
    """The marker of an earlier SynID export in `directory`, or None when there is none (or it is unreadable)."""
    try:
        marker = json.loads((directory / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def check_target(out: Path, export_format: str) -> None:
    """Refuse a target that is a file, or a non-empty dir that is not an earlier export of this format."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a directory; choose a new or empty directory for the export")
    if not out.exists() or not any(out.iterdir()):
        return
    marker = read_marker(out)
    if marker is None:
        raise ExportError(
            f"{out}: not empty and not a SynID export (no {MARKER}); refusing to overwrite it: choose a new or "
            "empty directory"
        )
    if marker.get("format") != export_format:
        raise ExportError(
            f"{out}: holds a SynID {marker.get('format')!r} export, not {export_format!r}; refusing to overwrite "
            "it: choose another directory"
        )


@contextlib.contextmanager
def staging_dir(out: Path) -> Iterator[Path]:
    """A temp dir beside `out` (same filesystem, so the final rename is atomic); removed if the build fails."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone after publish; a failed build's leftovers go here


def publish(staging: Path, out: Path) -> None:
    """Move a finished export into place: one rename onto a new or empty target; with an earlier export there,
    the old one is renamed aside first and removed after the new one is in place."""
    _fsync_tree(staging)
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; the export gets the user's usual permissions
    if out.exists() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.rename(staging, out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
    old.rmdir()
    os.rename(out, old)
    try:
        os.rename(staging, out)
    except BaseException:
        os.rename(old, out)  # put the earlier export back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    """Flush every file to disk before the rename makes the export visible."""
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_marker(directory: Path, summary: dict) -> None:
    atomic_write_bytes(directory / MARKER, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())


def record_export(layout: DatasetLayout, export_format: str, out: Path, crop: str, images: int,
                  identities: int) -> None:
    """Replace the row of `out` in $SYNID_HOME/exports.duckdb (table `exports`) with this export's."""
    import duckdb

    from synid_assets.core.dataset.schemas import EXPORTS

    path = exports_db_path(layout)
    path.parent.mkdir(parents=True, exist_ok=True)
    created = datetime.now(timezone.utc).replace(tzinfo=None)
    for attempt in range(20):
        try:
            con = duckdb.connect(str(path))
            break
        except duckdb.IOException:  # another process (`synid query`, another export) has it open: wait
            if attempt == 19:
                raise
            time.sleep(0.5)
    try:
        con.execute(EXPORTS.create_sql().replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1))
        con.execute(f"COMMENT ON TABLE {EXPORTS.name} IS '{_sql_text(EXPORTS.doc)}'")
        for column in EXPORTS.columns:
            con.execute(f"COMMENT ON COLUMN {EXPORTS.name}.{column.name} IS '{_sql_text(column.doc)}'")
        con.execute(f"DELETE FROM {EXPORTS.name} WHERE path = ?", [str(out)])
        row = {"format": export_format, "path": str(out), "crop": crop, "images": images, "identities": identities,
               "created": created}
        con.execute(
            f"INSERT INTO {EXPORTS.name} VALUES ({', '.join('?' for _ in EXPORTS.columns)})",
            [row[name] for name in EXPORTS.names],
        )
    finally:
        con.close()


def _sql_text(text: str) -> str:
    return text.replace("'", "''")
