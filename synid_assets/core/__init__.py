"""Dagster-free domain code: attribute specs, sampling, prompts, rendering, face analysis, filtering, manifest.

Nothing in this package imports Dagster, and heavy libraries (dlib, torch) are imported inside the
functions that need them, so importing it is cheap.
"""
