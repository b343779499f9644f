"""The vectors accepted so far, and the exact blocked check of new candidates against them.

The check is a matrix product in blocks: candidates (b, d) against `block` accepted rows at a time, so memory stays
at b x block similarities whatever the number of accepted vectors (100,000 x 512 needs no n x n matrix).
"""

from __future__ import annotations

import numpy as np

# float32 dot products of unit vectors in a few hundred dimensions round by about 1e-6: a candidate is accepted
# only when its float32 similarity is at most the bound minus this guard, so the bound also holds in float64.
ROUNDING_GUARD = 1e-5


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in float64, then stored as float32."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vectors / norms).astype(np.float32)


class AcceptedVectors:
    """A growing (n, d) float32 array of unit rows, with the nearest-row search done in blocks."""

    def __init__(self, dim: int, prior: np.ndarray | None = None, capacity: int = 0, block: int = 8192) -> None:
        prior = np.zeros((0, dim), np.float32) if prior is None or len(prior) == 0 else unit(prior)
        if prior.shape[1] != dim:
            raise ValueError(f"earlier vectors have {prior.shape[1]} dimensions, not {dim}")
        self.dim = dim
        self.block = block
        self.prior_count = len(prior)
        self._rows = np.empty((max(capacity, 1) + len(prior), dim), np.float32)
        self._rows[: len(prior)] = prior
        self.count = len(prior)

    @property
    def rows(self) -> np.ndarray:
        return self._rows[: self.count]

    def add(self, vector: np.ndarray) -> int:
        """Append one unit row; its index among all rows (earlier vectors first)."""
        if self.count == len(self._rows):
            grown = np.empty((2 * len(self._rows), self.dim), np.float32)
            grown[: self.count] = self._rows[: self.count]
            self._rows = grown
        self._rows[self.count] = vector
        self.count += 1
        return self.count - 1

    def nearest(self, candidates: np.ndarray, upto: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """For each candidate row, the largest similarity to rows [0, upto) and that row (-inf and -1 when none)."""
        upto = self.count if upto is None else upto
        best = np.full(len(candidates), -np.inf, np.float32)
        where = np.full(len(candidates), -1, np.int64)
        for start in range(0, upto, self.block):
            sims = candidates @ self._rows[start : min(start + self.block, upto)].T
            rows = sims.argmax(axis=1)
            values = np.take_along_axis(sims, rows[:, None], axis=1)[:, 0]
            better = values > best
            best[better], where[better] = values[better], rows[better] + start
        return best, where


def max_pairwise_similarity(vectors: np.ndarray, block: int = 4096, margin: float = 1e-4) -> tuple[float, int, int]:
    """The largest cosine similarity between two different rows, exact, in blocks (memory block x block, not n x n).

    Blocks are scored in float32; every pair within `margin` of the float32 maximum so far (float32 rounding is
    ~1e-6, far below the margin) is rescored in float64, and the float64 maximum is returned as (sim, i, j), i < j.
    """
    rows32 = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(rows32.astype(np.float64), axis=1)  # the rows as stored, scaled exactly per pair below
    if len(rows32) and not np.allclose(norms, 1.0, atol=1e-3):
        rows32 = unit(rows32)
        norms = np.linalg.norm(rows32.astype(np.float64), axis=1)
    best32, best, pair = -np.inf, -np.inf, (-1, -1)
    for i in range(0, len(rows32), block):
        left = rows32[i : i + block]
        for j in range(i, len(rows32), block):
            sims = left @ rows32[j : j + block].T
            if i == j:
                sims[np.tril_indices(len(left), 0, sims.shape[1])] = -np.inf  # each pair once, no self-pairs
            top = float(sims.max())
            if top < best32 - margin:
                continue
            best32 = max(best32, top)
            for a, b in zip(*np.nonzero(sims >= best32 - margin), strict=True):
                left64, right64 = rows32[i + a].astype(np.float64), rows32[j + b].astype(np.float64)
                exact = float(left64 @ right64 / (norms[i + a] * norms[j + b]))
                if exact > best:
                    best, pair = exact, (i + int(a), j + int(b))
    return best, pair[0], pair[1]


def top_k_rows(accepted: AcceptedVectors, candidates: np.ndarray, k: int) -> np.ndarray:
    """The indices (b, <=k) of each candidate's k most similar accepted rows, found block by block."""
    k = min(k, accepted.count)
    if k == 0:
        return np.zeros((len(candidates), 0), np.int64)
    best_sims = np.full((len(candidates), 0), -np.inf, np.float32)
    best_rows = np.zeros((len(candidates), 0), np.int64)
    for start in range(0, accepted.count, accepted.block):
        block = accepted.rows[start : start + accepted.block]
        sims = np.concatenate([best_sims, candidates @ block.T], axis=1)
        indices = np.broadcast_to(np.arange(start, start + len(block)), (len(candidates), len(block)))
        rows = np.concatenate([best_rows, indices], axis=1)
        keep = np.argpartition(-sims, k - 1, axis=1)[:, :k] if sims.shape[1] > k else np.argsort(-sims, axis=1)
        best_sims = np.take_along_axis(sims, keep, axis=1)
        best_rows = np.take_along_axis(rows, keep, axis=1)
    return best_rows
