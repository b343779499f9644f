"""Dataset exports in the formats face-recognition trainers read: one module per format, plus what they share.

`export_dataset` reads the accepted set from the manifest (samples.py), has the format's writer build it in a temp
dir beside the target, writes `identities.csv` (label -> identity_id) and the `synid_export.json` marker, swaps it
into place and records it in $SYNID_HOME/exports.duckdb (common.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synid_assets.core.dataset.layout import DatasetLayout, atomic_write_bytes
from synid_assets.core.export.common import (
    IDENTITIES_FILE,
    check_target,
    default_export_dir,
    publish,
    record_export,
    staging_dir,
    write_marker,
)
from synid_assets.core.export.imagefolder import write_imagefolder
from synid_assets.core.export.lmdb_db import write_lmdb
from synid_assets.core.export.parquet_table import write_parquet_files
from synid_assets.core.export.recordio import write_recordio
from synid_assets.core.export.samples import CROPS, ExportError, identities_csv, plan_export
from synid_assets.core.export.webdataset_tar import write_webdataset

WRITERS: dict[str, Callable[[DatasetLayout, Any, Path], dict[str, Any]]] = {
    "imagefolder": write_imagefolder,
    "recordio": write_recordio,
    "lmdb": write_lmdb,
    "webdataset": write_webdataset,
    "parquet": write_parquet_files,
}
FORMATS = tuple(WRITERS)
MARKER_VERSION = 1


@dataclass(frozen=True)
class ExportResult:
    format: str
    path: Path
    crop: str
    images: int
    identities: int
    details: dict[str, Any] = field(default_factory=dict)


def check_format(export_format: str) -> str:
    if export_format not in WRITERS:
        raise ExportError(f"unknown export format {export_format!r}; choose one of {', '.join(FORMATS)}")
    return export_format


def export_dataset(
    layout: DatasetLayout,
    export_format: str,
    out: str | Path | None = None,
    crop: str = "aligned",
    include_incomplete: bool = False,
) -> ExportResult:
    """Export the accepted set in one format into `out` (default $SYNID_HOME/exports/<format>[-full])."""
    check_format(export_format)
    if crop not in CROPS:
        raise ExportError(f"unknown crop {crop!r}; choose one of {', '.join(CROPS)}")
    target = Path(out).resolve() if out is not None else default_export_dir(layout, export_format, crop)
    if target == layout.home or layout.home.is_relative_to(target):
        raise ExportError(f"{target}: an export cannot replace SYNID_HOME or a dir above it; choose another dir")
    check_target(target, export_format)
    plan = plan_export(layout, crop, include_incomplete)
    if not plan.samples:
        raise ExportError(f"{layout.manifest_path}: the accepted set is empty; nothing to export")
    summary = {
        "format": export_format,
        "crop": crop,
        "images": len(plan.samples),
        "identities": len(plan.identities),
        "include_incomplete": include_incomplete,
        "labels": f"0..{len(plan.identities) - 1} in identity order; {IDENTITIES_FILE} names each",
        "synid_export_version": MARKER_VERSION,
    }
    with staging_dir(target) as staging:
        details = WRITERS[export_format](layout, plan, staging)
        atomic_write_bytes(staging / IDENTITIES_FILE, identities_csv(plan))
        write_marker(staging, {**summary, **details})
        check_target(target, export_format)  # again: another process may have written there meanwhile
        publish(staging, target)
    record_export(layout, export_format, target, crop, len(plan.samples), len(plan.identities))
    return ExportResult(export_format, target, crop, len(plan.samples), len(plan.identities), details)


__all__ = ["CROPS", "FORMATS", "ExportError", "ExportResult", "check_format", "default_export_dir", "export_dataset"]
