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
# Probes per row and space: PROBE_SHARE of the cells, at least MIN_PROBES. The recall of a probe count depends
# on the share of cells probed more than on their number (issue 13's k^-1 shape at 200k and 1M), so a fixed
# share keeps recall as n grows, at a scan cost growing as n^2 * PROBE_SHARE.
PROBE_SHARE = 0.024
MIN_PROBES = 16
_SCAN_ROWS = 16_384  # probers per product block


def _bf16(x: np.ndarray) -> Any:
    """A bfloat16 torch copy of float32 rows: the index's products run on it (AMX / AVX512-BF16 where the CPU
    has them: ~3x float32 on this machine); only candidate generation sees its rounding (MARGINS["bfloat16"])."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(torch.bfloat16)


def _top_cells(z: Any, centroids: np.ndarray, n_probe: int, block: int = 16_384) -> np.ndarray:
    """(n, n_probe) int32 cell ids per row of the bfloat16 tensor z, nearest first (cosine to unit centroids)."""
    import torch

    cent = _bf16(centroids)
    n = z.shape[0]
    out = np.empty((n, n_probe), dtype=np.int32)
    for s in range(0, n, block):
        scores = (z[s : s + block] @ cent.T).float()
        out[s : s + block] = torch.topk(scores, n_probe, dim=1, sorted=True).indices.numpy()
    return out


def _kmeans(z: Any, n_cells: int, rng: np.random.Generator, per_cell: int, iters: int) -> np.ndarray:
    """Spherical k-means on a sample of the bfloat16 rows z; empty cells are re-seeded from random sample rows."""
    n = z.shape[0]
    sample_idx = np.sort(rng.choice(n, size=min(n, n_cells * per_cell), replace=False))
    sample = z[sample_idx].float().numpy()
    cent = sample[rng.choice(len(sample), size=n_cells, replace=False)].copy()
    zs = z[sample_idx]
    for _ in range(iters):
        assign = _top_cells(zs, cent, 1)[:, 0]
        sums = np.zeros_like(cent)
        _scatter_sum(sums, assign, sample)
        empty = ~sums.any(axis=1)
        sums[empty] = sample[rng.choice(len(sample), size=int(empty.sum()), replace=False)]
        cent = unit_rows(sums)
    return cent


def _scatter_sum(sums: np.ndarray, assign: np.ndarray, rows: Any, step: int = 65_536) -> None:
    """sums[k] += sum of rows assigned to k, blockwise (sort a block, reduce runs) so no n-sized copy is made."""
    for s in range(0, rows.shape[0], step):
        a = assign[s : s + step]
        block = rows[s : s + step]
        block = block if isinstance(block, np.ndarray) else block.float().numpy()
        order = np.argsort(a, kind="stable")
        cells, starts = np.unique(a[order], return_index=True)
        sums[cells] += np.add.reduceat(block[order], starts, axis=0)


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
) -> tuple[np.ndarray, np.ndarray, int, dict]:
    """One IVF partition per entry of `spaces`, their pairs united, then a two-hop closure.

    "raw" partitions the unit rows themselves; "whitened" partitions them after centring on the mean and
    scaling each principal direction to unit variance (rows re-normalized). Every candidate is scored on the
    original unit rows either way. Why two spaces (measured on issue 13's k^-1 shape, 200k rows, threshold
    0.70, 10,034 true pairs of 3,972 sampled rows, before the closure): a raw partition misses the planted
    near-duplicates, whose offsets run along the high-variance directions the cells cut (16 probes: 750 of 772
    misses planted; 32 probes: 353 missed, all planted), while random pairs above the threshold, between rows
    far out along the same leading directions, share raw cells. Whitening makes those offsets look like
    isotropic noise: raw + whitened at 16 probes each missed 68 (scan 12.5% of all pairs), where raw alone at
    32 probes (scan 14.7%) missed 353 and a second raw table barely helps. Centring the raw space first
    changed nothing (k^-1 at a 10% share: 2 vs 1 of 827 sampled pairs missed at 2% + 2% of the cells).
    Returns (pairs above the threshold (E, 2), their float64 similarities, similarities scored, stats).
    """
    n = x.shape[0]
    if spaces is None:
        spaces = ("raw", "whitened")
    xb = _bf16(x)
    pairs = np.zeros((0, 2), np.int64)
    checked = 0
    stats: dict[str, Any] = {"spaces": list(spaces)}
    for table, space in enumerate(spaces):
        zb = xb if space == "raw" else _whitened(x, np.random.default_rng(seed + 17 * table))
        cand, c, st = _ivf_table(zb, xb, threshold, n_cells, n_probe, per_cell, iters, refit, seed + 1000 * table)
        del zb
        checked += c
        t = time.perf_counter()
        pairs = _above(x, np.concatenate([pairs, cand]), threshold)
        st["rescore_s"] = time.perf_counter() - t
        for key, value in st.items():
            stats[key] = stats.get(key, 0) + value if key.endswith("_s") else value
    del xb
    t3 = time.perf_counter()
    # Two-hop closure: near-duplicate groups are nearly transitive, so a pair missed by the cells is usually
    # a neighbour of a neighbour; score those exactly (cheap: sum of squared degrees, hubs skipped).
    closure_checked = 0
    for _ in range(closure):
        cand = _two_hop_candidates(n, pairs, closure_max_degree)
        closure_checked += len(cand)
        more = _above(x, cand, threshold)
        if len(more) == 0:
            break
        pairs = _above(x, np.concatenate([pairs, more]), threshold)
    stats["closure_checked"] = closure_checked
    stats["closure_s"] = time.perf_counter() - t3
    sims = rescore(x, pairs)
    return pairs, sims, checked + closure_checked, stats


def _above(x: np.ndarray, cand: np.ndarray, threshold: float) -> np.ndarray:
    """The unique (i < j) pairs of `cand` whose float64 similarity is above the threshold, sorted."""
    cand = unique_pairs(cand[:, 0], cand[:, 1], x.shape[0])
    return cand[rescore(x, cand) > threshold]


def _whitened(x: np.ndarray, rng: np.random.Generator, sample: int = 20_000, block: int = 65_536) -> Any:
    """Unit rows of x centred on its mean and scaled to unit variance along each principal direction (from a
    sample; eigenvalues floored at 1e-6 of the largest so empty directions do not blow up), as bfloat16 (written
    block by block: no second float32 copy of all rows)."""
    import torch

    rows = x[np.sort(rng.choice(x.shape[0], size=min(x.shape[0], sample), replace=False))].astype(np.float64)
    mean = rows.mean(axis=0)
    eigval, eigvec = np.linalg.eigh(np.cov((rows - mean).T))
    scale = (eigvec / np.sqrt(np.maximum(eigval, 1e-6 * eigval.max()))).astype(np.float32)
    z = torch.empty(x.shape, dtype=torch.bfloat16)
    for s in range(0, x.shape[0], block):
        z[s : s + block] = torch.from_numpy(unit_rows((x[s : s + block] - mean.astype(np.float32)) @ scale, copy=False))
    return z


def _ivf_table(
    zb: Any,
    xb: Any,
    threshold: float,
    n_cells: int | None,
    n_probe: int | None,
    per_cell: int,
    iters: int,
    refit: int,
    seed: int,
) -> tuple[np.ndarray, int, dict]:
    """Asymmetric IVF join: cells partition `zb` (the rows in the table's space, bfloat16); every row lives in
    its nearest cell and probes its n_probe nearest cells; all (prober, resident) pairs of a cell are scored on
    the bfloat16 unit rows `xb` and kept when above threshold - MARGINS["bfloat16"], to be re-scored in float64.
    Returns (candidate pairs (C, 2), similarities scored, stats)."""
    import torch

    n = xb.shape[0]
    if n_cells is None:
        # assignment costs ~ n * n_cells, the scan ~ n * n_probe * n / n_cells: balanced near 1.5 sqrt(n)
        n_cells = int(np.clip(round(1.5 * np.sqrt(n)), 8, 4096))
    n_cells = max(1, min(n_cells, n // 4 or 1))
    if n_probe is None:
        n_probe = max(MIN_PROBES, int(np.ceil(PROBE_SHARE * n_cells)))
    n_probe = min(n_probe, n_cells)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    cent = _kmeans(zb, n_cells, rng, per_cell, iters)
    t1 = time.perf_counter()
    for _ in range(refit):
        # Lloyd passes over ALL rows (the sample-trained cells do not see most near-duplicate groups; centroids
        # refit on every row pull each group's members towards shared cells, which is what recall needs)
        home = _top_cells(zb, cent, 1)[:, 0]
        sums = np.zeros_like(cent)
        _scatter_sum(sums, home, zb)
        empty = ~sums.any(axis=1)
        sums[empty] = cent[empty]
        cent = unit_rows(sums)
        del home, sums
    t1b = time.perf_counter()
    probes = _top_cells(zb, cent, n_probe)
    home = probes[:, 0].copy()
    t2 = time.perf_counter()
    # residents and probers of each cell as CSR lists
    res_order = np.argsort(home, kind="stable").astype(np.int64)
    res_bounds = np.searchsorted(home[res_order], np.arange(n_cells + 1))
    flat = probes.ravel()
    prb_order = np.argsort(flat, kind="stable")
    prb_bounds = np.searchsorted(flat[prb_order], np.arange(n_cells + 1))
    prb_rows = torch.from_numpy((prb_order // n_probe).astype(np.int64))
    res_rows = torch.from_numpy(res_order)
    del flat, prb_order, probes
    found: list[np.ndarray] = []
    checked = 0
    cut = threshold - MARGINS["bfloat16"]
    for k in range(n_cells):
        residents = res_rows[res_bounds[k] : res_bounds[k + 1]]
        probers = prb_rows[prb_bounds[k] : prb_bounds[k + 1]]
        if len(residents) == 0 or len(probers) == 0:
            continue
        res_vecs = xb.index_select(0, residents).T.contiguous()
        for s in range(0, len(probers), _SCAN_ROWS):
            pr = probers[s : s + _SCAN_ROWS]
            hits = torch.nonzero(xb.index_select(0, pr) @ res_vecs > cut)
            checked += len(pr) * len(residents)
            if len(hits):
                found.append(torch.stack([pr[hits[:, 0]], residents[hits[:, 1]]], dim=1).numpy())
    stats = {
        "n_cells": n_cells,
        "n_probe": n_probe,
        "train_s": t1 - t0,
        "refit_s": t1b - t1,
        "assign_s": t2 - t1b,
        "scan_s": time.perf_counter() - t2,
    }
    return (np.concatenate(found) if found else np.zeros((0, 2), np.int64)), checked, stats


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
    pairs, sims, checked, extra = _ivf_pairs(x, threshold, **index_options)
    stats.update(extra)
    stats.update({"candidates": int(checked), "edges": len(pairs), "seconds": time.perf_counter() - t0})
    return pairs, sims, stats


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
