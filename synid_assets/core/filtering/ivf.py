"""SynID's inverted-file index for the above-threshold self-join of unit rows (the "index" search).

* Cells: spherical k-means in two spaces, the unit rows as they are ("raw") and whitened (centred, each principal
  direction scaled to unit variance); every row lives in its nearest cell of each and probes its nearest cells.
* Scan: each cell's (prober, resident) pairs in one bfloat16 product (AMX / AVX512-BF16 on this CPU, ~2.5x the
  float32 rate); candidates above threshold - MARGINS["bfloat16"] are re-scored in float64 (exact.rescore), so
  only candidate generation is approximate: no pair is reported that is not above the threshold.
* Two-hop closure: near-duplicate groups are nearly transitive, so neighbours of neighbours are scored too.
* Probes are set by measurement, not fixed: an exact search of CALIBRATION_ROWS sampled rows gives the true pairs
  of those rows; the probes double (only the new probe ranks are scanned) until the index finds RECALL_TARGET of
  them, or the next round would overrun the time budget. The result says which probe count ran and the
  calibration recall; scale.py reports a recall estimated on a different sample.

Why two spaces (issue 13's k^-1 shape, 200k rows): a raw partition misses planted near-duplicates, whose offsets
run along the high-variance directions the cells cut, while random pairs above the threshold share raw cells;
whitening makes those offsets look like isotropic noise. Raw + whitened at 2% + 2% of the cells missed 1 of 827
sampled pairs at a 10% neighbour share (threshold 0.767); raw alone at 4% missed 42; centring the raw space
first changed nothing (2 of 827). Probing by a bound on the centroid score instead of a count (every cell
within delta of the best) scanned more for the same recall (k^-0.5, 20% share: 14.3% of pairs for 0.982,
against 11.8% for 0.983 with 64 probes).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synid_assets.core.filtering.exact import MARGINS, block_hits, query_pairs, rescore
from synid_assets.core.filtering.rules import adjacency_csr, unique_pairs
from synid_assets.core.filtering.similarity import unit_rows

# First round: PROBE_SHARE of the cells per space, at least MIN_PROBES; recall depends on the share of cells
# probed more than on their number, so the first round's recall holds roughly as n grows.
PROBE_SHARE = 0.024
MIN_PROBES = 16
RECALL_TARGET = 0.999
CALIBRATION_ROWS = 2000
# seconds the index may spend before it stops adding probes ($SYNID_FILTER_INDEX_BUDGET_S overrides)
INDEX_BUDGET_S = float(os.environ.get("SYNID_FILTER_INDEX_BUDGET_S", "480"))
_SCAN_ROWS = 16_384  # probers per product block
_RANKS_PER_PASS = 48  # probe ranks assigned at once (bounds the prober lists' memory at 1M rows)


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


@dataclass
class _Table:
    """One partition: unit centroids of `zb` (bfloat16 rows in the table's space) and its residents as CSR."""

    zb: Any
    cent: np.ndarray
    res_rows: Any = field(repr=False)
    res_bounds: np.ndarray = field(repr=False)

    @classmethod
    def build(cls, zb: Any, n_cells: int, per_cell: int, iters: int, refit: int, seed: int) -> _Table:
        import torch

        cent = _kmeans(zb, n_cells, np.random.default_rng(seed), per_cell, iters)
        for _ in range(refit):
            # Lloyd passes over ALL rows (the sample-trained cells do not see most near-duplicate groups; centroids
            # refit on every row pull each group's members towards shared cells, which is what recall needs)
            home = _top_cells(zb, cent, 1)[:, 0]
            sums = np.zeros_like(cent)
            _scatter_sum(sums, home, zb)
            empty = ~sums.any(axis=1)
            sums[empty] = cent[empty]
            cent = unit_rows(sums)
        home = _top_cells(zb, cent, 1)[:, 0]
        order = np.argsort(home, kind="stable").astype(np.int64)
        bounds = np.searchsorted(home[order], np.arange(n_cells + 1))
        return cls(zb, cent, torch.from_numpy(order), bounds)

    def scan(self, xb: Any, cut: float, p0: int, p1: int) -> tuple[list[np.ndarray], int]:
        """Candidate pairs (float32 score above `cut`) of every row with the residents of its probe ranks
        [p0, p1), and how many pairs were scored."""
        import torch

        found: list[np.ndarray] = []
        checked = 0
        n_cells = len(self.cent)
        for r0 in range(p0, p1, _RANKS_PER_PASS):
            r1 = min(p1, r0 + _RANKS_PER_PASS)
            flat = _top_cells(self.zb, self.cent, r1)[:, r0:].ravel()
            prb_order = np.argsort(flat, kind="stable")
            prb_bounds = np.searchsorted(flat[prb_order], np.arange(n_cells + 1))
            prb_rows = torch.from_numpy((prb_order // (r1 - r0)).astype(np.int64))
            del flat, prb_order
            for k in range(n_cells):
                residents = self.res_rows[self.res_bounds[k] : self.res_bounds[k + 1]]
                probers = prb_rows[prb_bounds[k] : prb_bounds[k + 1]]
                if len(residents) == 0 or len(probers) == 0:
                    continue
                res_vecs = xb.index_select(0, residents).T.contiguous()
                for s in range(0, len(probers), _SCAN_ROWS):
                    pr = probers[s : s + _SCAN_ROWS]
                    sims = xb.index_select(0, pr) @ res_vecs
                    checked += sims.numel()
                    hits = block_hits(sims, cut)
                    if len(hits):
                        found.append(torch.stack([pr[hits[:, 0]], residents[hits[:, 1]]], dim=1).numpy())
        return found, checked


def ivf_pairs(
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
    recall_target: float = RECALL_TARGET,
    calibration_rows: int = CALIBRATION_ROWS,
    budget_s: float | None = None,
    max_probe_share: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, int, dict]:
    """The pairs of unit rows `x` above `threshold` that the index finds (see the module docstring).

    `n_probe` fixes the probes (one round, no calibration); by default the first round probes PROBE_SHARE of the
    cells and rounds double it until the calibration recall reaches `recall_target`, the probes reach
    `max_probe_share` of the cells, or the next round's predicted time would pass `budget_s`.
    Returns (pairs (E, 2) sorted, their float64 similarities, similarities scored, stats).
    """
    t_start = time.perf_counter()
    budget_s = INDEX_BUDGET_S if budget_s is None else budget_s
    n = x.shape[0]
    if spaces is None:
        spaces = ("raw", "whitened")
    if n_cells is None:
        # assignment costs ~ n * n_cells, the scan ~ n * n_probe * n / n_cells: balanced near 1.5 sqrt(n)
        n_cells = int(np.clip(round(1.5 * np.sqrt(n)), 8, 4096))
    n_cells = max(1, min(n_cells, n // 4 or 1))
    fixed = n_probe is not None
    p1 = min(n_cells, n_probe if fixed else max(MIN_PROBES, int(np.ceil(PROBE_SHARE * n_cells))))
    stats: dict[str, Any] = {"spaces": list(spaces), "n_cells": n_cells, "rounds": []}
    t = time.perf_counter()
    xb = _bf16(x)
    tables = []
    for i, space in enumerate(spaces):
        zb = xb if space == "raw" else _whitened(x, np.random.default_rng(seed + 17 * i))
        tables.append(_Table.build(zb, n_cells, per_cell, iters, refit, seed + 1000 * i))
    stats["build_s"] = time.perf_counter() - t
    truth = np.zeros((0, 2), np.int64)
    if not fixed:
        t = time.perf_counter()
        # a sample of its own, not the one scale.sampled_figures reports recall on
        sample = np.random.default_rng(seed + 104_729).choice(n, size=min(n, calibration_rows), replace=False)
        truth = query_pairs(x, sample, threshold)
        stats["calibration_s"] = time.perf_counter() - t
    pairs = np.zeros((0, 2), np.int64)
    checked, p0, scan_s = 0, 0, 0.0
    cut = threshold - MARGINS["bfloat16"]
    while True:
        t = time.perf_counter()
        for table in tables:
            found, c = table.scan(xb, cut, p0, p1)
            checked += c
            pairs = _above(x, np.concatenate([pairs, *found]), threshold)
        scan_s += time.perf_counter() - t
        pairs, closure_checked = _closure(x, pairs, threshold, closure, closure_max_degree)
        checked += closure_checked
        recall = _recall(truth, pairs, n)
        stats["rounds"].append({"n_probe": p1, "calibration_recall": recall, "seconds": time.perf_counter() - t})
        p_next = min(n_cells, 2 * p1, max(p1, int(max_probe_share * n_cells)))
        predicted = scan_s / p1 * (p_next - p1)
        if fixed or recall >= recall_target or p_next <= p1 or time.perf_counter() - t_start + predicted > budget_s:
            break
        p0, p1 = p1, p_next
    stats.update({"n_probe": p1, "scan_s": scan_s})
    if not fixed:
        stats["calibration"] = {"rows": min(n, calibration_rows), "pairs": len(truth), "recall": recall}
    return pairs, rescore(x, pairs), checked, stats


def _recall(truth: np.ndarray, pairs: np.ndarray, n: int) -> float:
    if len(truth) == 0:
        return 1.0
    return float(np.isin(truth[:, 0] * n + truth[:, 1], pairs[:, 0] * n + pairs[:, 1]).mean())


def _closure(x: np.ndarray, pairs: np.ndarray, threshold: float, hops: int, max_degree: int) -> tuple[np.ndarray, int]:
    """Add the above-threshold pairs among neighbours of a common neighbour (`hops` rounds; hubs of more than
    `max_degree` neighbours skipped: the cost is the sum of squared degrees)."""
    checked = 0
    for _ in range(hops):
        cand = _two_hop_candidates(x.shape[0], pairs, max_degree)
        checked += len(cand)
        more = _above(x, cand, threshold)
        if len(more) == 0:
            break
        pairs = _above(x, np.concatenate([pairs, more]), threshold)
    return pairs, checked


def _above(x: np.ndarray, cand: np.ndarray, threshold: float) -> np.ndarray:
    """The unique (i < j) pairs of `cand` whose float64 similarity is above the threshold, sorted."""
    cand = unique_pairs(cand[:, 0], cand[:, 1], x.shape[0])
    return cand[rescore(x, cand) > threshold]


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


