"""Identity filtering at scale (up to ~1M identities) without the dense n x n similarity matrix.

FLUXSynID's similarity filter builds the dense cosine matrix, thresholds it into an adjacency matrix and then
repeatedly removes the identity with the highest degree until the false-match rate among the remaining
identities is at most a target. Here the same decisions are made on the sparse graph of above-threshold pairs:

* `above_threshold_pairs` finds the graph: "exact" (blocked float32 products, never n x n at once) or "index"
  (an inverted-file index of our own in numpy: spherical k-means cells, each vector probes its few nearest
  cells, every candidate is scored exactly, then a two-hop closure re-checks neighbours of neighbours);
* `strict_keep` / `fmr_keep` decide on the graph in O(n + E) / O((n + E) log n);
* `dense_strict_keep` / `dense_fmr_keep` are plain dense versions of the same rules (baseline and test oracle).

FMR is counted over ordered pairs: 2 * (edges among the remaining) / (M * (M - 1)), M = remaining identities.

Why not LanceDB's vector index for the search: it answers one query vector at a time. On the 2-core dev box an
IVF_PQ index over 20k x 512 took 117 s to build and answered 64 queries/s (nprobes 8, refine 10): ~4 h for the
1M self-join, against ~8 min for the numpy IVF here, which scores whole cells with one matrix product.
"""

from __future__ import annotations

import heapq
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# Below this many rows "auto" uses the exact blocked search: it is exact and, at this size, about as fast as
# building an index (measured on the 2-core dev box: 15k exact ~3 s; see benchmarks/filter_scale.py).
AUTO_EXACT_MAX_ROWS = 20_000
# Dense oracles refuse above this size: they hold n x n matrices.
DENSE_MAX_ROWS = 20_000


# --------------------------------------------------------------------------------------------- helpers
def unit_rows(vectors: np.ndarray, copy: bool = True) -> np.ndarray:
    """float32 C-contiguous unit rows; zero (or non-finite) rows raise ValueError naming the first bad row."""
    x = (
        np.array(vectors, dtype=np.float32, order="C", copy=True)
        if copy
        else np.ascontiguousarray(vectors, dtype=np.float32)
    )
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D (n, d) array, got shape {x.shape}")
    step = 65_536  # normalize in blocks so no second full-size array is made
    for start in range(0, x.shape[0], step):
        block = x[start : start + step]
        if not np.isfinite(block).all():
            bad = start + int(np.nonzero(~np.isfinite(block).all(axis=1))[0][0])
            raise ValueError(f"row {bad} has a NaN or infinite value")
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        if (norms == 0).any():
            raise ValueError(f"row {start + int(np.nonzero(norms == 0)[0][0])} is all zeros (cosine undefined)")
        block /= norms[:, None]
    return x


def _pair_sims(x: np.ndarray, pairs: np.ndarray, step: int = 262_144) -> np.ndarray:
    out = np.empty(len(pairs), dtype=np.float32)
    for s in range(0, len(pairs), step):
        p = pairs[s : s + step]
        out[s : s + step] = np.einsum("ij,ij->i", x[p[:, 0]], x[p[:, 1]])
    return out


