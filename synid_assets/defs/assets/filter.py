"""The identity filter asset: each batch's identities accepted or rejected against every earlier acceptance."""

import dagster as dg

from synid_assets.core.batch.filter import FilterSettings, filter_batch
from synid_assets.defs.assets.common import (
    EAGER,
    FILTER_STATE,
    GROUP,
    batch_files,
    batch_records,
    clear_errors,
    synced_home,
)
from synid_assets.defs.partitions import identity_batches
from synid_assets.defs.resources import DatasetResource, FaceAnalyzerResource, LanceDBResource


class IdentityFilterConfig(dg.Config):
    """Run config of the identity filter; unset fields take the profile's `filter` section."""

    mode: str | None = None  # 'strict' (order-stable, no accepted pair above the threshold) or 'fmr'
    target_fmr: float | None = None  # 'fmr' mode: the dataset false match rate to reach


@dg.asset(
    group_name=GROUP,
    kinds={"python", "lancedb"},
    partitions_def=identity_batches,
    deps=["document_embeddings"],
    code_version="1",
    pool="identity_filter",  # decisions depend on every earlier acceptance: one batch at a time
    automation_condition=EAGER,
    description="Order-stable incremental filter (strict, or FLUXSynID's dataset-FMR rule), with an optional "
    "leak check against a real-face gallery.",
)
def identity_filter(
    context: dg.AssetExecutionContext,
    config: IdentityFilterConfig,
    dataset: DatasetResource,
    face_analyzer: FaceAnalyzerResource,
    lancedb: LanceDBResource,
) -> dg.MaterializeResult:
    from synid_assets.core.filtering.leakage import GalleryError

    threshold = face_analyzer.operating_threshold()
    settings = FilterSettings(
        model_id=face_analyzer.model_id,
        threshold=threshold.value,
        threshold_fmr=threshold.fmr,
        threshold_source=threshold.source,
        mode=config.mode or dataset.filter_mode,
        target_fmr=config.target_fmr if config.target_fmr is not None else dataset.filter_target_fmr,
        leak_gallery=dataset.leak_gallery,
    )
    try:
        key = context.partition_key
        # Every earlier batch's decisions and running state come from the shared store, not this machine's mirror.
        pull = [*FILTER_STATE, *batch_records(key)]
        with synced_home(dataset, pull, [batch_files(key)]) as layout, clear_errors():
            summary = filter_batch(layout, key, lancedb.store(), settings)
    except (GalleryError, ValueError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    return dg.MaterializeResult(
        metadata={
            **summary,
            "threshold": threshold.value,
            "threshold_fmr": threshold.fmr,
            "threshold_source": dg.MetadataValue.text(threshold.source),
            "mode": settings.mode,
            "target_fmr": settings.target_fmr,
            "leak_gallery": settings.leak_gallery or "none",
        }
    )
