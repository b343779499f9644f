"""imagefolder: `<label>/<image_id>.jpg`, the layout torchvision's `ImageFolder` reads.

ImageFolder numbers classes by sorting their dir names as strings, so labels are zero-padded to one width:
the string order is then the numeric order and ImageFolder's class index equals the SynID label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synid_assets.core.dataset.layout import DatasetLayout
from synid_assets.core.export.samples import ExportPlan, encoded_samples


def label_dir_name(label: int, classes: int) -> str:
    """The label as a dir name, zero-padded to the width of the largest label (at least 6 digits)."""
    return f"{label:0{max(6, len(str(max(classes - 1, 0))))}d}"


def write_imagefolder(layout: DatasetLayout, plan: ExportPlan, directory: Path) -> dict[str, Any]:
    classes = len(plan.identities)
    for label in range(classes):
        (directory / label_dir_name(label, classes)).mkdir()
    for sample, data, _ in encoded_samples(layout, plan):
        (directory / label_dir_name(sample.label, classes) / f"{sample.image_id}.jpg").write_bytes(data)
    return {}
