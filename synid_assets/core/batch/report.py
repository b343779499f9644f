"""The report step: the dataset quality report over the manifest and the embeddings (core/quality/report.py)."""

from __future__ import annotations

from typing import Any

from synid_assets.core.batch.common import MissingStepError
from synid_assets.core.batch.spec import load_current_spec
from synid_assets.core.dataset.layout import DatasetLayout
from synid_assets.core.dataset.vectorstore import EmbeddingStore
from synid_assets.core.quality.report import build_quality_report


def write_quality_report(
    layout: DatasetLayout,
    store: EmbeddingStore,
    model_id: str,
    threshold: float,
    threshold_fmr: float,
    dataset_seed: int,
) -> dict[str, Any]:
    """Write reports/quality.html, its plots and quality.duckdb for the current spec; returns the summary."""
    spec = load_current_spec(layout)
    if not layout.manifest_path.exists():
        raise MissingStepError(f"{layout.manifest_path} does not exist; materialize dataset_manifest first")
    return build_quality_report(layout, store, model_id, threshold, threshold_fmr, spec, dataset_seed)
