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
    """Candidates (b, d) moved apart on the sphere; neighbours (b, k, d): fixed rows each candidate is pushed from.

    float32 torch products (the result need not be exact: the sampler checks the bound in float64 afterwards).
    """
    import torch

    x = torch.from_numpy(np.asarray(candidates, dtype=np.float32)).clone()
    x /= x.norm(dim=1, keepdim=True)
    fixed = (None if neighbours is None or neighbours.shape[1] == 0
             else torch.from_numpy(np.asarray(neighbours, dtype=np.float32)))
    if len(x) < 2 and fixed is None:
        return x.numpy()  # nothing to move away from
    diagonal = torch.eye(len(x), dtype=torch.bool)
    for _ in range(steps):
        logits = [(x @ x.T).masked_fill_(diagonal, -torch.inf)]
        if fixed is not None:
            logits.append(torch.einsum("bkd,bd->bk", fixed, x))
        weights = torch.softmax(temperature * torch.cat(logits, dim=1), dim=1)
        within = weights[:, : len(x)]
        # d/dx_i of sum_r softmax-max_r: x_j weighted by w_ij (row i's term) and w_ji (row j's term)
        gradient = (within + within.T) @ x
        if fixed is not None:
            gradient += torch.einsum("bk,bkd->bd", weights[:, len(x) :], fixed)
        gradient -= (gradient * x).sum(dim=1, keepdim=True) * x  # tangent to the sphere
        x = x - learning_rate * gradient
        x /= x.norm(dim=1, keepdim=True)
    return x.numpy()
