"""The two identity filter rules, written once over the above-threshold pairs among candidates.

Both filters hand the rules the same `CandidatePairs`: the incremental filter (a batch of candidates after the
identities accepted in earlier batches, which are held fixed) and the scale filter (all identities at once,
nothing held fixed). The rules see only the graph of above-threshold pairs, never similarities:

* strict: candidates are decided in order; one is kept iff it matches (similarity above the threshold) no
  earlier acceptance and no candidate kept before it.
* fmr (FLUXSynID's rule): while the dataset false match rate among all accepted identities (the fixed ones and
  the remaining candidates) is above the target, remove the remaining candidate with the most matches among
  them (ties: the first in order); stop early when that candidate has no match left.

The dense n x n versions in `scale.py` (`dense_strict_keep`, `dense_fmr_keep`) are the reference both are
tested against (tests/test_filter_rules.py).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

from synid_assets.core.filtering.similarity import dataset_fmr


def unique_pairs(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    """Unordered, deduplicated (i < j) pairs as an (E, 2) int64 array, sorted by (i, j); self-pairs dropped."""
    lo = np.minimum(i, j).astype(np.int64)
    hi = np.maximum(i, j).astype(np.int64)
    keep = lo != hi
    key = np.unique(lo[keep] * n + hi[keep])
    return np.stack([key // n, key % n], axis=1) if len(key) else np.zeros((0, 2), np.int64)


def adjacency_csr(n: int, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric adjacency of (i, j) pairs as (indptr, indices), neighbours of each node ascending."""
    if len(pairs) == 0:
        return np.zeros(n + 1, np.int64), np.zeros(0, np.int64)
    src = np.concatenate([pairs[:, 0], pairs[:, 1]]).astype(np.int64)
    dst = np.concatenate([pairs[:, 1], pairs[:, 0]]).astype(np.int64)
    order = np.lexsort((dst, src))
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    return indptr, dst[order]


@dataclass(frozen=True)
class CandidatePairs:
    """What a rule decides on: `n` candidates in decision order and their above-threshold pairs.

    pairs: (E, 2) int64, i < j, each pair once (build with `from_pairs` or `from_similarities`).
    prior_matches: (n,) int64, how many identities accepted before the candidates (held fixed) each matches.
    prior_members / prior_edges: how many identities were accepted before, and matching pairs among them.
    """

    n: int
    pairs: np.ndarray
    prior_matches: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    prior_members: int = 0
    prior_edges: int = 0

    def __post_init__(self) -> None:
        if len(self.prior_matches) == 0 and self.n:
            object.__setattr__(self, "prior_matches", np.zeros(self.n, np.int64))
        if len(self.prior_matches) != self.n:
            raise ValueError(f"{self.n} candidates but {len(self.prior_matches)} prior match counts")

    @classmethod
    def from_pairs(
        cls,
        n: int,
        pairs: np.ndarray,
        prior_matches: np.ndarray | None = None,
        prior_members: int = 0,
        prior_edges: int = 0,
    ) -> CandidatePairs:
        """From any (i, j) pairs of candidate rows: ordered, repeated and self pairs are normalized away."""
        p = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        matches = np.zeros(n, np.int64) if prior_matches is None else np.asarray(prior_matches, np.int64)
        return cls(n, unique_pairs(p[:, 0], p[:, 1], n), matches, prior_members, prior_edges)

    @classmethod
    def from_similarities(
        cls,
        similarities: np.ndarray,
        threshold: float,
        prior_matches: np.ndarray | None = None,
        prior_members: int = 0,
        prior_edges: int = 0,
    ) -> CandidatePairs:
        """From a dense (n, n) similarity block of the candidates (symmetric, as `x @ x.T` is)."""
        n = similarities.shape[0]
        i, j = np.nonzero(np.triu(similarities > threshold, 1))
        matches = np.zeros(n, np.int64) if prior_matches is None else np.asarray(prior_matches, np.int64)
        return cls(n, np.stack([i, j], axis=1).astype(np.int64), matches, prior_members, prior_edges)

    def accepted_edges(self, kept: np.ndarray) -> int:
        """Matching pairs among all accepted identities: the fixed ones plus the kept candidates."""
        both = kept[self.pairs[:, 0]] & kept[self.pairs[:, 1]] if len(self.pairs) else np.zeros(0, bool)
        return self.prior_edges + int(self.prior_matches[kept].sum()) + int(both.sum())


def strict_rule(candidates: CandidatePairs) -> np.ndarray:
    """Kept mask: a candidate is kept iff it matches no earlier acceptance and no candidate kept before it.
    O(n + E): only candidates with an earlier neighbour can be dropped; they are decided in ascending order."""
    kept = candidates.prior_matches == 0
    pairs = candidates.pairs
    if len(pairs) == 0:
        return kept
    lo, hi = pairs[:, 0], pairs[:, 1]
    order = np.lexsort((lo, hi))  # group earlier neighbours by the later row, later rows ascending
    lo, hi = lo[order], hi[order]
    rows, starts = np.unique(hi, return_index=True)
    ends = np.append(starts[1:], len(hi))
    for row, s, e in zip(rows.tolist(), starts.tolist(), ends.tolist(), strict=True):
        if kept[row] and kept[lo[s:e]].any():
            kept[row] = False
    return kept


def fmr_rule(candidates: CandidatePairs, target_fmr: float) -> np.ndarray:
    """Kept mask of FLUXSynID's dataset-FMR rule, with the earlier acceptances held fixed.

    A candidate's degree counts its matches among the fixed identities and the remaining candidates. Lazy
    max-heap keyed (-degree, index), so ties go to the first candidate as numpy's argmax does: O((n + E) log n).
    """
    n = candidates.n
    kept = np.ones(n, dtype=bool)
    indptr, nbrs = adjacency_csr(n, candidates.pairs)
    deg = (np.diff(indptr) + candidates.prior_matches).tolist()
    indptr_l = indptr.tolist()
    nbrs_l = nbrs.tolist()
    edges = candidates.prior_edges + len(candidates.pairs) + int(candidates.prior_matches.sum())
    members = candidates.prior_members + n
    heap = [(-d, v) for v, d in enumerate(deg) if d > 0]
    heapq.heapify(heap)
    while members >= 2 and dataset_fmr(members, edges) > target_fmr:
        v = -1
        while heap:
            neg, v = heapq.heappop(heap)
            if kept[v] and -neg == deg[v]:
                break
            v = -1  # stale entry
        if v < 0:
            break  # no remaining candidate has a match: removing one would not lower the FMR
        kept[v] = False
        members -= 1
        edges -= deg[v]
        deg[v] = 0
        for u in nbrs_l[indptr_l[v] : indptr_l[v + 1]]:
            if kept[u]:
                deg[u] -= 1
                if deg[u] > 0:
                    heapq.heappush(heap, (-deg[u], u))
    return kept
