"""The identity filter asset: each batch's identities accepted or rejected against every earlier acceptance."""

from typing import Any

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

# A batch whose earlier batches are still being made (their runs queued or running, in any process) waits for
# their decisions: the step is retried every FILTER_WAIT_SECONDS, its pool slot free meanwhile, up to
# FILTER_WAIT_RETRIES times; a batch whose earlier batches nobody is making is refused at once.
FILTER_WAIT_SECONDS = 5
FILTER_WAIT_RETRIES = 120


def decide_in_key_order(
    context: dg.AssetExecutionContext, layout: Any, key: str, store: Any, settings: FilterSettings
) -> dict[str, Any]:
    """filter_batch, after every earlier partition of the instance is decided: waits for those in progress."""
    from synid_assets.core.batch.filter import FilterOrderError

    known = context.instance.get_dynamic_partitions(identity_batches.name)
    try:
        return filter_batch(layout, key, store, settings, known_batches=known)
    except FilterOrderError as exc:
        busy = batches_in_progress(context, exc.undecided)
        if not busy:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        if context.retry_number >= FILTER_WAIT_RETRIES:
            waited = f"{exc} (waited {FILTER_WAIT_RETRIES * FILTER_WAIT_SECONDS} s for the runs of {busy})"
            raise dg.Failure(description=waited, allow_retries=False) from None
        context.log.info(
            f"identity_filter for {key} waits for the filter decisions of {busy}, whose runs are in progress "
            f"(the filter decides batches in key order); next check in {FILTER_WAIT_SECONDS} s"
        )
        raise dg.RetryRequested(max_retries=FILTER_WAIT_RETRIES, seconds_to_wait=FILTER_WAIT_SECONDS) from None


def batches_in_progress(context: dg.AssetExecutionContext, keys: list[str]) -> list[str]:
    """Those of `keys` with a queued or running run other than this one (runs of dead processes failed first)."""
    from synid_assets.defs.runs import UNFINISHED_STATUSES, recover_dead_runs

    if not keys:
        return []
    recover_dead_runs(context.instance)
    statuses = [*UNFINISHED_STATUSES, dg.DagsterRunStatus.QUEUED]
    busy = []
    for key in keys:
        runs = context.instance.get_runs(filters=dg.RunsFilter(statuses=statuses, tags={"dagster/partition": key}))
        if any(run.run_id != context.run_id for run in runs):
            busy.append(key)
    return busy


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
            summary = decide_in_key_order(context, layout, key, lancedb.store(), settings)
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
