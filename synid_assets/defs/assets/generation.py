"""The generation assets: a prompt per identity, its document image, and the live images of accepted ones."""

import dagster as dg

from synid_assets.core.batch.generation import generate_documents, generate_live, write_prompts
from synid_assets.core.quality.preview import contact_sheet_markdown
from synid_assets.defs.assets.common import EAGER, GROUP, batch_files, batch_records, clear_errors, synced_home
from synid_assets.defs.executors import GPU_OP_TAGS
from synid_assets.defs.partitions import identity_batches
from synid_assets.defs.resources import (
    DatasetResource,
    DocumentGeneratorResource,
    FaceAnalyzerResource,
    LanceDBResource,
    LiveGeneratorResource,
    PromptWriterResource,
)


@dg.asset(
    group_name=GROUP,
    kinds={"python", "parquet"},
    partitions_def=identity_batches,
    deps=["identity_attributes"],
    code_version="1",
    automation_condition=EAGER,
    description="Writes a text prompt per identity (template writer by default; LLM writers later).",
)
def prompts(context: dg.AssetExecutionContext, dataset: DatasetResource, prompt_writer: PromptWriterResource):
    key = context.partition_key
    with synced_home(dataset, batch_records(key), [batch_files(key)]) as layout, clear_errors():
        summary = write_prompts(layout, key, prompt_writer.get())
    prompt_writer.release()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": summary["prompts"],
            "writer": summary["writer"],
            "fallbacks": summary["fallbacks"],
            "example": dg.MetadataValue.text(summary["example"]),
        }
    )


@dg.asset(
    group_name=GROUP,
    kinds={"python", "image"},
    partitions_def=identity_batches,
    deps=["prompts", "identity_vectors"],
    code_version="1",
    pool="gpu",
    op_tags=GPU_OP_TAGS,  # the `gpu` Celery queue; one nvidia.com/gpu on Kubernetes
    automation_condition=EAGER,
    retry_policy=dg.RetryPolicy(max_retries=2, delay=10),
    description="One passport-style document image per identity; resumes where a killed run stopped.",
)
def document_images(
    context: dg.AssetExecutionContext, dataset: DatasetResource, document_generator: DocumentGeneratorResource
) -> dg.MaterializeResult:
    key = context.partition_key
    generator = document_generator.get()
    with synced_home(dataset, [batch_files(key)], [batch_files(key)]) as layout, clear_errors():
        summary = generate_documents(layout, key, generator)
    document_generator.release()
    _log_regenerated(context, summary["corrupted"])
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": summary["images"],
            "images": summary["images"],
            "reused_from_earlier_run": summary["reused"],
            **_regenerated_metadata(summary["corrupted"]),
            "generator": f"{generator.name} v{generator.version}",
            "contact_sheet": dg.MetadataValue.md(contact_sheet_markdown(summary["paths"], "documents")),
            "dagster/uri": str(layout.batch_dir(context.partition_key) / "documents"),
        }
    )


@dg.asset(
    group_name=GROUP,
    kinds={"python", "image"},
    partitions_def=identity_batches,
    deps=["identity_filter"],
    code_version="1",
    pool="gpu",
    op_tags=GPU_OP_TAGS,  # the `gpu` Celery queue; one nvidia.com/gpu on Kubernetes
    automation_condition=EAGER,
    retry_policy=dg.RetryPolicy(max_retries=2, delay=10),
    description="M live-capture variations per accepted identity, every parameter recorded.",
)
def live_images(
    context: dg.AssetExecutionContext,
    dataset: DatasetResource,
    live_generator: LiveGeneratorResource,
    face_analyzer: FaceAnalyzerResource,
    lancedb: LanceDBResource,
) -> dg.MaterializeResult:
    key = context.partition_key
    try:
        with synced_home(dataset, [batch_files(key)], [batch_files(key)]) as layout, clear_errors():
            generators = live_generator.get(dataset.live_per_identity)
            summary = generate_live(
                layout, context.partition_key, generators, lancedb.store(), face_analyzer.model_id
            )
    except ValueError as exc:  # e.g. an ID-conditioned generator without the embedding it needs
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    finally:
        live_generator.release()
    _log_regenerated(context, summary["corrupted"])
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": summary["images"],
            "identities": summary["identities"],
            "live_per_identity": sum(count for _, count in generators),
            "reused_from_earlier_run": summary["reused"],
            **_regenerated_metadata(summary["corrupted"]),
            "generators": ", ".join(f"{g.name} v{g.version} x{count}" for g, count in generators),
            "contact_sheet": dg.MetadataValue.md(contact_sheet_markdown(summary["paths"], "live images")),
        }
    )


def _log_regenerated(context: dg.AssetExecutionContext, corrupted: list[dict]) -> None:
    """Images whose bytes had changed on disk since they were made, and were made again from their seed."""
    for entry in corrupted:
        context.log.warning(f"regenerated a corrupted image: {entry}")


def _regenerated_metadata(corrupted: list[dict]) -> dict:
    return {"regenerated_corrupted": len(corrupted), "regenerated_corrupted_files": dg.MetadataValue.json(corrupted)}
