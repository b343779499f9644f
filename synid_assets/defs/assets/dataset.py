"""The dataset asset: $SYNID_HOME/manifest.duckdb, rebuilt from every batch's outputs."""

import dagster as dg

from synid_assets.core.batch.dataset import build_dataset_manifest
from synid_assets.defs.assets.common import ALL_BATCH_RECORDS, EAGER, GROUP, synced_home
from synid_assets.defs.assets.embeddings import document_embeddings, live_embeddings
from synid_assets.defs.assets.filter import identity_filter
from synid_assets.defs.assets.generation import document_images, live_images, prompts
from synid_assets.defs.assets.spec import identity_attributes
from synid_assets.defs.assets.vectors import identity_vectors
from synid_assets.defs.resources import DatasetResource

BATCH_ASSETS = [
    identity_attributes,
    identity_vectors,
    prompts,
    document_images,
    document_embeddings,
    identity_filter,
    live_images,
    live_embeddings,
]


@dg.asset(
    group_name=GROUP,
    kinds={"duckdb"},
    deps=BATCH_ASSETS,
    code_version="1",
    pool="duckdb",  # DuckDB has one writer, and this is the only asset that writes it
    automation_condition=EAGER,
    description="Rebuilds $SYNID_HOME/manifest.duckdb from every batch's outputs.",
)
def dataset_manifest(context: dg.AssetExecutionContext, dataset: DatasetResource) -> dg.MaterializeResult:
    # Built from every batch's Parquet files, then uploaded as one object.
    with synced_home(dataset, ALL_BATCH_RECORDS, ["manifest.duckdb"]) as layout:
        built = build_dataset_manifest(layout, dataset.seed, dataset.home if dataset.remote() else None)
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, dtype, description=doc or None) for name, dtype, doc in built["identity_columns"]]
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/uri": f"{dataset.home.rstrip('/')}/{layout.manifest_path.name}"
            if dataset.remote()
            else str(layout.manifest_path),
            "dagster/row_count": built["counts"]["identities"],
            "dagster/column_schema": schema,
            "table_rows": dg.MetadataValue.json(built["counts"]),
            "identity_status": dg.MetadataValue.json(built["status"]),
            "query": dg.MetadataValue.text("synid query \"SELECT status, count(*) FROM identities GROUP BY 1\""),
        }
    )
