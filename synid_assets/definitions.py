"""The SynID code location: `dagster dev -m synid_assets.definitions` (or `make ui`).

Settings come from the environment: SYNID_HOME (default ./data), SYNID_PROFILE (default 'local', a YAML
file in resources/), SYNID_ATTRIBUTES (default ./attributes), and SYNID_SEED / SYNID_BATCH_SIZE /
SYNID_LIVE overriding the profile's dataset section. SYNID_EXECUTOR picks the executor (in_process by
default, celery or k8s: see defs/executors.py); the rest of a deployment is the instance's dagster.yaml.
"""

from __future__ import annotations

import os

import dagster as dg

from synid_assets.core.config.profiles import default_attributes_dir, load_profile
from synid_assets.core.dataset.layout import default_home
from synid_assets.defs.assets import ALL_ASSETS, ALL_CHECKS
from synid_assets.defs.automation import (
    attribute_spec_job,
    attribute_spec_sensor,
    automation_sensor,
    batch_job,
    daily_batch_schedule,
)
from synid_assets.defs.executors import code_location_executor
from synid_assets.defs.resources import resources_from_profile
from synid_assets.defs.runs import dead_run_sensor

_ENV_OVERRIDES = {"SYNID_SEED": "seed", "SYNID_BATCH_SIZE": "batch_size", "SYNID_LIVE": "live_per_identity"}


def build_definitions(profile_name: str | None = None) -> dg.Definitions:
    profile = load_profile(profile_name)
    for variable, key in _ENV_OVERRIDES.items():
        if os.environ.get(variable):
            profile["dataset"][key] = int(os.environ[variable])
    resources = resources_from_profile(profile, str(default_home()), str(default_attributes_dir()))
    return dg.Definitions(
        assets=ALL_ASSETS,
        asset_checks=ALL_CHECKS,
        jobs=[attribute_spec_job, batch_job],
        schedules=[daily_batch_schedule],
        sensors=[attribute_spec_sensor, automation_sensor, dead_run_sensor],
        resources=resources,
        # Default: one process per run, models load once and every step of a batch shares them; SynID's
        # variant records the run's process, fails dead runs and waits for pool slots without spinning.
        # SYNID_EXECUTOR=celery|k8s spreads the steps over workers (GPU steps on GPU workers).
        executor=code_location_executor(),
    )


defs = build_definitions()
