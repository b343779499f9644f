"""Jobs, the daily growth schedule, the attribute-spec sensor and the automation sensor."""


import json

import dagster as dg

from synid_assets.defs.assets import BATCH_ASSETS, attribute_spec, dataset_manifest, quality_report
from synid_assets.defs.partitions import identity_batches, next_batch_keys
from synid_assets.defs.resources import DatasetResource

attribute_spec_job = dg.define_asset_job(
    "attribute_spec_job", selection=[attribute_spec], description="Validate and snapshot the attribute spec."
)

batch_job = dg.define_asset_job(
    "synid_batch",
    selection=[*BATCH_ASSETS, dataset_manifest, quality_report],
    description="Everything for one identity batch, then the manifest and the quality report.",
)


@dg.schedule(
    job=batch_job,
    cron_schedule="0 3 * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Grows the dataset by one batch a day: adds the next batch partition and materializes it.",
)
def daily_batch_schedule(context: dg.ScheduleEvaluationContext):
    existing = context.instance.get_dynamic_partitions(identity_batches.name)
    key = next_batch_keys(existing, 1)[0]
    # The run's partition must exist before the run is launched.
    context.instance.add_dynamic_partitions(identity_batches.name, [key])
    return dg.RunRequest(run_key=key, partition_key=key, tags={"synid/trigger": "daily_batch_schedule"})


@dg.sensor(
    job=attribute_spec_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Re-materializes the attribute spec when a file in the attributes dir changes.",
)
def attribute_spec_sensor(context: dg.SensorEvaluationContext, dataset: DatasetResource):
    from synid_assets.core.spec.loading import spec_fingerprint

    try:
        fingerprint = spec_fingerprint(dataset.attributes_dir)
    except (OSError, ValueError) as exc:
        return dg.SkipReason(f"cannot read {dataset.attributes_dir}: {exc}")
    previous = context.cursor
    if previous is None:
        # First evaluation: compare with what the asset last snapshotted, not with nothing (on an s3:// home,
        # the store's copy: this daemon's mirror may be new).
        remote = dataset.remote()
        if remote is not None:
            from synid_assets.core.dataset.remote_home import RemoteHomeError

            try:
                remote.pull("spec/current.json")
            except RemoteHomeError as exc:
                return dg.SkipReason(str(exc))
        current = dataset.layout().current_spec_file
        previous = json.loads(current.read_text())["fingerprint"] if current.exists() else None
    if fingerprint == previous:
        context.update_cursor(fingerprint)
        return dg.SkipReason("attribute spec unchanged")
    context.update_cursor(fingerprint)
    return dg.RunRequest(run_key=f"spec-{fingerprint[:16]}", tags={"synid/spec_fingerprint": fingerprint})


automation_sensor = dg.AutomationConditionSensorDefinition(
    "synid_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Runs the eager conditions: a new batch's identities flow through to the manifest.",
)
