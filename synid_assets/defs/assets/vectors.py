"""The identity_vectors asset: on the `identity_source: embeddings` route, a unit vector per identity of a batch.

The vector lives in the document generator's conditioning space (its class declares `vector_space` and
`vector_dim`), and document_images renders it. On the default `attributes` route the asset records that it is
not used and writes nothing. `with_identity_vectors` puts the asset into the batch graph: after
identity_attributes, and before document_images (which then depends on it).
"""

from collections.abc import Sequence
from typing import Any

import dagster as dg

from synid_assets.core.batch.vectors import sample_batch_vectors
from synid_assets.defs.assets.common import EAGER, GROUP, clear_errors
from synid_assets.defs.partitions import identity_batches
from synid_assets.defs.resources import DatasetResource, DocumentGeneratorResource


def route_settings(dataset: DatasetResource) -> tuple[str, dict[str, Any]]:
    """The profile's dataset.identity_source and identity_vectors section, as the dataset resource carries them."""
    return getattr(dataset, "identity_source", "attributes"), dict(getattr(dataset, "identity_vectors", {}) or {})


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
        with clear_errors():
            summary = sample_batch_vectors(
                dataset.layout(), context.partition_key, settings, space, int(generator_class.vector_dim), gallery
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


def with_identity_vectors(batch_assets: Sequence[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """The batch assets with identity_vectors after identity_attributes, and document_images depending on it."""
    names = [a.key.to_user_string() for a in batch_assets]
    out: list[dg.AssetsDefinition] = []
    for asset, name in zip(batch_assets, names, strict=True):
        upstream = {dep.asset_key for dep in asset.get_asset_spec().deps}
        if name == "document_images" and identity_vectors.key not in upstream:
            asset = dg.map_asset_specs(lambda spec: spec.merge_attributes(deps=[identity_vectors]), [asset])[0]
        out.append(asset)
        if name == "identity_attributes" and "identity_vectors" not in names:
            out.append(identity_vectors)
    return out
