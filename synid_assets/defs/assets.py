"""The SynID asset graph: attribute spec -> per-batch identities ... live embeddings -> DuckDB manifest.

Assets pass files, not bytes: each writes Parquet tables and PNGs under SYNID_HOME through the domain
code in synid_assets.core, and returns a MaterializeResult with counts and small previews.
"""


import contextlib
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from synid_assets.core.batch import steps as pipeline
from synid_assets.core.quality.preview import contact_sheet_markdown, distribution_markdown
from synid_assets.defs.partitions import identity_batches
from synid_assets.defs.resources import (
    DatasetResource,
    DocumentGeneratorResource,
    FaceAnalyzerResource,
    LanceDBResource,
    LiveGeneratorResource,
    PromptWriterResource,
)

GROUP = "synid"
EAGER = dg.AutomationCondition.eager()


@contextlib.contextmanager
def clear_errors() -> Iterator[None]:
    """Turn the domain's input errors into a Dagster failure with the message alone (no traceback noise)."""
    from synid_assets.core.analysis.images import ImageReadError
    from synid_assets.core.errors import BackendError
    from synid_assets.core.spec.attributes import AttributeSpecError

    try:
        yield
    except (AttributeSpecError, pipeline.MissingStepError, BackendError, ImageReadError) as exc:
        # Bad input does not heal by retrying: fail once, with the message alone.
        raise dg.Failure(description=str(exc), allow_retries=False) from None


class IdentityFilterConfig(dg.Config):
    """Run config of the identity filter; unset fields take the profile's `filter` section."""

    mode: str | None = None  # 'strict' (order-stable, no accepted pair above the threshold) or 'fmr'
    target_fmr: float | None = None  # 'fmr' mode: the dataset false match rate to reach


class IdentityBatchConfig(dg.Config):
    """Run config of a batch: its size, when it differs from the dataset's batch size (e.g. a last batch)."""

    batch_size: int | None = None


@dg.asset(
    group_name=GROUP,
    kinds={"python"},
    code_version="1",
    description="Loads and validates the attribute spec dir (FLUXSynID layout) and snapshots it.",
)
def attribute_spec(context: dg.AssetExecutionContext, dataset: DatasetResource) -> dg.MaterializeResult:
    from synid_assets.core.spec.attributes import load_attribute_spec

    with clear_errors():
        spec = load_attribute_spec(dataset.attributes_dir)
    for warning in spec.warnings:
        context.log.warning(warning)
    record = pipeline.snapshot_spec(dataset.layout(), spec)
    rows = [
        dg.TableRecord(
            {
                "class": c.name,
                "usage": c.usage_probability,
                "values": len(c.values),
                "top value": c.values[max(range(len(c.values)), key=lambda i: c.probabilities[i])],
            }
        )
        for c in spec.classes
    ]
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn("class", "string"),
            dg.TableColumn("usage", "float"),
            dg.TableColumn("values", "int"),
            dg.TableColumn("top value", "string"),
        ]
    )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(spec.fingerprint),
        metadata={
            "fingerprint": spec.fingerprint,
            "source_dir": dg.MetadataValue.path(record["source_dir"]),
            "snapshot_dir": dg.MetadataValue.path(str(dataset.layout().absolute(record["snapshot_dir"]))),
            "classes": dg.MetadataValue.table(rows, schema=schema),
            "clash_rules": len(spec.clashes),
            "warnings": len(spec.warnings),
        },
    )


@dg.asset(
    group_name=GROUP,
    kinds={"python", "parquet"},
    partitions_def=identity_batches,
    deps=[attribute_spec],
    code_version="1",
    check_specs=[dg.AssetCheckSpec("attribute_frequencies", asset="identity_attributes")],
    description="Samples each identity's attributes from (dataset seed, batch key, index).",
)
def identity_attributes(
    context: dg.AssetExecutionContext, config: IdentityBatchConfig, dataset: DatasetResource
):
    from synid_assets.core.spec.checks import clash_violations, frequency_tests

    layout = dataset.layout()
    with clear_errors():
        size = pipeline.resolve_batch_size(layout, context.partition_key, config.batch_size, dataset.batch_size)
        spec = pipeline.load_current_spec(layout)
        summary = pipeline.sample_batch(layout, spec, dataset.seed, context.partition_key, size)
        identities = pipeline.read_identities(layout, context.partition_key, "attribute_frequencies")
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": summary["identities"],
            "identities": summary["identities"],
            "attribute_rows": summary["attribute_rows"],
            "spec_fingerprint": spec.fingerprint,
            "dataset_seed": dataset.seed,
            "attribute_distribution": dg.MetadataValue.md(distribution_markdown(summary["distribution"])),
            "dagster/uri": str(layout.table(context.partition_key, "identities")),
        }
    )
    # A batch is small, so this catches gross sampler faults (a value the spec forbids, a clash that
    # survived, a class used far too often); the spec-level check with 20k draws is the sharp one.
    samples = [dict(i.attributes) for i in identities]
    tests = frequency_tests(spec, samples)
    worst = min((t["p_value"] for t in tests), default=1.0)
    violations = clash_violations(spec, samples)
    yield dg.AssetCheckResult(
        check_name="attribute_frequencies",
        passed=worst >= dataset.frequency_p_value and violations == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"min_p_value": worst, "clash_violations": violations, "tests": dg.MetadataValue.json(tests)},
    )


