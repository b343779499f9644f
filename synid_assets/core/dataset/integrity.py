"""Generated files checked against the sha256 recorded when they were made, before anything reads them.

A generated image (document, live, aligned crop) records the sha256 of its bytes when it is written. Every
reader of such a file reads its bytes once, checks them against that digest, and decodes those very bytes, so
a file changed on disk afterwards (a bad disk, a stray edit, a half copy) is never embedded, filtered or
exported: the reader gets an `IntegrityError` naming the file, the recorded and the actual sha256. The
generation step notices the same mismatch on the next run and makes the image again from its recorded
request (see core/batch/generation.py).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from synid_assets.core.analysis.images import ImageReadError

if TYPE_CHECKING:
    import numpy as np

    from synid_assets.core.dataset.layout import DatasetLayout

# Prefix of the `error` recorded in a faces table for an image that was not analysed because it is corrupted.
CORRUPTED_PREFIX = "corrupted:"
MISSING = "missing"  # the `actual` digest of a file that is not there


class IntegrityError(ImageReadError):
    """A generated image's bytes differ from the sha256 recorded when it was made (or the file is gone).

    An ImageReadError: wherever an unreadable image stops a step or a command with one line, so does this.
    """

    def __init__(self, path: str | Path, expected: str, actual: str) -> None:
        self.path, self.expected, self.actual = str(path), expected, actual
        found = "the file is missing" if actual == MISSING else f"its sha256 is now {actual}"
        super().__init__(
            f"{path}: corrupted: recorded sha256 {expected}, but {found}; the file changed after it was made, "
            "so it is not used: rerun the batch to regenerate it"
        )

    def as_record(self) -> dict[str, str]:
        """What the steps report: the file, the recorded and the actual sha256."""
        return {"path": self.path, "expected_sha256": self.expected, "actual_sha256": self.actual}


class VerifiedBytes(io.BytesIO):
    """A file's checked bytes, readable as the file would be; shown as the file's path in messages."""

    def __init__(self, data: bytes, path: str | Path) -> None:
        super().__init__(data)
        self.name = str(path)

    def __str__(self) -> str:
        return self.name


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_verified(path: str | Path, expected_sha256: str) -> bytes:
    """The bytes of `path`, once they match `expected_sha256`; IntegrityError when they do not."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise IntegrityError(path, expected_sha256, MISSING) from None
    actual = sha256_bytes(data)
    if actual != expected_sha256:
        raise IntegrityError(path, expected_sha256, actual)
    return data


def open_verified(path: str | Path, expected_sha256: str | None) -> VerifiedBytes | Path:
    """What to hand an image reader: the checked bytes, or the path itself when no digest was recorded."""
    if not expected_sha256:
        return Path(path)
    return VerifiedBytes(read_verified(path, expected_sha256), path)


def load_verified_rgb(path: str | Path, expected_sha256: str | None) -> np.ndarray:
    """An image as upright RGB uint8 HxWx3, decoded from bytes checked against their recorded sha256.

    A mismatch raises IntegrityError; an unreadable image ImageReadError, both naming the file.
    """
    from synid_assets.core.analysis.images import load_rgb

    return load_rgb(open_verified(path, expected_sha256))


def corrupted_error(error: IntegrityError) -> str:
    """The `error` text a faces table records for an image left out because it is corrupted."""
    return f"{CORRUPTED_PREFIX} {error}"


def is_corrupted_error(text: str | None) -> bool:
    return bool(text) and str(text).startswith(CORRUPTED_PREFIX)


# ---------------------------------------------------------------- digests of derived files


def write_digests(path: Path, digests: Mapping[str, str]) -> None:
    """Record {file relative to SYNID_HOME: sha256} of files a step derived (its aligned crops), atomically."""
    from synid_assets.core.dataset.layout import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(dict(sorted(digests.items())), indent=0).encode())


def read_digests(paths: list[Path]) -> dict[str, str]:
    """The recorded digests of every given digest file that exists (later files win on a clash)."""
    digests: dict[str, str] = {}
    for path in paths:
        try:
            loaded = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable digest record ({exc}); re-materialize its embeddings step") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: not a digest record; re-materialize its embeddings step")
        digests.update({str(k): str(v) for k, v in loaded.items()})
    return digests


def crop_digests_path(layout: DatasetLayout, batch_id: str, kind: str) -> Path:
    """Where a batch's embeddings step records {aligned crop path: sha256} of its `kind` ('document', 'live')."""
    return layout.batch_dir(batch_id) / f"aligned_{kind}_sha256.json"


def all_crop_digests(layout: DatasetLayout) -> dict[str, str]:
    """{aligned crop path: sha256} of every batch's crops (batches made before digests were recorded: none)."""
    return read_digests(sorted(layout.batches_dir.glob("*/aligned_*_sha256.json")))
