"""The export asset: the accepted set in the formats face-recognition trainers read ($SYNID_HOME/exports/...)."""

import dagster as dg

from synid_assets.defs.assets.common import GROUP, clear_errors, synced_home
from synid_assets.defs.resources import DatasetResource


class ExportConfig(dg.Config):
    """Run config; each field left unset takes the profile's `export:` section (dataset resource)."""

    formats: list[str] | None = None  # imagefolder, recordio, lmdb, webdataset, parquet
    crop: str | None = None  # 'aligned' (112x112 ArcFace crops) or 'full'
    out_dir: str | None = None  # each format goes to <out_dir>/<format>[-full]; default $SYNID_HOME/exports
    include_incomplete: bool = False  # also identities with too few good live images


@dg.asset(
    group_name=GROUP,
    kinds={"parquet", "lmdb"},
    deps=["dataset_manifest"],
    code_version="1",
    # No automation condition: an export is a hand-over, made when asked for (UI, `dagster asset materialize`,
    # or `synid export`), not after every batch.
    description="Exports the accepted set (dataset_images) as imagefolder / recordio / lmdb / webdataset / parquet "
    "into $SYNID_HOME/exports/<format>, labels 0..C-1 in identity order; recorded in exports.duckdb.",
)
def dataset_export(
    context: dg.AssetExecutionContext, config: ExportConfig, dataset: DatasetResource
) -> dg.MaterializeResult:
    from pathlib import Path

    from synid_assets.core.export import ExportError, check_format, default_export_dir, export_dataset

    formats = config.formats or dataset.export_formats
    crop = config.crop or dataset.export_crop
    if not formats:
        raise dg.Failure(description="dataset_export: no export formats chosen (run config `formats`, or the "
                         "profile's export.formats)", allow_retries=False)
    results = []
    try:
        for export_format in formats:
            check_format(export_format)
        # An export reads every accepted image; it and exports.duckdb are pushed (an out_dir outside the home stays).
        pull = ["manifest.duckdb", "exports.duckdb", "batches"]
        with synced_home(dataset, pull, ["exports", "exports.duckdb"]) as layout, clear_errors():
            for export_format in formats:
                out = default_export_dir(layout, export_format, crop)
                if config.out_dir:
                    out = Path(config.out_dir) / out.name
                result = export_dataset(layout, export_format, out, crop, config.include_incomplete)
                context.log.info(f"{export_format}: {result.images} images of {result.identities} identities")
                results.append(result)
    except ExportError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    return dg.MaterializeResult(
        metadata={
            "dagster/uri": str(results[0].path.parent),
            "images": results[0].images,
            "identities": results[0].identities,
            "crop": crop,
            "exports": dg.MetadataValue.json({r.format: {"path": str(r.path), **r.details} for r in results}),
            "query": dg.MetadataValue.text('synid query "SELECT * FROM exports.exports"'),
        }
    )
