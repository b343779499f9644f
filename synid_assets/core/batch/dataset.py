"""The dataset step: rebuild the DuckDB manifest from every batch's files, and say what it holds."""

from __future__ import annotations

from typing import Any

from synid_assets.core.dataset.layout import DatasetLayout
from synid_assets.core.dataset.manifest import build_manifest
from synid_assets.core.dataset.schemas import MANIFEST_IDENTITIES


def build_dataset_manifest(layout: DatasetLayout, dataset_seed: int, home: str | None = None) -> dict[str, Any]:
    """Rebuild manifest.duckdb; returns its row counts per table, identities per status and the identity columns.

    `home` is the dataset's SYNID_HOME as users name it (an s3:// URL when `layout` is its local mirror)."""
    import duckdb

    info = {"dataset_seed": str(dataset_seed), **({"synid_home": home} if home else {})}
    counts = build_manifest(layout, info)
    with duckdb.connect(str(layout.manifest_path), read_only=True) as con:
        status = dict(con.execute("SELECT status, count(*) FROM identities GROUP BY 1 ORDER BY 1").fetchall())
    return {
        "counts": counts,
        "status": status,
        "identity_columns": [(c.name, c.duckdb, c.doc) for c in MANIFEST_IDENTITIES.columns],
    }
