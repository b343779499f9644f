"""Dagster wiring: partitions, resources, assets, checks, sensors and schedules."""
