"""Where a dataset's files live under SYNID_HOME, and atomic writes so a killed run never leaves half a file."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import polars as pl
    from PIL import Image

_UMASK = os.umask(0)
os.umask(_UMASK)

_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def is_remote_home(home: str | Path) -> bool:
    """An object-store home (`s3://bucket/prefix`): its files are mirrored locally (dataset/remote_home.py)."""
    return isinstance(home, str) and home.startswith("s3://")


def default_home() -> Path | str:
    """SYNID_HOME, or ./data in the current directory; an `s3://bucket/prefix` URL is returned as it is."""
    home = os.environ.get("SYNID_HOME") or "data"
    return home if is_remote_home(home) else Path(home).resolve()


def check_key(key: str, what: str = "batch key") -> str:
    """Batch keys and ids become path components: refuse anything that could escape a directory."""
    if not _SAFE_KEY.match(key) or ".." in key:
        raise ValueError(f"invalid {what} {key!r}: use letters, digits, '-', '_' and '.' only")
    return key


class DatasetLayout:
    """Paths of one dataset. Batch outputs are Parquet and PNG files; only the manifest asset writes DuckDB."""

    def __init__(self, home: str | Path) -> None:
        if is_remote_home(home):  # a Path would silently turn the URL into a local directory named 's3:'
            raise ValueError(
                f"SYNID_HOME {home} is an object-store URL: this needs a local dataset directory (the Dagster "
                "assets, `synid demo` and `synid query` use its local mirror, dataset/remote_home.py)"
            )
        self.home = Path(home).resolve()

    @property
    def manifest_path(self) -> Path:
        return self.home / "manifest.duckdb"

    @property
    def lancedb_uri(self) -> Path:
        return self.home / "lancedb"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def spec_dir(self) -> Path:
        return self.home / "spec"

    def spec_snapshot_dir(self, fingerprint: str) -> Path:
        return self.spec_dir / "snapshots" / check_key(fingerprint[:16], "spec fingerprint")

    @property
    def current_spec_file(self) -> Path:
        return self.spec_dir / "current.json"

    @property
    def batches_dir(self) -> Path:
        return self.home / "batches"

    def batch_dir(self, batch_id: str) -> Path:
        return self.batches_dir / check_key(batch_id)

    def table(self, batch_id: str, name: str) -> Path:
        return self.batch_dir(batch_id) / f"{name}.parquet"

    def image_path(self, batch_id: str, kind: str, image_id: str) -> Path:
        return self.batch_dir(batch_id) / kind / f"{check_key(image_id, 'image id')}.png"

    def relative(self, path: Path) -> str:
        return Path(path).resolve().relative_to(self.home).as_posix()

    def absolute(self, relative_path: str) -> Path:
        path = (self.home / relative_path).resolve()
        if not path.is_relative_to(self.home):
            raise ValueError(f"path {relative_path!r} escapes SYNID_HOME {self.home}")
        return path


class DiskFullError(OSError):
    """A write found its filesystem full: one line naming the file and the space left, instead of a traceback."""

    @classmethod
    def writing(cls, path: Path) -> DiskFullError:
        try:
            free = f"{shutil.disk_usage(Path(path).parent).free / 2**20:.1f} MiB free"
        except OSError:
            free = "free space unknown"
        return cls(errno.ENOSPC, f"disk full: could not write {path} ({free} there); free space and rerun")

    def __str__(self) -> str:
        return str(self.strerror)


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT from Python, or a library's I/O error that says so (DuckDB, Arrow)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc)


@contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """A binary handle on a temp file beside `path`; on a clean exit it is fsynced and renamed over `path`.

    A kill or an exception leaves the target as it was (the temp file is removed on an exception).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the user's usual permissions
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        full = DiskFullError.writing(path) if is_disk_full(exc) and not isinstance(exc, DiskFullError) else None
        Path(tmp).unlink(missing_ok=True)
        if full is not None:
            raise full from exc
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over the target."""
    with atomic_writer(path) as handle:
        handle.write(data)


@contextmanager
def atomic_duckdb(path: Path) -> Iterator[Path]:
    """A fresh temp path beside `path` for a DuckDB database to be built in; renamed over `path` on a clean exit.

    Readers never see a half-built database, and a failed build leaves no temp file or WAL behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".duckdb")
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # DuckDB must create the file itself
    try:
        yield tmp
        os.replace(tmp, path)
    except Exception as exc:
        if is_disk_full(exc) and not isinstance(exc, DiskFullError):
            raise DiskFullError.writing(path) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)
        Path(str(tmp) + ".wal").unlink(missing_ok=True)


def png_bytes(image: Image.Image) -> bytes:
    """PNG encoding with fixed settings, so the same pixels always give the same bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6, optimize=False)
    return buffer.getvalue()


def save_png(image: Image.Image, path: Path) -> tuple[str, int, int]:
    """Atomically save an image; returns (sha256 of the file, width, height)."""
    data = png_bytes(image)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest(), image.width, image.height


def write_parquet(frame: pl.DataFrame, path: Path) -> None:
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd", statistics=False)
    atomic_write_bytes(path, buffer.getvalue())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
