"""Repulsion on the hypersphere: move candidate vectors apart by minimizing a soft maximum of their similarities.

HyperFace (arXiv:2411.08470) packs identity vectors on the hypersphere by gradient descent on their pairwise
similarities. Here each candidate's loss is a soft maximum, (1/t) log sum_j exp(t s_ij), over its similarities to
the other candidates of its chunk and to its nearest already accepted vectors (those stay fixed); a step follows the
gradient projected on the sphere's tangent plane, then renormalizes. The hard bound is checked exactly afterwards.
"""

from __future__ import annotations

import numpy as np


def repel(
    candidates: np.ndarray,
    neighbours: np.ndarray | None = None,
    steps: int = 50,
    learning_rate: float = 0.05,
    temperature: float = 30.0,
) -> np.ndarray:
    """Candidates (b, d) moved apart on the sphere; neighbours (b, k, d): fixed rows each candidate is pushed from."""
    x = np.asarray(candidates, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    fixed = None if neighbours is None or neighbours.shape[1] == 0 else np.asarray(neighbours, dtype=np.float64)
    if len(x) < 2 and fixed is None:
        return x  # nothing to move away from
    for _ in range(steps):
        logits = [x @ x.T]
        np.fill_diagonal(logits[0], -np.inf)
        if fixed is not None:
            logits.append(np.einsum("bd,bkd->bk", x, fixed))
        scores = temperature * np.concatenate(logits, axis=1)
        scores -= scores.max(axis=1, keepdims=True)
        weights = np.exp(scores)
        weights /= weights.sum(axis=1, keepdims=True)
        within = weights[:, : len(x)]
        # d/dx_i of sum_r softmax-max_r: x_j weighted by w_ij (row i's term) and w_ji (row j's term)
        gradient = (within + within.T) @ x
        if fixed is not None:
            gradient += np.einsum("bk,bkd->bd", weights[:, len(x) :], fixed)
        gradient -= np.sum(gradient * x, axis=1, keepdims=True) * x  # tangent to the sphere
        x = x - learning_rate * gradient
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x
