"""The steps of one identity batch as plain functions over a dataset layout (no Dagster here)."""
