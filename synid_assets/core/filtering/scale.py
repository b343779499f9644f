"""Identity filtering at scale (up to ~1M identities) without the dense n x n similarity matrix.

FLUXSynID's similarity filter builds the dense cosine matrix, thresholds it into an adjacency matrix and then
repeatedly removes the identity with the highest degree until the false-match rate among the remaining
identities is at most a target. Here the same decisions are made on the sparse graph of above-threshold pairs:

* `above_threshold_pairs` (pair_search.py) finds the graph: "exact" (exact.py: blocked torch products on the
  CPU or a GPU, never n x n at once, pairs near the threshold re-scored in float64) or "index" (an inverted-file
  index of our own (ivf.py) over raw and whitened partitions, every candidate scored exactly); "auto" runs
  exact on a GPU, where its estimated CPU time fits the budget, and where the index's probe plan would cost more;
* `strict_keep` / `fmr_keep` decide on the graph in O(n + E) / O((n + E) log n) with the rules the incremental
  filter uses too (rules.py);
* `dense_strict_keep` / `dense_fmr_keep` are plain dense versions of the same rules (baseline and test oracle).

FMR is counted over ordered pairs: 2 * (edges among the remaining) / (M * (M - 1)), M = remaining identities
(`dataset_fmr`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from synid_assets.core.dataset.layout import atomic_write_bytes
from synid_assets.core.filtering.exact import query_pairs, similarity_block
from synid_assets.core.filtering.pair_search import AUTO_EXACT_MAX_ROWS, above_threshold_pairs
from synid_assets.core.filtering.rules import CandidatePairs, fmr_rule, strict_rule
from synid_assets.core.filtering.similarity import dataset_fmr, unit_rows

__all__ = [
    "AUTO_EXACT_MAX_ROWS",
    "DENSE_MAX_ROWS",
    "above_threshold_pairs",
    "dense_fmr_keep",
    "dense_strict_keep",
    "filter_vectors",
    "filter_vectors_file",
    "fmr_keep",
    "load_vectors",
    "strict_keep",
]

# Dense oracles refuse above this size: they hold n x n matrices.
DENSE_MAX_ROWS = 20_000


# --------------------------------------------------------------------------------------------- decisions
def strict_keep(n: int, pairs: np.ndarray) -> np.ndarray:
    """Order-stable greedy: row i is kept unless some kept row j < i is its neighbour. O(n + E)."""
    return strict_rule(CandidatePairs.from_pairs(n, pairs))


def fmr_keep(n: int, pairs: np.ndarray, target_fmr: float) -> np.ndarray:
    """FLUXSynID's rule on the sparse graph: while the ordered-pair FMR among the remaining rows exceeds the
    target, remove the remaining row of highest degree (ties: lowest index, as numpy argmax). O((n + E) log n)."""
    return fmr_rule(CandidatePairs.from_pairs(n, pairs), target_fmr)


# --------------------------------------------------------------------------------------------- dense oracles
def _dense_adjacency(vectors: np.ndarray, threshold: float) -> np.ndarray:
    x = unit_rows(vectors, check=True)
    if x.shape[0] > DENSE_MAX_ROWS:
        raise ValueError(f"dense filtering holds n x n matrices; {x.shape[0]} rows > {DENSE_MAX_ROWS}")
    adj = similarity_block(x, threshold) > threshold
    np.fill_diagonal(adj, False)
    return adj


def dense_fmr_keep(vectors: np.ndarray, threshold: float, target_fmr: float) -> np.ndarray:
    """FLUXSynID's algorithm, written plainly on the dense adjacency matrix (baseline and test oracle)."""
    adj = _dense_adjacency(vectors, threshold)
    n = adj.shape[0]
    active = np.ones(n, dtype=bool)
    while True:
        m = int(active.sum())
        degrees = adj.sum(axis=1)  # removed rows/columns are zeroed, so this counts edges among the active
        fmr = dataset_fmr(m, int(degrees.sum()) // 2)
        if fmr <= target_fmr:
            break
        worst = int(np.argmax(degrees))
        adj[worst, :] = False
        adj[:, worst] = False
        active[worst] = False
    return active


def dense_strict_keep(vectors: np.ndarray, threshold: float) -> np.ndarray:
    """Plain dense strict mode: row i is kept unless it is too similar to a kept row before it."""
    adj = _dense_adjacency(vectors, threshold)
    kept = np.zeros(adj.shape[0], dtype=bool)
    for i in range(adj.shape[0]):
        kept[i] = not adj[i, :i][kept[:i]].any()
    return kept


# --------------------------------------------------------------------------------------------- front ends
def filter_vectors(
    vectors: np.ndarray,
    threshold: float,
    mode: str = "strict",
    target_fmr: float | None = None,
    method: str = "auto",
    normalized: bool = False,
    precomputed: tuple[np.ndarray, np.ndarray, dict] | None = None,
    recall_rows: int = 2000,
    **options: Any,
) -> dict:
    """Filter identities (rows, in identity order) by cosine similarity.

    mode "strict": keep a row unless it is > threshold to a kept row before it. mode "fmr": FLUXSynID's rule
    with `target_fmr`. `options` go to the search (see above_threshold_pairs). `normalized=True` promises
    unit float32 rows and skips the normalizing copy.
    The result says which search ran ("method": exact or index). Exact: "figures" is "exact" and fmr_before /
    fmr_after are the true rates. Index: "figures" is "estimate"; "recall" holds the index's recall measured by
    an exact search of `recall_rows` random rows against all rows, fmr_before / fmr_after count only the pairs
    the index found, and fmr_after_sampled is the kept set's rate estimated from the exact search of the
    sampled rows (it sees pairs the index missed).
    "nearest" lists, for every row that has any neighbour above the threshold, that neighbour's index and
    similarity: in strict mode the most similar earlier kept row (-1 / None when the row has no kept earlier
    neighbour), in fmr mode the most similar neighbour. Rows not listed have no neighbour above the threshold.
    """
    if mode not in ("strict", "fmr"):
        raise ValueError(f"mode must be 'strict' or 'fmr', got {mode!r}")
    if mode == "fmr" and (target_fmr is None or not 0 <= target_fmr <= 1):
        raise ValueError(f"fmr mode needs 0 <= target_fmr <= 1, got {target_fmr!r}")
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    x = np.ascontiguousarray(vectors, np.float32) if normalized else unit_rows(vectors, check=True)
    n = x.shape[0]
    seconds["normalize"] = time.perf_counter() - t
    t = time.perf_counter()
    # `precomputed`: the (pairs, sims, stats) of above_threshold_pairs at this threshold, to decide both modes
    # from one search
    pairs, sims, stats = precomputed or above_threshold_pairs(x, threshold, method=method, **options)
    seconds["pairs"] = time.perf_counter() - t
    t = time.perf_counter()
    kept = strict_keep(n, pairs) if mode == "strict" else fmr_keep(n, pairs, float(target_fmr))  # type: ignore[arg-type]
    seconds["decide"] = time.perf_counter() - t
    t = time.perf_counter()
    both = kept[pairs[:, 0]] & kept[pairs[:, 1]] if len(pairs) else np.zeros(0, bool)
    nearest = _nearest(n, pairs, sims, kept if mode == "strict" else None)
    kept_rows = np.nonzero(kept)[0]
    exact = stats["method"] == "exact"
    result = {
        "kept": kept_rows.tolist(),
        "mode": mode,
        "threshold": float(threshold),
        "target_fmr": None if target_fmr is None else float(target_fmr),
        "n": n,
        "n_kept": len(kept_rows),
        "edges": len(pairs),
        "method": stats["method"],
        "figures": "exact" if exact else "estimate",
        "search": {k: v for k, v in stats.items() if k not in ("method", "n", "edges")},
        "fmr_before": dataset_fmr(n, len(pairs)),
        "fmr_after": dataset_fmr(len(kept_rows), int(both.sum())),
        "recall": None,
        "nearest": nearest,
        "seconds": seconds,
    }
    seconds["report"] = time.perf_counter() - t
    if not exact:
        t = time.perf_counter()
        result.update(sampled_figures(x, pairs, kept, threshold, recall_rows, seed=int(options.get("seed", 0))))
        seconds["recall"] = time.perf_counter() - t
    return result


def sampled_figures(
    x: np.ndarray, pairs: np.ndarray, kept: np.ndarray, threshold: float, rows: int, seed: int = 0
) -> dict[str, Any]:
    """An index's recall and the kept set's FMR, estimated from an exact search of `rows` random query rows
    against all rows: recall = sampled true pairs the index found / sampled true pairs; the FMR after filtering
    = mean count of kept neighbours of the sampled kept rows / (kept - 1)."""
    n = x.shape[0]
    rng = np.random.default_rng(seed + 7919)
    sample = np.sort(rng.choice(n, size=min(n, rows), replace=False))
    truth = query_pairs(x, sample, threshold)
    found = np.isin(truth[:, 0] * n + truth[:, 1], pairs[:, 0] * n + pairs[:, 1]) if len(truth) else np.zeros(0, bool)
    in_sample = np.zeros(n, bool)
    in_sample[sample] = True
    kept_pairs = truth[kept[truth[:, 0]] & kept[truth[:, 1]]] if len(truth) else truth
    # each kept-kept pair counts once per sampled endpoint
    kept_degree_sum = int(in_sample[kept_pairs[:, 0]].sum() + in_sample[kept_pairs[:, 1]].sum())
    sampled_kept = int(kept[sample].sum())
    m = int(kept.sum())
    return {
        "recall": {
            "estimate": float(found.mean()) if len(truth) else 1.0,
            "rows": len(sample),
            "pairs": len(truth),
            "missed": int((~found).sum()),
        },
        "fmr_after_sampled": kept_degree_sum / sampled_kept / (m - 1) if sampled_kept and m > 1 else 0.0,
        "kept_pairs_sampled": len(kept_pairs),
    }


def _nearest(n: int, pairs: np.ndarray, sims: np.ndarray, strict_kept: np.ndarray | None) -> dict:
    if len(pairs) == 0:
        return {"row": [], "index": [], "similarity": []}
    rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
    other = np.concatenate([pairs[:, 1], pairs[:, 0]])
    sim = np.concatenate([sims, sims]).astype(np.float64)
    listed = np.unique(rows)
    if strict_kept is not None:  # strict: only earlier rows that were kept count
        ok = (other < rows) & strict_kept[other]
        rows, other, sim = rows[ok], other[ok], sim[ok]
    order = np.lexsort((-sim, rows))
    rows, other, sim = rows[order], other[order], sim[order]
    first = np.ones(len(rows), bool)
    first[1:] = rows[1:] != rows[:-1]
    best_idx = np.full(n, -1, np.int64)
    best_sim = np.full(n, np.nan)
    best_idx[rows[first]] = other[first]
    best_sim[rows[first]] = sim[first]
    return {
        "row": listed.tolist(),
        "index": best_idx[listed].tolist(),
        "similarity": [None if np.isnan(s) else round(float(s), 6) for s in best_sim[listed]],
    }


def load_vectors(vectors_path: str) -> np.ndarray:
    """Read an (n, d) float .npy; ValueError naming the file for anything unusable."""
    path = Path(vectors_path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npy array ({exc})") from exc
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{path}: expected a non-empty 2-D (n, d) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{path}: expected a float array, got dtype {arr.dtype}")
    try:
        return unit_rows(arr, check=True)  # the one in-memory float32 copy, normalized in place
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def filter_vectors_file(
    vectors_path: str, threshold: float, mode: str, target_fmr: float | None, out_path: str
) -> dict:
    """Filter the rows of a .npy file and write the result JSON ({"kept": [...], ...stats}) atomically."""
    x = load_vectors(vectors_path)
    result = filter_vectors(x, threshold, mode=mode, target_fmr=target_fmr, normalized=True)
    result["vectors_path"] = str(vectors_path)
    atomic_write_bytes(Path(out_path), json.dumps(result).encode())
    return result
