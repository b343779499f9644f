"""The SynID asset graph: attribute spec -> per-batch identities ... live embeddings -> DuckDB manifest -> report.

One module per domain (spec, generation, embeddings, filter, dataset, report), each calling the same-named
module of synid_assets.core.batch. Assets pass files, not bytes: each writes Parquet tables and PNGs under
SYNID_HOME and returns a MaterializeResult with counts and small previews. Upstream assets of another module
are named by key, so the modules do not import each other (dataset.py, which lists the batch assets, aside).
"""

from synid_assets.defs.assets.dataset import BATCH_ASSETS, dataset_manifest
from synid_assets.defs.assets.export import dataset_export
from synid_assets.defs.assets.report import quality_report
from synid_assets.defs.assets.spec import attribute_spec, attribute_spec_valid
from synid_assets.defs.assets.training import fr_evaluation, fr_model

ALL_ASSETS = [attribute_spec, *BATCH_ASSETS, dataset_manifest, dataset_export, quality_report]
ALL_ASSETS += [fr_model, fr_evaluation]
ALL_CHECKS = [attribute_spec_valid]

__all__ = ["ALL_ASSETS", "ALL_CHECKS", "BATCH_ASSETS", "attribute_spec", "dataset_manifest", "quality_report"]
