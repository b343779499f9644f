"""Identity filtering: drop an identity whose document face is too similar to one accepted before it.

Strict mode is order-stable and incremental: identities are decided in order (batch by batch, index by
index); each is compared with every identity accepted before it, so deciding a new batch never changes a
decision about an earlier one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# Given query vectors (k, d), return for each the nearest previously accepted identity and its cosine.
PriorSearch = Callable[[np.ndarray], list[tuple[str | None, float | None]]]


@dataclass(frozen=True)
class FilterDecision:
    identity_id: str
    nearest_identity_id: str | None
    similarity: float | None
    threshold: float
    accepted: bool


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def strict_filter(
    identity_ids: Sequence[str],
    vectors: np.ndarray,
    threshold: float,
    prior_search: PriorSearch | None = None,
) -> list[FilterDecision]:
    """Decide candidates in the given order against prior accepted identities and earlier accepted candidates.

    An identity is accepted when its highest cosine similarity to any accepted identity is <= threshold.
    """
    if len(identity_ids) == 0:
        return []
    unit = normalize_rows(vectors)
    if unit.shape[0] != len(identity_ids):
        raise ValueError(f"{len(identity_ids)} ids but {unit.shape[0]} vectors")
    prior = prior_search(unit) if prior_search is not None else [(None, None)] * len(identity_ids)
    within = unit @ unit.T  # batches are small (tens to thousands): the dense block is cheap
    accepted_rows: list[int] = []
    decisions: list[FilterDecision] = []
    for row, identity in enumerate(identity_ids):
        nearest_id, nearest_sim = prior[row]
        if accepted_rows:
            sims = within[row, accepted_rows]
            best = int(np.argmax(sims))
            if nearest_sim is None or float(sims[best]) > nearest_sim:
                nearest_id, nearest_sim = identity_ids[accepted_rows[best]], float(sims[best])
        accepted = nearest_sim is None or nearest_sim <= threshold
        if accepted:
            accepted_rows.append(row)
        decisions.append(FilterDecision(identity, nearest_id, nearest_sim, threshold, accepted))
    return decisions


def incremental_fmr_filter(
    identity_ids: Sequence[str],
    vectors: np.ndarray,
    threshold: float,
    target_fmr: float,
    prior_neighbours: Sequence[Sequence[tuple[str, float]]],
    prior_accepted: int,
    prior_edges: int,
) -> tuple[list[FilterDecision], int]:
    """FLUXSynID's dataset-FMR rule applied to one batch, with earlier acceptances held fixed.

    The batch's candidates join the identities accepted before it; while the share of above-threshold
    ordered pairs among all of them exceeds `target_fmr`, the candidate with the most above-threshold
    neighbours (among earlier acceptances and remaining candidates; ties: the first in order) is removed.
    Returns the decisions and the number of above-threshold pairs among all accepted identities after it.
    `prior_neighbours[i]` lists (identity, similarity) of candidate i's nearest earlier accepted identities,
    including every one above the threshold.
    """
    n = len(identity_ids)
    if n == 0:
        return [], prior_edges
    unit = normalize_rows(vectors)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    adjacent = sims > threshold
    active = np.ones(n, dtype=bool)
    prior_above = np.array([sum(sim > threshold for _, sim in p) for p in prior_neighbours], dtype=np.int64)
    degree = adjacent.sum(axis=1) + prior_above
    edges = prior_edges + int(adjacent.sum()) // 2 + int(prior_above.sum())
    members = prior_accepted + n
    # Batches are small (hundreds): a linear scan for the maximum degree is simpler than a heap here.
    while members > 1 and 2 * edges / (members * (members - 1)) > target_fmr and active.any():
        removed = int(np.argmax(np.where(active, degree, -1)))
        if degree[removed] == 0:
            break  # nothing left to remove that would lower the FMR
        active[removed] = False
        edges -= int(degree[removed])
        degree[adjacent[removed] & active] -= 1
        members -= 1
    decisions = []
    for row, identity in enumerate(identity_ids):
        nearest_id, nearest_sim = None, None
        for other, sim in prior_neighbours[row]:
            if nearest_sim is None or sim > nearest_sim:
                nearest_id, nearest_sim = other, sim
        others = np.where(active, sims[row], -np.inf)
        others[row] = -np.inf
        if active.sum() - active[row] > 0:
            best = int(np.argmax(others))
            if nearest_sim is None or float(others[best]) > nearest_sim:
                nearest_id, nearest_sim = identity_ids[best], float(others[best])
        decisions.append(FilterDecision(identity, nearest_id, nearest_sim, threshold, bool(active[row])))
    return decisions, edges