def _unique_pairs(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    """Unordered, deduplicated (i < j) pairs as an (E, 2) int64 array, sorted by (i, j)."""
    lo = np.minimum(i, j).astype(np.int64)
    hi = np.maximum(i, j).astype(np.int64)
    keep = lo != hi
    key = np.unique(lo[keep] * n + hi[keep])
    return np.stack([key // n, key % n], axis=1) if len(key) else np.zeros((0, 2), np.int64)


# --------------------------------------------------------------------------------------------- exact search
def _exact_pairs(x: np.ndarray, threshold: float, block: int = 2048, col_block: int = 16_384) -> tuple[list, int]:
    """Upper-triangle blocked products: memory is block x col_block floats, never n x n."""
    n = x.shape[0]
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    checked = 0
    for r0 in range(0, n, block):
        rows = x[r0 : r0 + block]
        for c0 in range(r0, n, col_block):
            sims = rows @ x[c0 : c0 + col_block].T
            checked += sims.size
            r, c = np.nonzero(sims > threshold)
            gi, gj = r + r0, c + c0
            keep = gi < gj
            found.append((gi[keep], gj[keep], sims[r[keep], c[keep]]))
    return found, checked


# --------------------------------------------------------------------------------------------- IVF index
def _top_cells(x: np.ndarray, centroids: np.ndarray, n_probe: int, block: int = 16_384) -> np.ndarray:
    """(n, n_probe) int32 cell ids per row, nearest first (cosine to unit centroids)."""
    n = x.shape[0]
    out = np.empty((n, n_probe), dtype=np.int32)
    for s in range(0, n, block):
        scores = x[s : s + block] @ centroids.T
        rows = np.arange(scores.shape[0])
        # repeated argmax: for a handful of probes ~6x faster than argpartition, and nearest-first for free
        for p in range(n_probe):
            best = np.argmax(scores, axis=1)
            out[s : s + block, p] = best
            if p + 1 < n_probe:
                scores[rows, best] = -np.inf
    return out


def _kmeans(x: np.ndarray, n_cells: int, rng: np.random.Generator, per_cell: int, iters: int) -> np.ndarray:
    """Spherical k-means on a sample; empty cells are re-seeded from random sample rows."""
    n = x.shape[0]
    sample = x[np.sort(rng.choice(n, size=min(n, n_cells * per_cell), replace=False))]
    cent = sample[rng.choice(len(sample), size=n_cells, replace=False)].copy()
    for _ in range(iters):
        assign = _top_cells(sample, cent, 1)[:, 0]
        sums = np.zeros_like(cent)
        _scatter_sum(sums, assign, sample)
        empty = np.linalg.norm(sums, axis=1) == 0
        sums[empty] = sample[rng.choice(len(sample), size=int(empty.sum()), replace=False)]
        cent = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    return cent.astype(np.float32)


def _scatter_sum(sums: np.ndarray, assign: np.ndarray, rows: np.ndarray, step: int = 65_536) -> None:
    """sums[k] += sum of rows assigned to k, blockwise (sort a block, reduce runs) so no n-sized copy is made."""
    for s in range(0, rows.shape[0], step):
        a = assign[s : s + step]
        order = np.argsort(a, kind="stable")
        cells, starts = np.unique(a[order], return_index=True)
        sums[cells] += np.add.reduceat(rows[s : s + step][order], starts, axis=0)


def _ivf_pairs(
    x: np.ndarray,
    threshold: float,
    n_cells: int | None = None,
    n_probe: int | None = None,
    per_cell: int = 32,
    iters: int = 6,
    refit: int = 1,
    tables: int | None = None,
    closure: int = 2,
    closure_max_degree: int = 64,
    seed: int = 0,
) -> tuple[list, int, dict]:
    """`tables` independent IVF partitions (different k-means seeds), their pairs united, then a two-hop
    closure. A pair missed by one partition sits on a cell boundary of that partition; a second partition's
    boundaries fall elsewhere, so misses rarely repeat. Measured at 100k x 512 (14,149 true pairs): 1 table x 16
    probes missed 20, 2 tables x 8 probes (same scan cost) missed 3, 2 x 4 missed 10, 3 x 4 missed 1."""
    if tables is None:
        # one table misses ~1% of pairs at 100k but ~15% at 1M (cells of ~670 rows); misses are nearly
        # independent across tables, so more tables at 1M: 5 gave recall 0.9982 on uniform rows, 7 gave 1.0
        # (0 of 2,293 missed on 8,000 sampled rows) in 324 s of search on 2 cores
        tables = 3 if x.shape[0] < 500_000 else 7
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    checked = 0
    stats: dict[str, Any] = {"tables": tables}
    for table in range(tables):
        f, c, st = _ivf_table(x, threshold, n_cells, n_probe, per_cell, iters, refit, seed + 1000 * table)
        found += f
        checked += c
        for key, value in st.items():
            stats[key] = stats.get(key, 0) + value if key.endswith("_s") else value
    t3 = time.perf_counter()
    n = x.shape[0]
    # Two-hop closure: near-duplicate groups are nearly transitive, so a pair missed by the cells is usually
    # a neighbour of a neighbour; score those exactly (cheap: sum of squared degrees, hubs skipped).
    closure_checked = 0
    for _ in range(closure):
        pairs = _unique_pairs(
            np.concatenate([f[0] for f in found]) if found else np.zeros(0, np.int64),
            np.concatenate([f[1] for f in found]) if found else np.zeros(0, np.int64),
            n,
        )
        cand = _two_hop_candidates(n, pairs, closure_max_degree)
        if len(cand) == 0:
            break
        sims = _pair_sims(x, cand)
        closure_checked += len(cand)
        hit = sims > threshold
        if not hit.any():
            break
        found.append((cand[hit, 0], cand[hit, 1], sims[hit]))
    stats["closure_checked"] = closure_checked
    stats["closure_s"] = time.perf_counter() - t3
    return found, checked + closure_checked, stats


def _ivf_table(
    x: np.ndarray,
    threshold: float,
    n_cells: int | None,
    n_probe: int | None,
    per_cell: int,
    iters: int,
    refit: int,
    seed: int,
) -> tuple[list, int, dict]:
    """Asymmetric IVF join: every row lives in its nearest cell and probes its n_probe nearest cells; all
    (prober, resident) pairs of a cell are scored exactly, so only the candidate generation is approximate."""
    n = x.shape[0]
    if n_cells is None:
        # assignment costs ~ n * n_cells, the scan ~ n * n_probe * n / n_cells: balanced near 1.5 sqrt(n)
        n_cells = int(np.clip(round(1.5 * np.sqrt(n)), 8, 4096))
    n_cells = max(1, min(n_cells, n // 4 or 1))
    if n_probe is None:
        n_probe = 4  # more tables beat more probes at equal cost (misses sit on one partition's boundaries)
    n_probe = min(n_probe, n_cells)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    cent = _kmeans(x, n_cells, rng, per_cell, iters)
    t1 = time.perf_counter()
    for _ in range(refit):
        # Lloyd passes over ALL rows (the sample-trained cells do not see most near-duplicate groups; centroids
        # refit on every row pull each group's members towards shared cells, which is what recall needs)
        home = _top_cells(x, cent, 1)[:, 0]
        sums = np.zeros_like(cent)
        _scatter_sum(sums, home, x)
        empty = np.linalg.norm(sums, axis=1) == 0
        sums[empty] = cent[empty]
        cent = (sums / np.linalg.norm(sums, axis=1, keepdims=True)).astype(np.float32)
        del home, sums
    t1b = time.perf_counter()
    probes = _top_cells(x, cent, n_probe)
    home = probes[:, 0].copy()
    t2 = time.perf_counter()
    # residents and probers of each cell as CSR lists
    res_order = np.argsort(home, kind="stable").astype(np.int64)
    res_bounds = np.searchsorted(home[res_order], np.arange(n_cells + 1))
    flat = probes.ravel()
    prb_order = np.argsort(flat, kind="stable")
    prb_bounds = np.searchsorted(flat[prb_order], np.arange(n_cells + 1))
    prb_rows = (prb_order // n_probe).astype(np.int64)
    del flat, prb_order, probes
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    checked = 0
    buf = np.empty((8192, x.shape[1]), dtype=np.float32)
    for k in range(n_cells):
        residents = res_order[res_bounds[k] : res_bounds[k + 1]]
        probers = prb_rows[prb_bounds[k] : prb_bounds[k + 1]]
        if len(residents) == 0 or len(probers) == 0:
            continue
        res_vecs = x[residents]
        for s in range(0, len(probers), 8192):
            pr = probers[s : s + 8192]
            sims = np.take(x, pr, axis=0, out=buf[: len(pr)]) @ res_vecs.T
            checked += sims.size
            r, c = np.nonzero(sims > threshold)
            gi, gj = pr[r], residents[c]
            keep = gi != gj
            found.append((gi[keep], gj[keep], sims[r[keep], c[keep]]))
    stats = {
        "n_cells": n_cells,
        "n_probe": n_probe,
        "train_s": t1 - t0,
        "refit_s": t1b - t1,
        "assign_s": t2 - t1b,
        "scan_s": time.perf_counter() - t2,
    }
    return found, checked, stats


def _csr(n: int, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric adjacency as (indptr, indices), neighbours of each node ascending."""
    if len(pairs) == 0:
        return np.zeros(n + 1, np.int64), np.zeros(0, np.int64)
    src = np.concatenate([pairs[:, 0], pairs[:, 1]]).astype(np.int64)
    dst = np.concatenate([pairs[:, 1], pairs[:, 0]]).astype(np.int64)
    order = np.lexsort((dst, src))
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    return indptr, dst[order]


def _two_hop_candidates(n: int, pairs: np.ndarray, max_degree: int) -> np.ndarray:
    if len(pairs) == 0:
        return np.zeros((0, 2), np.int64)
    indptr, nbrs = _csr(n, pairs)
    deg = np.diff(indptr)
    centres = np.nonzero((deg >= 2) & (deg <= max_degree))[0]
    ii: list[np.ndarray] = []
    jj: list[np.ndarray] = []
    for d in np.unique(deg[centres]):  # vectorized per degree: all (a, b) neighbour pairs of each centre
        group = centres[deg[centres] == d]
        nb = nbrs[indptr[group][:, None] + np.arange(d)[None, :]]
        a, b = np.triu_indices(int(d), 1)
        ii.append(nb[:, a].ravel())
        jj.append(nb[:, b].ravel())
    if not ii:
        return np.zeros((0, 2), np.int64)
    cand = _unique_pairs(np.concatenate(ii), np.concatenate(jj), n)
    # drop candidates already known to be edges
    known = np.asarray(pairs[:, 0], np.int64) * n + pairs[:, 1]
    ckey = cand[:, 0] * n + cand[:, 1]
    return cand[~np.isin(ckey, known, assume_unique=True)]


def above_threshold_pairs(
    vectors: np.ndarray, threshold: float, method: str = "auto", **options: Any
) -> tuple[np.ndarray, np.ndarray, dict]:
    """All unordered pairs (i < j) with cosine similarity > threshold, their similarities and stats.

    `vectors` must already be unit rows (see `unit_rows`); they are used as float32 without a copy when they
    are float32 C-contiguous. method: "exact", "index" (options: n_cells, n_probe, per_cell, iters, closure,
    closure_max_degree, seed) or "auto" (exact up to AUTO_EXACT_MAX_ROWS rows, index above).
    Returns (pairs int64 (E, 2) sorted by (i, j), similarities float32 (E,), stats).
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = x.shape[0]
    if method == "auto":
        method = "exact" if n <= AUTO_EXACT_MAX_ROWS else "index"
    t0 = time.perf_counter()
    stats: dict[str, Any] = {"method": method, "n": n}
    if method == "exact":
        found, checked = _exact_pairs(x, threshold, **options)
    elif method == "index":
        found, checked, extra = _ivf_pairs(x, threshold, **options)
        stats.update(extra)
    else:
        raise ValueError(f"unknown method {method!r} (exact, index or auto)")
    if found:
        gi = np.concatenate([f[0] for f in found]).astype(np.int64)
        gj = np.concatenate([f[1] for f in found]).astype(np.int64)
        gs = np.concatenate([f[2] for f in found]).astype(np.float32)
    else:
        gi = gj = np.zeros(0, np.int64)
        gs = np.zeros(0, np.float32)
    lo, hi = np.minimum(gi, gj), np.maximum(gi, gj)
    key, first = np.unique(lo * n + hi, return_index=True)
    pairs = np.stack([key // n, key % n], axis=1) if len(key) else np.zeros((0, 2), np.int64)
    stats.update({"candidates": int(checked), "edges": len(pairs), "seconds": time.perf_counter() - t0})
    return pairs, gs[first], stats


# --------------------------------------------------------------------------------------------- decisions
def strict_keep(n: int, pairs: np.ndarray) -> np.ndarray:
    """Order-stable greedy: row i is kept unless some kept row j < i is its neighbour. O(n + E)."""
    kept = np.ones(n, dtype=bool)
    if len(pairs) == 0:
        return kept
    p = np.asarray(pairs, dtype=np.int64)
    lo, hi = np.minimum(p[:, 0], p[:, 1]), np.maximum(p[:, 0], p[:, 1])
    order = np.lexsort((lo, hi))  # group earlier neighbours by the later row, later rows ascending
    lo, hi = lo[order], hi[order]
    rows, starts = np.unique(hi, return_index=True)
    ends = np.append(starts[1:], len(hi))
    # only rows with an earlier neighbour can be dropped; they are decided in ascending order
    for row, s, e in zip(rows.tolist(), starts.tolist(), ends.tolist(), strict=True):
        if kept[lo[s:e]].any():
            kept[row] = False
    return kept


def fmr_keep(n: int, pairs: np.ndarray, target_fmr: float) -> np.ndarray:
    """FLUXSynID's rule on the sparse graph: while the ordered-pair FMR among the remaining rows exceeds the
    target, remove the remaining row of highest degree (ties: lowest index, as numpy argmax). Lazy max-heap
    keyed (-degree, index): O((n + E) log n)."""
    kept = np.ones(n, dtype=bool)
    if len(pairs) == 0 or n < 2:
        return kept
    p = np.asarray(pairs, dtype=np.int64)
    p = _unique_pairs(p[:, 0], p[:, 1], n)
    indptr, nbrs = _csr(n, p)
    deg = np.diff(indptr).tolist()
    indptr_l = indptr.tolist()
    nbrs_l = nbrs.tolist()
    edges = len(p)
    remaining = n
    heap = [(-d, v) for v, d in enumerate(deg) if d > 0]
    heapq.heapify(heap)
    while remaining >= 2 and (2 * edges) / (remaining * (remaining - 1)) > target_fmr:
        neg, v = heapq.heappop(heap)
        if not kept[v] or -neg != deg[v]:
            continue  # stale entry
        kept[v] = False
        remaining -= 1
        edges -= deg[v]
        deg[v] = 0
        for u in nbrs_l[indptr_l[v] : indptr_l[v + 1]]:
            if kept[u]:
                deg[u] -= 1
                if deg[u] > 0:
                    heapq.heappush(heap, (-deg[u], u))
    return kept


def _fmr(n_kept: int, kept_edges: int) -> float:
    return 0.0 if n_kept < 2 else (2 * kept_edges) / (n_kept * (n_kept - 1))


# --------------------------------------------------------------------------------------------- dense oracles
def _dense_adjacency(vectors: np.ndarray, threshold: float) -> np.ndarray:
    x = unit_rows(vectors)
    if x.shape[0] > DENSE_MAX_ROWS:
        raise ValueError(f"dense filtering holds n x n matrices; {x.shape[0]} rows > {DENSE_MAX_ROWS}")
    adj = (x @ x.T) > threshold
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
        fmr = 0.0 if m < 2 else int(degrees.sum()) / (m * (m - 1))
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
    **options: Any,
) -> dict:
    """Filter identities (rows, in identity order) by cosine similarity.

    mode "strict": keep a row unless it is > threshold to a kept row before it. mode "fmr": FLUXSynID's rule
    with `target_fmr`. `options` go to the search (see above_threshold_pairs). `normalized=True` promises
    unit float32 rows and skips the normalizing copy.
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
    x = np.ascontiguousarray(vectors, np.float32) if normalized else unit_rows(vectors)
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
    seconds["report"] = time.perf_counter() - t
    kept_rows = np.nonzero(kept)[0]
    return {
        "kept": kept_rows.tolist(),
        "mode": mode,
        "threshold": float(threshold),
        "target_fmr": None if target_fmr is None else float(target_fmr),
        "n": n,
        "n_kept": len(kept_rows),
        "edges": len(pairs),
        "method": stats["method"],
        "search": {k: v for k, v in stats.items() if k not in ("method", "n", "edges")},
        "fmr_before": _fmr(n, len(pairs)),
        "fmr_after": _fmr(len(kept_rows), int(both.sum())),
        "nearest": nearest,
        "seconds": seconds,
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
        return unit_rows(arr)  # the one in-memory float32 copy, normalized in place
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def filter_vectors_file(
    vectors_path: str, threshold: float, mode: str, target_fmr: float | None, out_path: str
) -> dict:
    """Filter the rows of a .npy file and write the result JSON ({"kept": [...], ...stats}) atomically."""
    x = load_vectors(vectors_path)
    result = filter_vectors(x, threshold, mode=mode, target_fmr=target_fmr, normalized=True)
    result["vectors_path"] = str(vectors_path)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(result, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return result