@dg.asset(
    group_name=GROUP,
    kinds={"python", "parquet"},
    partitions_def=identity_batches,
    deps=[identity_attributes],
    code_version="1",
    automation_condition=EAGER,
    description="Writes a text prompt per identity (template writer by default; LLM writers later).",
)
def prompts(context: dg.AssetExecutionContext, dataset: DatasetResource, prompt_writer: PromptWriterResource):
    layout = dataset.layout()
    with clear_errors():
        summary = pipeline.write_prompts(layout, context.partition_key, prompt_writer.get())
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
    deps=[prompts],
    code_version="1",
    pool="gpu",
    automation_condition=EAGER,
    retry_policy=dg.RetryPolicy(max_retries=2, delay=10),
    description="One passport-style document image per identity; resumes where a killed run stopped.",
)
def document_images(
    context: dg.AssetExecutionContext, dataset: DatasetResource, document_generator: DocumentGeneratorResource
) -> dg.MaterializeResult:
    layout = dataset.layout()
    generator = document_generator.get()
    with clear_errors():
        summary = pipeline.generate_documents(layout, context.partition_key, generator)
    document_generator.release()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": summary["images"],
            "images": summary["images"],
            "reused_from_earlier_run": summary["reused"],
            "generator": f"{generator.name} v{generator.version}",
            "contact_sheet": dg.MetadataValue.md(contact_sheet_markdown(summary["paths"], "documents")),
            "dagster/uri": str(layout.batch_dir(context.partition_key) / "documents"),
        }
    )


@dg.asset(
    group_name=GROUP,
    kinds={"python", "lancedb"},
    partitions_def=identity_batches,
    deps=[document_images],
    code_version="1",
    pool="gpu",
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
    layout = dataset.layout()
    with clear_errors():
        summary = pipeline.embed_documents(layout, context.partition_key, face_analyzer.get(), lancedb.store())
    rate, minimum = summary["detection_rate"], dataset.min_document_detection_rate
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": summary["images"],
            "detected": summary["detected"],
            "detection_rate": rate,
            "model_id": face_analyzer.model_id,
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
    deps=[document_embeddings],
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
    settings = pipeline.FilterSettings(
        model_id=face_analyzer.model_id,
        threshold=threshold.value,
        threshold_fmr=threshold.fmr,
        threshold_source=threshold.source,
        mode=config.mode or dataset.filter_mode,
        target_fmr=config.target_fmr if config.target_fmr is not None else dataset.filter_target_fmr,
        leak_gallery=dataset.leak_gallery,
    )
    try:
        with clear_errors():
            summary = pipeline.filter_batch(dataset.layout(), context.partition_key, lancedb.store(), settings)
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


@dg.asset(
    group_name=GROUP,
    kinds={"python", "image"},
    partitions_def=identity_batches,
    deps=[identity_filter],
    code_version="1",
    pool="gpu",
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
    layout = dataset.layout()
    try:
        with clear_errors():
            generators = live_generator.get(dataset.live_per_identity)
            summary = pipeline.generate_live(
                layout, context.partition_key, generators, lancedb.store(), face_analyzer.model_id
            )
    except ValueError as exc:  # e.g. an ID-conditioned generator without the embedding it needs
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    finally:
        live_generator.release()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": summary["images"],
            "identities": summary["identities"],
            "live_per_identity": sum(count for _, count in generators),
            "reused_from_earlier_run": summary["reused"],
            "generators": ", ".join(f"{g.name} v{g.version} x{count}" for g, count in generators),
            "contact_sheet": dg.MetadataValue.md(contact_sheet_markdown(summary["paths"], "live images")),
        }
    )


