"""The above-threshold pairs of a set of unit rows, without the dense n x n similarity matrix.

* "exact" (exact.py): blocked torch products over the upper triangle on the CPU or a GPU, re-scored in float64;
* "index": an inverted-file index of our own in numpy: spherical k-means cells over the raw rows and over the
  whitened rows, each row probes its 16 nearest cells of each, every candidate is scored exactly, then a
  two-hop closure re-checks neighbours of neighbours.

Why not FAISS, hnswlib or usearch (measured on issue 13's k^-1 shape, 200k x 512, on the shared 2-core box):
a FAISS IVF partition (faiss.Kmeans, spherical, 670 cells) has the same recall as ours per probe, raw or
centred (16 probes: 0.923 / 0.923; 64: 0.985 / 0.986), and its range search scans one query at a time; the win
is the whitened partition, which FAISS does not give. usearch (f16, connectivity 16, expansion 100) had not
finished building 200k rows after 4.5 min, so a 1M graph (built row by row) does not fit the 10-minute target;
hnswlib, a graph built the same way, was not run to the end.

Why not LanceDB's vector index for the search: it answers one query vector at a time. On the 2-core dev box an
IVF_PQ index over 20k x 512 took 117 s to build and answered 64 queries/s (nprobes 8, refine 10): ~4 h for the
1M self-join, against ~8 min for the numpy IVF here, which scores whole cells with one matrix product.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from synid_assets.core.filtering.exact import MARGINS, cpu_exact_seconds, cuda_available, exact_pairs, rescore
from synid_assets.core.filtering.rules import adjacency_csr, unique_pairs
from synid_assets.core.filtering.similarity import unit_rows

# "auto" searches exactly up to this many rows whatever the estimate (a few seconds), and above it while the
# exact search's estimated time on this CPU fits the budget (seconds; $SYNID_FILTER_EXACT_BUDGET_S overrides).
AUTO_EXACT_MAX_ROWS = 20_000
EXACT_OPTIONS = ("device", "precision", "block", "col_block")
AUTO_EXACT_BUDGET_S = float(os.environ.get("SYNID_FILTER_EXACT_BUDGET_S", "300"))


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
    spaces: tuple[str, ...] | None = None,
    closure: int = 2,
    closure_max_degree: int = 64,
    seed: int = 0,
) -> tuple[list, int, dict]:
    """One IVF partition per entry of `spaces`, their pairs united, then a two-hop closure.

    "raw" partitions the unit rows themselves; "whitened" partitions them after centring on the mean and
    scaling each principal direction to unit variance (rows re-normalized). Every candidate is scored on the
    original unit rows either way. Why two spaces (measured on issue 13's k^-1 shape, 200k rows, threshold
    0.70, 10,034 true pairs of 3,972 sampled rows, before the closure): a raw partition misses the planted
    near-duplicates, whose offsets run along the high-variance directions the cells cut (16 probes: 750 of 772
    misses planted; 32 probes: 353 missed, all planted), while random pairs above the threshold, between rows
    far out along the same leading directions, share raw cells. Whitening makes those offsets look like
    isotropic noise: raw + whitened at 16 probes each missed 68 (scan 12.5% of all pairs), where raw alone at
    32 probes (scan 14.7%) missed 353 and a second raw table barely helps.
    """
    n = x.shape[0]
    if spaces is None:
        spaces = ("raw", "whitened")
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    checked = 0
    stats: dict[str, Any] = {"spaces": list(spaces)}
    for table, space in enumerate(spaces):
        z = x if space == "raw" else _whitened(x, np.random.default_rng(seed + 17 * table))
        f, c, st = _ivf_table(z, x, threshold, n_cells, n_probe, per_cell, iters, refit, seed + 1000 * table)
        del z
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
        sims = rescore(x, cand)
        closure_checked += len(cand)
        hit = sims > threshold
        if not hit.any():
            break
        found.append((cand[hit, 0], cand[hit, 1], sims[hit]))
    stats["closure_checked"] = closure_checked
    stats["closure_s"] = time.perf_counter() - t3
    return found, checked + closure_checked, stats


def _whitened(x: np.ndarray, rng: np.random.Generator, sample: int = 20_000, block: int = 65_536) -> np.ndarray:
    """Unit rows of x centred on its mean and scaled to unit variance along each principal direction (from a
    sample; eigenvalues floored at 1e-6 of the largest so empty directions do not blow up)."""
    rows = x[np.sort(rng.choice(x.shape[0], size=min(x.shape[0], sample), replace=False))].astype(np.float64)
    mean = rows.mean(axis=0)
    eigval, eigvec = np.linalg.eigh(np.cov((rows - mean).T))
    scale = (eigvec / np.sqrt(np.maximum(eigval, 1e-6 * eigval.max()))).astype(np.float32)
    z = np.empty_like(x)
    for s in range(0, x.shape[0], block):
        z[s : s + block] = (x[s : s + block] - mean.astype(np.float32)) @ scale
    return unit_rows(z, copy=False)


def _ivf_table(
    z: np.ndarray,
    x: np.ndarray,
    threshold: float,
    n_cells: int | None,
    n_probe: int | None,
    per_cell: int,
    iters: int,
    refit: int,
    seed: int,
) -> tuple[list, int, dict]:
    """Asymmetric IVF join: cells partition `z` (the rows in the table's space); every row lives in its nearest
    cell and probes its n_probe nearest cells; all (prober, resident) pairs of a cell are scored on the unit rows
    `x`, so only the candidate generation is approximate."""
    n = x.shape[0]
    if n_cells is None:
        # assignment costs ~ n * n_cells, the scan ~ n * n_probe * n / n_cells: balanced near 1.5 sqrt(n)
        n_cells = int(np.clip(round(1.5 * np.sqrt(n)), 8, 4096))
    n_cells = max(1, min(n_cells, n // 4 or 1))
    if n_probe is None:
        n_probe = 16  # see _ivf_pairs
    n_probe = min(n_probe, n_cells)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    cent = _kmeans(z, n_cells, rng, per_cell, iters)
    t1 = time.perf_counter()
    for _ in range(refit):
        # Lloyd passes over ALL rows (the sample-trained cells do not see most near-duplicate groups; centroids
        # refit on every row pull each group's members towards shared cells, which is what recall needs)
        home = _top_cells(z, cent, 1)[:, 0]
        sums = np.zeros_like(cent)
        _scatter_sum(sums, home, z)
        empty = ~sums.any(axis=1)
        sums[empty] = cent[empty]
        cent = unit_rows(sums)
        del home, sums
    t1b = time.perf_counter()
    probes = _top_cells(z, cent, n_probe)
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
    cut = threshold - MARGINS["float32"]
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
            r, c = np.nonzero(sims > cut)  # float32 products: re-scored in float64 at the end
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
    """All unordered pairs (i < j) with similarity > threshold (float64, see exact.rescore), their similarities
    and stats.

    `vectors` must already be unit rows (see `unit_rows`); they are used as float32 without a copy when they
    are float32 C-contiguous. method: "exact" (options: device, precision, block, col_block), "index" (options:
    see _ivf_pairs) or "auto": exact on a GPU, and on the CPU where its estimated time fits `exact_budget_s`
    (default AUTO_EXACT_BUDGET_S) or n <= AUTO_EXACT_MAX_ROWS; the index otherwise.
    Returns (pairs int64 (E, 2) sorted by (i, j), similarities float64 (E,), stats).
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = x.shape[0]
    budget = float(options.pop("exact_budget_s", AUTO_EXACT_BUDGET_S))
    stats: dict[str, Any] = {"n": n}
    if method == "auto":
        method, stats["auto"] = choose_method(n, x.shape[1], budget, options.get("device"))
    stats["method"] = method
    t0 = time.perf_counter()
    # each search takes its own options: callers of "auto" may pass both sets
    exact_options = {k: v for k, v in options.items() if k in EXACT_OPTIONS}
    index_options = {k: v for k, v in options.items() if k not in EXACT_OPTIONS}
    if method == "exact":
        pairs, sims, extra = exact_pairs(x, threshold, **exact_options)
        stats.update(extra)
        stats.update({"edges": len(pairs), "seconds": time.perf_counter() - t0})
        return pairs, sims, stats
    if method != "index":
        raise ValueError(f"unknown method {method!r} (exact, index or auto)")
    found, checked, extra = _ivf_pairs(x, threshold, **index_options)
    stats.update(extra)
    gi = np.concatenate([f[0] for f in found]).astype(np.int64) if found else np.zeros(0, np.int64)
    gj = np.concatenate([f[1] for f in found]).astype(np.int64) if found else np.zeros(0, np.int64)
    cand = unique_pairs(gi, gj, n)
    sims = rescore(x, cand)
    above = sims > threshold
    stats.update({"candidates": int(checked), "edges": int(above.sum()), "seconds": time.perf_counter() - t0})
    return cand[above], sims[above], stats


def choose_method(n: int, dim: int, budget_s: float, device: str | None = None) -> tuple[str, str]:
    """("exact" or "index", why): exact on a GPU, and on the CPU when its estimated time fits the budget."""
    if device is None and cuda_available() or device is not None and not device.startswith("cpu"):
        return "exact", "a GPU is available: exact"
    if n <= AUTO_EXACT_MAX_ROWS:
        return "exact", f"n <= {AUTO_EXACT_MAX_ROWS}: exact"
    estimate = cpu_exact_seconds(n, dim)
    if estimate <= budget_s:
        return "exact", f"exact search estimated at {estimate:.0f} s <= budget {budget_s:.0f} s"
    return "index", f"exact search estimated at {estimate:.0f} s > budget {budget_s:.0f} s: index"
