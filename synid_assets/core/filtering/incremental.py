"""Identity filtering: drop an identity whose document face is too similar to one accepted before it.

Strict mode is order-stable and incremental: identities are decided in order (batch by batch, index by
index); each is compared with every identity accepted before it, so deciding a new batch never changes a
decision about an earlier one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from synid_assets.core.filtering.exact import similarity_block
from synid_assets.core.filtering.rules import CandidatePairs, fmr_rule, strict_rule
from synid_assets.core.filtering.similarity import unit_rows

# Given query vectors (k, d), return for each the nearest previously accepted identity and its cosine.
PriorSearch = Callable[[np.ndarray], list[tuple[str | None, float | None]]]


@dataclass(frozen=True)
class FilterDecision:
    identity_id: str
    nearest_identity_id: str | None
    similarity: float | None
    threshold: float
    accepted: bool


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
    unit = unit_rows(vectors)
    if unit.shape[0] != len(identity_ids):
        raise ValueError(f"{len(identity_ids)} ids but {unit.shape[0]} vectors")
    prior = prior_search(unit) if prior_search is not None else [(None, None)] * len(identity_ids)
    # batches are small (tens to thousands): the dense block is cheap; pairs within float32 rounding of the
    # threshold are re-scored in float64, so a batch decides each pair exactly as the scale filter does
    within = similarity_block(unit, threshold)
    # the nearest earlier acceptance above the threshold is enough: strict mode drops on any one match
    prior_matches = np.array([sim is not None and sim > threshold for _, sim in prior], dtype=np.int64)
    accepted = strict_rule(CandidatePairs.from_similarities(within, threshold, prior_matches))
    decisions: list[FilterDecision] = []
    for row, identity in enumerate(identity_ids):
        nearest_id, nearest_sim = prior[row]
        accepted_before = np.flatnonzero(accepted[:row])
        if len(accepted_before):
            sims = within[row, accepted_before]
            best = int(np.argmax(sims))
            if nearest_sim is None or float(sims[best]) > nearest_sim:
                nearest_id, nearest_sim = identity_ids[accepted_before[best]], float(sims[best])
        decisions.append(FilterDecision(identity, nearest_id, nearest_sim, threshold, bool(accepted[row])))
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
    unit = unit_rows(vectors)
    sims = similarity_block(unit, threshold)
    prior_matches = np.array([sum(sim > threshold for _, sim in p) for p in prior_neighbours], dtype=np.int64)
    candidates = CandidatePairs.from_similarities(sims, threshold, prior_matches, prior_accepted, prior_edges)
    active = fmr_rule(candidates, target_fmr)
    np.fill_diagonal(sims, -np.inf)
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
    return decisions, candidates.accepted_edges(active)
