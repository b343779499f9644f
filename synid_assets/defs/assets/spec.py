"""The spec assets: the validated attribute spec, and each batch's sampled identity attributes."""

from typing import Any

import dagster as dg

from synid_assets.core.batch.spec import (
    load_current_spec,
    read_identities,
    resolve_batch_size,
    sample_batch,
    snapshot_spec,
)
from synid_assets.core.quality.preview import distribution_markdown
from synid_assets.defs.assets.common import GROUP, batch_files, batch_records, clear_errors, synced_home
from synid_assets.defs.partitions import identity_batches
from synid_assets.defs.resources import DatasetResource


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
    from synid_assets.core.spec.loading import load_attribute_spec

    with clear_errors():
        spec = load_attribute_spec(dataset.attributes_dir)
    for note in spec.notes:  # e.g. a class file of weights summing to 100, read as percents
        context.log.info(note)
    for warning in spec.warnings:
        context.log.warning(warning)
    with synced_home(dataset, push=["spec"]) as layout:
        record = snapshot_spec(layout, spec)
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
            "notes": "\n".join(spec.notes) or "none",
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

    key = context.partition_key
    with synced_home(dataset, ["spec", *batch_records(key)], [batch_files(key)]) as layout, clear_errors():
        size = resolve_batch_size(layout, context.partition_key, config.batch_size, dataset.batch_size)
        spec = load_current_spec(layout)
        summary = sample_batch(layout, spec, dataset.seed, context.partition_key, size)
        identities = read_identities(layout, context.partition_key, "attribute_frequencies")
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


def spec_frequency_samples(spec: Any, draws: int, seed: int) -> list[dict[str, str]]:
    """`draws` identities from the sampler, seeded for the spec check (not a batch's identity seeds)."""
    from synid_assets.core.dataset.seeds import rng_for
    from synid_assets.core.spec.sampling import sample_identity_attributes

    rng = rng_for(seed, "spec-check")
    return [sample_identity_attributes(spec, rng) for _ in range(draws)]


@dg.asset_check(asset=attribute_spec, blocking=True, description="The snapshot validates and the sampler follows it.")
def attribute_spec_valid(dataset: DatasetResource) -> dg.AssetCheckResult:
    from synid_assets.core.spec.checks import clash_violations, frequency_tests

    with synced_home(dataset, pull=["spec"]) as layout, clear_errors():
        spec = load_current_spec(layout)
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
