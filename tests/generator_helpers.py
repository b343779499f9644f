"""Inputs the embedding-space generator tests share: an identity record, a unit vector, PNG bytes."""

from __future__ import annotations

import io

import numpy as np

from synid_assets.core.generation.types import IdentityRecord


def identity(index: int, attributes: dict | None = None) -> IdentityRecord:
    return IdentityRecord(f"b0-{index:03d}", "b0", index, 100 + index, attributes or {}, "person")


def unit(seed: int, dim: int = 512) -> list[float]:
    """A seeded unit vector, as an identity vector is stored."""
    v = np.random.default_rng(seed).normal(size=dim)
    return [float(x) for x in v / np.linalg.norm(v)]


def png(image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
