"""The attribute-spec sensor and the daily batch schedule, through Dagster's test contexts."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from synid_assets.core.batch.spec import snapshot_spec
from synid_assets.core.dataset.layout import DatasetLayout
from synid_assets.core.spec.loading import load_attribute_spec
from synid_assets.defs.automation import attribute_spec_sensor, batch_job, daily_batch_schedule
from synid_assets.defs.partitions import identity_batches, next_batch_keys
from synid_assets.defs.resources import DatasetResource


def test_spec_sensor_fires_on_change_only(synid_home, attributes_copy) -> None:
    dataset = DatasetResource(home=str(synid_home), attributes_dir=str(attributes_copy))
    instance = dg.DagsterInstance.ephemeral()
    # Never materialized: the first evaluation requests a run.
    context = dg.build_sensor_context(instance=instance, resources={"dataset": dataset})
    first = attribute_spec_sensor(context)
    assert isinstance(first, dg.RunRequest)
    cursor = context.cursor
    # Unchanged: skip, cursor kept.
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"dataset": dataset})
    assert isinstance(attribute_spec_sensor(context), dg.SkipReason)
    # An edited class file: a new run with a new key, and a new cursor.
    with open(attributes_copy / "eyewear.txt", "a", encoding="utf-8") as handle:
        handle.write("\n# edited\n")
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"dataset": dataset})
    second = attribute_spec_sensor(context)
    assert isinstance(second, dg.RunRequest)
    assert second.run_key != first.run_key
    assert context.cursor != cursor


def test_spec_sensor_first_tick_matches_last_snapshot(synid_home, attributes_copy) -> None:
    layout = DatasetLayout(synid_home)
    snapshot_spec(layout, load_attribute_spec(attributes_copy))
    dataset = DatasetResource(home=str(synid_home), attributes_dir=str(attributes_copy))
    context = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources={"dataset": dataset})
    assert isinstance(attribute_spec_sensor(context), dg.SkipReason)


def test_daily_schedule_adds_the_next_batch(synid_home) -> None:
    # Not `with`: DagsterInstance.__exit__ leaves its defs-state context var set (dagster 1.13).
    instance = dg.DagsterInstance.get()
    try:
        instance.add_dynamic_partitions(identity_batches.name, ["batch-00000", "batch-00001"])
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=dt.datetime(2026, 11, 28, 3, tzinfo=dt.timezone.utc)
        )
        request = daily_batch_schedule(context)
        assert request.partition_key == "batch-00002"
        assert "batch-00002" in instance.get_dynamic_partitions(identity_batches.name)
    finally:
        instance.dispose()
    assert batch_job.name == daily_batch_schedule.job_name


def test_next_batch_keys_ignores_foreign_keys() -> None:
    assert next_batch_keys([], 2) == ["batch-00000", "batch-00001"]
    assert next_batch_keys(["batch-00003", "manual", "batch-00001"], 1) == ["batch-00004"]
