"""The vectors accepted so far, and the exact blocked check of new candidates against them.

The check is a matrix product in blocks: candidates (b, d) against `block` accepted rows at a time, so memory stays
at b x block similarities whatever the number of accepted vectors (100,000 x 512 needs no n x n matrix).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synid_assets.core.filtering.exact import MARGINS

# float32 dot products of unit vectors in a few hundred dimensions round by about 1e-6: a candidate is accepted
# only when its float32 similarity is at most the bound minus this guard, so the bound also holds in float64.
ROUNDING_GUARD = 1e-5


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in float64, then stored as float32."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vectors / norms).astype(np.float32)


# Scans score candidates against the accepted rows in bfloat16 (AMX/AVX-512 on this CPU: ~4x float32's rate),
# whose rounding is within MARGINS["bfloat16"] of the float64 similarity for unit rows of d <= 4096 (the bounds
# of filtering/exact.py); each candidate's NEAREST_KEPT best rows are re-scored in float64, and the result is
# exact when no other row's bfloat16 score comes within the margin of the float64 best (else it is rescanned).
NEAREST_KEPT = 32


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
        self._bf16: Any = None  # torch bfloat16 copy of rows [0, _bf16_count), extended before each scan
        self._bf16_count = 0

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

    def _bf16_rows(self, upto: int) -> Any:
        import torch

        if self._bf16 is None or len(self._bf16) < upto:
            grown = torch.empty((max(upto, len(self._rows)), self.dim), dtype=torch.bfloat16)
            if self._bf16_count:
                grown[: self._bf16_count] = self._bf16[: self._bf16_count]
            self._bf16 = grown
        if self._bf16_count < upto:
            fresh = torch.from_numpy(self._rows[self._bf16_count : upto])
            self._bf16[self._bf16_count : upto] = fresh.to(torch.bfloat16)
            self._bf16_count = upto
        return self._bf16[:upto]

    def scan(self, candidates: np.ndarray, k: int, upto: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Each candidate's k best rows among [0, upto) by bfloat16 score: (scores (b, k) float32, rows (b, k)),
        best first. Scores are within MARGINS["bfloat16"] of the exact similarities."""
        import torch

        upto = self.count if upto is None else upto
        k = min(k, upto)
        if k == 0 or len(candidates) == 0:
            return np.zeros((len(candidates), 0), np.float32), np.zeros((len(candidates), 0), np.int64)
        rows = self._bf16_rows(upto)
        queries = torch.from_numpy(np.ascontiguousarray(candidates, dtype=np.float32)).to(torch.bfloat16)
        best_scores = torch.empty((len(candidates), 0))
        best_rows = torch.empty((len(candidates), 0), dtype=torch.int64)
        for start in range(0, upto, self.block):
            sims = (queries @ rows[start : start + self.block].T).float()
            scores, where = sims.topk(min(k, sims.shape[1]), dim=1)
            best_scores = torch.cat([best_scores, scores], dim=1)
            best_rows = torch.cat([best_rows, where + start], dim=1)
            if best_scores.shape[1] > k:
                best_scores, keep = best_scores.topk(k, dim=1)
                best_rows = best_rows.gather(1, keep)
        return best_scores.numpy(), best_rows.numpy()

    def nearest(self, candidates: np.ndarray, upto: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """For each candidate row, the largest similarity to rows [0, upto) (float64 dot product of the float32
        rows, exact) and that row (-inf and -1 when none)."""
        upto = self.count if upto is None else upto
        best = np.full(len(candidates), -np.inf, np.float64)
        where = np.full(len(candidates), -1, np.int64)
        if upto == 0 or len(candidates) == 0:
            return best, where
        candidates = np.asarray(candidates, dtype=np.float32)
        for lo in range(0, len(candidates), 256):  # 256 x NEAREST_KEPT float64 rows at a time: 32 MB at d = 512
            part = candidates[lo : lo + 256]
            scores, kept = self.scan(part, NEAREST_KEPT, upto)
            exact = np.einsum("bd,bkd->bk", part.astype(np.float64), self._rows[kept].astype(np.float64))
            top = exact.argmax(axis=1)
            best[lo : lo + len(part)] = exact[np.arange(len(part)), top]
            where[lo : lo + len(part)] = kept[np.arange(len(part)), top]
            # a row left out scored at most the smallest kept bfloat16 score: its similarity is below that + margin
            margin = MARGINS["bfloat16"]
            unsure = np.flatnonzero((kept.shape[1] < upto) & (scores[:, -1] + margin >= best[lo : lo + len(part)]))
            if len(unsure):
                self._rescan(part[unsure], lo + unsure, upto, best, where)
        return best, where

    def _rescan(self, queries: np.ndarray, slots: np.ndarray, upto: int, best: np.ndarray, where: np.ndarray) -> None:
        """Raise best[slots] to the exact maximum over rows [0, upto): float32 blocks, and every row within the
        float32 rounding margin of the best so far (a lower bound of the maximum) re-scored in float64."""
        for start in range(0, upto, self.block):
            sims = queries @ self._rows[start : min(start + self.block, upto)].T
            for q, row in np.argwhere(sims >= best[slots][:, None] - MARGINS["float32"]):
                exact = float(queries[q].astype(np.float64) @ self._rows[start + row].astype(np.float64))
                if exact > best[slots[q]]:
                    best[slots[q]], where[slots[q]] = exact, start + row


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
