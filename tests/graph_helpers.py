"""Shared by the graph tests: a Definitions object on the embedded defaults, and one batch materialized."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from synid_assets.defs.partitions import identity_batches

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
REPO_ATTRIBUTES = Path(__file__).resolve().parents[1] / "attributes"


def build(home: Path, attributes: Path | None = None, live: int = 2, seed: int = 7):
    from synid_assets.core.config.profiles import default_attributes_dir, load_profile
    from synid_assets.defs.assets import ALL_ASSETS, ALL_CHECKS
    from synid_assets.defs.automation import attribute_spec_job, batch_job
    from synid_assets.defs.resources import resources_from_profile

    profile = load_profile("local")
    profile["dataset"].update(seed=seed, live_per_identity=live, batch_size=6)
    resources = resources_from_profile(profile, str(home), str(attributes or default_attributes_dir()))
    return dg.Definitions(
        assets=ALL_ASSETS,
        asset_checks=ALL_CHECKS,
        jobs=[attribute_spec_job, batch_job],
        resources=resources,
        executor=dg.in_process_executor,
    )


def materialize_batch(defs: dg.Definitions, instance: dg.DagsterInstance, key: str, size: int | None = None):
    instance.add_dynamic_partitions(identity_batches.name, [key])
    config = {**QUIET}
    if size is not None:
        config["ops"] = {"identity_attributes": {"config": {"batch_size": size}}}
    return defs.resolve_job_def("synid_batch").execute_in_process(
        partition_key=key, instance=instance, run_config=config, raise_on_error=False
    )
