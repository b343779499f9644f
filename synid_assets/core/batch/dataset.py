"""The dataset step: rebuild the DuckDB manifest from every batch's files, and say what it holds."""

from __future__ import annotations

from typing import Any

from synid_assets.core.dataset.layout import DatasetLayout
from synid_assets.core.dataset.manifest import build_manifest
from synid_assets.core.dataset.schemas import MANIFEST_IDENTITIES


def build_dataset_manifest(layout: DatasetLayout, dataset_seed: int) -> dict[str, Any]:
    """Rebuild manifest.duckdb; returns its row counts per table, identities per status and the identity columns."""
    import duckdb

    counts = build_manifest(layout, {"dataset_seed": str(dataset_seed)})
    with duckdb.connect(str(layout.manifest_path), read_only=True) as con:
        status = dict(con.execute("SELECT status, count(*) FROM identities GROUP BY 1 ORDER BY 1").fetchall())
    return {
        "counts": counts,
        "status": status,
        "identity_columns": [(c.name, c.duckdb, c.doc) for c in MANIFEST_IDENTITIES.columns],
    }
