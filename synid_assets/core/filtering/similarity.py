"""Unit rows, cosine similarity and the dataset false match rate: the one place every filter, check and report
computes them."""

from __future__ import annotations

import numpy as np

_BLOCK_ROWS = 8192  # normalize in blocks: the temporaries stay small however many rows there are


def unit_rows(vectors: np.ndarray, *, check: bool = False, copy: bool = True) -> np.ndarray:
    """float32 C-contiguous (n, d) rows scaled to unit L2 norm.

    Zero rows stay zero rows (their cosine with anything is then 0) unless `check`, which raises ValueError
    naming the first row that is all zeros or holds a NaN or infinite value. `copy=False` normalizes in place
    when `vectors` already is a float32 C-contiguous array (no second full-size copy at 1M rows).
    """
    x = (
        np.array(vectors, dtype=np.float32, order="C", copy=True)
        if copy
        else np.ascontiguousarray(vectors, dtype=np.float32)
    )
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D (n, d) array, got shape {x.shape}")
    squares = np.empty((min(_BLOCK_ROWS, x.shape[0]), x.shape[1]), dtype=np.float32)
    for start in range(0, x.shape[0], _BLOCK_ROWS):
        block = x[start : start + _BLOCK_ROWS]
        if check and not np.isfinite(block).all():
            bad = start + int(np.nonzero(~np.isfinite(block).all(axis=1))[0][0])
            raise ValueError(f"row {bad} has a NaN or infinite value")
        # the same sum as np.linalg.norm(block, axis=1), so the float32 results equal it bit for bit
        norms = np.sqrt(np.add.reduce(np.multiply(block, block, out=squares[: len(block)]), axis=1))
        zero = norms == 0
        if zero.any():
            if check:
                raise ValueError(f"row {start + int(np.nonzero(zero)[0][0])} is all zeros (cosine undefined)")
            norms[zero] = 1.0  # 0 / 1: a zero row stays zero
        block /= norms[:, None]
    return x


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors (0.0 when either is all zeros)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / denom) if denom > 0 else 0.0


def dataset_fmr(identities: int, matching_pairs: int) -> float:
    """FLUXSynID's dataset false match rate: the share of ordered identity pairs that match (similarity above
    the threshold), 2 * matching_pairs / (identities * (identities - 1)); 0.0 for fewer than two identities.

    `matching_pairs` counts unordered pairs, each once.
    """
    if identities < 2:
        return 0.0
    return 2 * matching_pairs / (identities * (identities - 1))
