"""The above-threshold pairs of a set of unit rows, without the dense n x n similarity matrix.

* "exact": blocked float32 products over the upper triangle (memory block x col_block floats, never n x n);
* "index": an inverted-file index of our own in numpy: spherical k-means cells, each vector probes its few
  nearest cells, every candidate is scored exactly, then a two-hop closure re-checks neighbours of neighbours.

Why not LanceDB's vector index for the search: it answers one query vector at a time. On the 2-core dev box an
IVF_PQ index over 20k x 512 took 117 s to build and answered 64 queries/s (nprobes 8, refine 10): ~4 h for the
1M self-join, against ~8 min for the numpy IVF here, which scores whole cells with one matrix product.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from synid_assets.core.filtering.rules import adjacency_csr, unique_pairs
from synid_assets.core.filtering.similarity import unit_rows

# Below this many rows "auto" uses the exact blocked search: it is exact and, at this size, about as fast as
# building an index (measured on the 2-core dev box: 15k exact ~3 s; see benchmarks/filter_scale.py).
AUTO_EXACT_MAX_ROWS = 20_000


def _pair_sims(x: np.ndarray, pairs: np.ndarray, step: int = 262_144) -> np.ndarray:
    out = np.empty(len(pairs), dtype=np.float32)
    for s in range(0, len(pairs), step):
        p = pairs[s : s + step]
        out[s : s + step] = np.einsum("ij,ij->i", x[p[:, 0]], x[p[:, 1]])
    return out


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
        empty = ~sums.any(axis=1)
        sums[empty] = sample[rng.choice(len(sample), size=int(empty.sum()), replace=False)]
        cent = unit_rows(sums)
    return cent


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
        pairs = unique_pairs(
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
        empty = ~sums.any(axis=1)
        sums[empty] = cent[empty]
        cent = unit_rows(sums)
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


def _two_hop_candidates(n: int, pairs: np.ndarray, max_degree: int) -> np.ndarray:
    if len(pairs) == 0:
        return np.zeros((0, 2), np.int64)
    indptr, nbrs = adjacency_csr(n, pairs)
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
    cand = unique_pairs(np.concatenate(ii), np.concatenate(jj), n)
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

