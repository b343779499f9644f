"""Errors shared by every backend: one that cannot be built, and a model that cannot be loaded."""

from __future__ import annotations


class BackendError(RuntimeError):
    """A backend that cannot be built: unknown name, bad option, missing dependency."""


class ModelLoadError(BackendError):
    """A model that cannot be loaded; the message names the model (repo id or dir) and how to fetch it."""
