"""The identity_vectors asset: on the `identity_source: embeddings` route, a unit vector per identity of a batch.

The vector lives in the document generator's conditioning space (its class declares `vector_space` and
`vector_dim`), and document_images renders it. On the default `attributes` route the asset records that it is
not used and writes nothing. It runs after identity_attributes and before document_images, which depends on it.
"""

from typing import Any

import dagster as dg

from synid_assets.core.batch.vectors import sample_batch_vectors
from synid_assets.defs.assets.common import EAGER, GROUP, batch_files, batch_records, clear_errors, synced_home
from synid_assets.defs.partitions import identity_batches
from synid_assets.defs.resources import DatasetResource, DocumentGeneratorResource


def route_settings(dataset: DatasetResource) -> tuple[str, dict[str, Any]]:
    """The profile's dataset.identity_source and identity_vectors section, as the dataset resource carries them."""
    return dataset.identity_source, dict(dataset.identity_vectors)


@dg.asset(
    group_name=GROUP,
    kinds={"python", "parquet"},
    partitions_def=identity_batches,
    deps=["identity_attributes"],
    code_version="1",
    automation_condition=EAGER,
    description="identity_source embeddings: a unit identity vector per identity in the document generator's "
    "space, within max_similarity of every earlier identity and the leak gallery (gaussian, pca or repulsion).",
)
def identity_vectors(
    context: dg.AssetExecutionContext, dataset: DatasetResource, document_generator: DocumentGeneratorResource
) -> dg.MaterializeResult:
    from synid_assets.core.filtering.leakage import Gallery, GalleryError
    from synid_assets.core.identity_vectors import SamplerSettings, VectorSpaceFull

    source, options = route_settings(dataset)
    generator_class = document_generator.backend_class()
    space = getattr(generator_class, "vector_space", None)
    if source != "embeddings":
        if space:
            raise dg.Failure(
                description=f"document generator {document_generator.backend!r} renders identity vectors: set the "
                "profile's dataset.identity_source to embeddings",
                allow_retries=False,
            )
        return dg.MaterializeResult(metadata={"identity_source": source, "vectors": 0})
    if not space:
        raise dg.Failure(
            description=f"identity_source embeddings needs a document generator that renders identity vectors; "
            f"{document_generator.backend!r} renders prompts (use e.g. backend arc2face)",
            allow_retries=False,
        )
    try:
        settings = SamplerSettings.from_mapping(options)
        gallery = Gallery(dataset.leak_gallery) if dataset.leak_gallery else None
        key = context.partition_key
        earlier = ["batches/*/identities.parquet", "batches/*/identity_vectors.parquet", *batch_records(key)]
        with synced_home(dataset, earlier, [batch_files(key)]) as layout, clear_errors():
            summary = sample_batch_vectors(
                layout, key, settings, space, int(generator_class.vector_dim), gallery
            )
    except (ValueError, GalleryError, VectorSpaceFull) as exc:  # settings, centres, gallery, a full space
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": summary["vectors"],
            "identity_source": source,
            "vector_space": space,
            "method": settings.method,
            "max_similarity": settings.max_similarity,
            "earlier_vectors": summary["earlier_vectors"],
            "redraws": summary["redraws"],
            "largest_similarity": summary["largest_similarity"],
            "dagster/uri": str(dataset.layout().table(context.partition_key, "identity_vectors")),
        }
    )
