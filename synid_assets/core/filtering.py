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
