"""Score sets of the quality report: impostor pairs, genuine pairs within identities, FNMR, FMR, U_class."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from synid_assets.core.filtering.similarity import unit_rows

MAX_IMPOSTOR_PAIRS = 500_000  # sampled above this, with a recorded seed


def impostor_scores(vectors: np.ndarray, seed: int = 0, max_pairs: int = MAX_IMPOSTOR_PAIRS) -> np.ndarray:
    """Cosine scores of distinct-identity document pairs: all pairs, or a seeded sample of them."""
    n = len(vectors)
    if n < 2:
        return np.zeros(0, np.float32)
    unit = unit_rows(vectors)
    total = n * (n - 1) // 2
    if total <= max_pairs:
        rows, cols = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(seed)
        rows = rng.integers(0, n, size=max_pairs * 2)
        cols = rng.integers(0, n, size=max_pairs * 2)
        keep = rows != cols
        rows, cols = rows[keep][:max_pairs], cols[keep][:max_pairs]
    return np.einsum("ij,ij->i", unit[rows], unit[cols]).astype(np.float32)


def within_identity_scores(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """Cosine scores of every pair of one identity's images (genuine pairs)."""
    if len(vectors) < 2:
        return np.zeros(0, np.float32)
    unit = unit_rows(np.stack(vectors))
    rows, cols = np.triu_indices(len(unit), k=1)
    return (unit[rows] * unit[cols]).sum(axis=1).astype(np.float32)


def fnmr_at(genuine: np.ndarray, threshold: float) -> float:
    return float(np.mean(genuine <= threshold)) if genuine.size else float("nan")


def fmr_at(impostor: np.ndarray, threshold: float) -> float:
    return float(np.mean(impostor > threshold)) if impostor.size else float("nan")


def u_class(centres: np.ndarray, threshold: float, block: int = 4096) -> float:
    """Share of identity centres with no other centre above the threshold (DCFace's uniqueness)."""
    n = len(centres)
    if n == 0:
        return float("nan")
    unit = unit_rows(centres)
    unique = np.ones(n, dtype=bool)
    for start in range(0, n, block):
        sims = unit[start : start + block] @ unit.T
        np.fill_diagonal(sims[:, start : start + block], -1.0)
        unique[start : start + block] = sims.max(axis=1) <= threshold
    return float(unique.mean())