@dg.asset(
    group_name=GROUP,
    kinds={"python", "lancedb"},
    partitions_def=identity_batches,
    deps=[live_images],
    code_version="1",
    pool="gpu",
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
    with clear_errors():
        summary = pipeline.embed_live(
            dataset.layout(),
            context.partition_key,
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


BATCH_ASSETS = [
    identity_attributes,
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
    import duckdb

    from synid_assets.core.dataset.manifest import build_manifest

    layout = dataset.layout()
    counts = build_manifest(layout, {"dataset_seed": str(dataset.seed)})
    with duckdb.connect(str(layout.manifest_path), read_only=True) as con:
        status = dict(con.execute("SELECT status, count(*) FROM identities GROUP BY 1 ORDER BY 1").fetchall())
        columns = con.execute(
            "SELECT column_name, data_type, comment FROM duckdb_columns() "
            "WHERE table_name = 'identities' ORDER BY column_index"
        ).fetchall()
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, dtype, description=doc or None) for name, dtype, doc in columns]
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/uri": str(layout.manifest_path),
            "dagster/row_count": counts["identities"],
            "dagster/column_schema": schema,
            "table_rows": dg.MetadataValue.json(counts),
            "identity_status": dg.MetadataValue.json(status),
            "query": dg.MetadataValue.text("synid query \"SELECT status, count(*) FROM identities GROUP BY 1\""),
        }
    )


@dg.asset(
    group_name=GROUP,
    kinds={"duckdb", "html"},
    deps=[dataset_manifest],
    code_version="1",
    pool="duckdb",
    automation_condition=EAGER,
    description="Genuine/impostor scores, EER, FNMR at FMR 1e-3/1e-4, U_class, C_intra, attribute balance, "
    "detection failures: $SYNID_HOME/reports/quality.html and quality.duckdb.",
)
def quality_report(
    context: dg.AssetExecutionContext,
    dataset: DatasetResource,
    face_analyzer: FaceAnalyzerResource,
    lancedb: LanceDBResource,
) -> dg.MaterializeResult:
    import base64

    from synid_assets.core.quality.report import build_quality_report

    layout = dataset.layout()
    threshold = face_analyzer.operating_threshold()
    with clear_errors():
        spec = pipeline.load_current_spec(layout)
    summary = build_quality_report(
        layout, lancedb.store(), face_analyzer.model_id, threshold.value, threshold.fmr, spec, dataset.seed
    )
    plots = {
        f"plot_{name}": dg.MetadataValue.md(
            f"![{name}](data:image/png;base64,{base64.b64encode(Path(path).read_bytes()).decode()})"
        )
        for name, path in summary["plots"].items()
    }
    figures = {
        k: v
        for k, v in summary.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v  # drop NaN: no data for it
    }
    return dg.MaterializeResult(
        metadata={
            **figures,
            "status": dg.MetadataValue.json(summary["status"]),
            "report": dg.MetadataValue.path(summary["html"]),
            "dagster/uri": summary["html"],
            **plots,
        }
    )


def spec_frequency_samples(spec, draws: int, seed: int) -> list[dict[str, str]]:
    from synid_assets.core.dataset.seeds import rng_for
    from synid_assets.core.spec.attributes import sample_identity_attributes

    rng = rng_for(seed, "spec-check")
    return [sample_identity_attributes(spec, rng) for _ in range(draws)]


@dg.asset_check(asset=attribute_spec, blocking=True, description="The snapshot validates and the sampler follows it.")
def attribute_spec_valid(dataset: DatasetResource) -> dg.AssetCheckResult:
    from synid_assets.core.spec.checks import clash_violations, frequency_tests

    with clear_errors():
        spec = pipeline.load_current_spec(dataset.layout())
    samples = spec_frequency_samples(spec, 20_000, dataset.seed)
    tests = frequency_tests(spec, samples)
    worst = min((t["p_value"] for t in tests), default=1.0)
    violations = clash_violations(spec, samples)
    return dg.AssetCheckResult(
        passed=worst >= dataset.frequency_p_value and violations == 0,
        metadata={
            "draws": len(samples),
            "min_p_value": worst,
            "clash_violations": violations,
            "tests": dg.MetadataValue.json(tests),
        },
    )


ALL_ASSETS = [attribute_spec, *BATCH_ASSETS, dataset_manifest, quality_report]
ALL_CHECKS = [attribute_spec_valid]

