"""The embedding assets: each document and live face detected, aligned and embedded into LanceDB."""

import dagster as dg

from synid_assets.core.batch.embeddings import embed_documents, embed_live
from synid_assets.defs.assets.common import EAGER, GROUP, batch_files, clear_errors, synced_home
from synid_assets.defs.executors import GPU_OP_TAGS
from synid_assets.defs.partitions import identity_batches
from synid_assets.defs.resources import DatasetResource, FaceAnalyzerResource, LanceDBResource


def corrupted_metadata(context: dg.AssetExecutionContext, corrupted: list[dict[str, str]]) -> dict:
    """Images left out because their bytes changed since they were made: logged one by one, and counted."""
    for entry in corrupted:
        context.log.error(
            f"{entry['path']}: corrupted (recorded sha256 {entry['expected_sha256']}, now {entry['actual_sha256']}); "
            "not embedded. Rerun the batch: its generation step makes the image again."
        )
    return {"corrupted_images": len(corrupted), "corrupted_files": dg.MetadataValue.json(corrupted)}


@dg.asset(
    group_name=GROUP,
    kinds={"python", "lancedb"},
    partitions_def=identity_batches,
    deps=["document_images"],
    code_version="1",
    pool="gpu",
    op_tags=GPU_OP_TAGS,  # the `gpu` Celery queue; one nvidia.com/gpu on Kubernetes
    automation_condition=EAGER,
    check_specs=[dg.AssetCheckSpec("document_detection_rate", asset="document_embeddings")],
    description="Detects, aligns and embeds each document face into LanceDB; failures are recorded.",
)
def document_embeddings(
    context: dg.AssetExecutionContext,
    dataset: DatasetResource,
    face_analyzer: FaceAnalyzerResource,
    lancedb: LanceDBResource,
):
    key = context.partition_key
    with synced_home(dataset, [batch_files(key)], [batch_files(key)]) as layout, clear_errors():
        summary = embed_documents(layout, key, face_analyzer.get(), lancedb.store())
    rate, minimum = summary["detection_rate"], dataset.min_document_detection_rate
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": summary["images"],
            "detected": summary["detected"],
            "detection_rate": rate,
            "model_id": face_analyzer.model_id,
            **corrupted_metadata(context, summary["corrupted"]),
        }
    )
    yield dg.AssetCheckResult(
        check_name="document_detection_rate",
        passed=rate >= minimum,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"detection_rate": rate, "minimum": minimum, "images": summary["images"]},
    )


@dg.asset(
    group_name=GROUP,
    kinds={"python", "lancedb"},
    partitions_def=identity_batches,
    deps=["live_images"],
    code_version="1",
    pool="gpu",
    op_tags=GPU_OP_TAGS,  # the `gpu` Celery queue; one nvidia.com/gpu on Kubernetes
    automation_condition=EAGER,
    check_specs=[
        dg.AssetCheckSpec("live_detection_rate", asset="live_embeddings"),
        dg.AssetCheckSpec("live_identity_consistency", asset="live_embeddings"),
    ],
    description="Embeds each live image and records its similarity to its own document face.",
)
def live_embeddings(
    context: dg.AssetExecutionContext,
    dataset: DatasetResource,
    face_analyzer: FaceAnalyzerResource,
    lancedb: LanceDBResource,
):
    threshold = face_analyzer.operating_threshold()
    key = context.partition_key
    with synced_home(dataset, [batch_files(key)], [batch_files(key)]) as layout, clear_errors():
        summary = embed_live(
            layout,
            key,
            face_analyzer.get(),
            lancedb.store(),
            threshold.value,
            dataset.min_good_live,
        )
    sims = summary["similarities"]
    consistent = sum(s > threshold.value for s in sims)
    consistency = consistent / len(sims) if sims else 1.0
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": summary["images"],
            "detected": summary["detected"],
            "detection_rate": summary["detection_rate"],
            "mean_similarity_to_document": (sum(sims) / len(sims)) if sims else None,
            "consistent_with_document": consistent,
            "good_live_images": summary["good"],
            "incomplete_identities": summary["incomplete_identities"],
            **corrupted_metadata(context, summary["corrupted"]),
        }
    )
    yield dg.AssetCheckResult(
        check_name="live_detection_rate",
        passed=summary["detection_rate"] >= dataset.min_live_detection_rate or summary["images"] == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"detection_rate": summary["detection_rate"], "minimum": dataset.min_live_detection_rate},
    )
    yield dg.AssetCheckResult(
        check_name="live_identity_consistency",
        passed=consistency >= dataset.min_live_consistency_rate,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "share_above_threshold": consistency,
            "threshold": threshold.value,
            "threshold_fmr": threshold.fmr,
            "minimum_share": dataset.min_live_consistency_rate,
            "compared": len(sims),
        },
    )
