"""SynID's inverted-file index for the above-threshold self-join of unit rows (the "index" search).

* Cells: spherical k-means in two spaces, the unit rows as they are ("raw") and whitened (centred, each principal
  direction scaled to unit variance); every row lives in its nearest cell of each and probes its nearest cells.
* Scan: each cell's (prober, resident) pairs in one bfloat16 product (AMX / AVX512-BF16 on this CPU, ~2.5x the
  float32 rate); candidates above threshold - MARGINS["bfloat16"] are re-scored in float64 (exact.rescore), so
  only candidate generation is approximate: no pair is reported that is not above the threshold.
* Two-hop closure: near-duplicate groups are nearly transitive, so neighbours of neighbours are scored too.
* Probes are planned from a sample, then checked on another: an exact search of CALIBRATION_ROWS sampled rows
  gives their true pairs, and for each pair and space the probe count at which the scan would score it; the plan
  is the fewest probes in all (per space; a space that does not pay is not scanned) that score all but half the
  misses RECALL_TARGET allows. A second sample measures the plan's recall without bias; below the target the
  probes grow by half (only the new ranks are scanned) until it is met or the next round would overrun the time
  budget. The result says which probes ran and the calibration recall; scale.py reports a recall estimated on a
  third sample. "auto" (pair_search.py) runs the exact search instead where the plan would cost more.

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
CALIBRATION_ROWS = 3000  # rows in each of the two calibration samples
# seconds the index may spend before it stops adding probes ($SYNID_FILTER_INDEX_BUDGET_S overrides)
INDEX_BUDGET_S = float(os.environ.get("SYNID_FILTER_INDEX_BUDGET_S", "480"))
_SCAN_ROWS = 16_384  # probers per product block
_RANKS_PER_PASS = 32  # probe ranks assigned at once (bounds the prober lists' memory at 1M rows)
# "auto" runs the index only where its plan scores under 1 / INDEX_COST_PER_PAIR of the pairs. Its time per
# scored pair is 0.8-1.6x the exact search's when both run in one process (benchmarks/index_scan_profile.py,
# k^-0.5 rows: 4.51 vs 2.76 ns at 200k, 3.68 vs 4.85 ns at 1M; whole runs on different days gave 1.1 and 2.3,
# as this shared CPU's rate moves),
# and at equal cost the exact search is worth more (exact figures, no recall estimate): hence 1.5 x 1.5
INDEX_COST_PER_PAIR = 2.25


def _bf16(x: np.ndarray) -> Any:
    """A bfloat16 torch copy of float32 rows: the index's products run on it (AMX / AVX512-BF16 where the CPU
    has them: ~3x float32 on this machine); only candidate generation sees its rounding (MARGINS["bfloat16"])."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(torch.bfloat16)


def _cell_scores(z: Any, cent: Any) -> Any:
    """Cosine of bfloat16 rows z to bfloat16 unit centroids, as float32: the one ordering of cells that both the
    scan's probe lists and the plan's probe ranks use."""
    return (z @ cent.T).float()


def _top_cells(z: Any, centroids: np.ndarray, n_probe: int, first: int = 0, block: int = 16_384) -> np.ndarray:
    """Cell ids of each row of the bfloat16 tensor z at probe ranks [first, n_probe), nearest first (cosine to
    unit centroids): (n, n_probe - first), int16 where the cells allow (a 1M-row probe list at 300 ranks is
    0.6 GB, not 1.2 GB of int32)."""
    import torch

    cent = _bf16(centroids)
    n = z.shape[0]
    out = np.empty((n, n_probe - first), dtype=np.int16 if len(centroids) < 2**15 else np.int32)
    for s in range(0, n, block):
        scores = _cell_scores(z[s : s + block], cent)
        out[s : s + block] = torch.topk(scores, n_probe, dim=1, sorted=True).indices[:, first:].numpy()
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
    """One partition: unit centroids of `zb` (bfloat16 rows in the table's space), each row's home cell, and the
    residents of each cell as CSR."""

    zb: Any
    cent: np.ndarray
    home: np.ndarray = field(repr=False)
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
        return cls(zb, cent, home, torch.from_numpy(order), bounds)

    def probe_ranks(self, pairs: np.ndarray) -> np.ndarray:
        """For each (i, j) pair, the probe count at which this table's scan first scores it: one more than the
        smaller of the rank of j's cell in i's probe order and of i's cell in j's (1 = same cell). Ties count
        against the pair, so the count is never too small."""
        import torch

        cent = _bf16(self.cent)

        def rank(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            out = np.empty(len(a), np.int64)
            for s in range(0, len(a), 8192):
                scores = _cell_scores(self.zb.index_select(0, torch.from_numpy(a[s : s + 8192])), cent)
                own = scores.gather(1, torch.from_numpy(self.home[b[s : s + 8192]].astype(np.int64))[:, None])
                out[s : s + 8192] = (scores >= own).sum(dim=1).numpy()  # includes the cell itself: rank + 1
            return out

        return np.minimum(rank(pairs[:, 0], pairs[:, 1]), rank(pairs[:, 1], pairs[:, 0]))

    def probed_rows(self, rows: np.ndarray, n_probe: int) -> float:
        """Mean number of rows in the first `n_probe` cells of the given rows' probe orders (large cells are
        nearer to more rows, so this is above n_probe * n / n_cells)."""
        if n_probe == 0:
            return 0.0
        import torch

        sizes = np.diff(self.res_bounds)
        top = _top_cells(self.zb.index_select(0, torch.from_numpy(rows)), self.cent, n_probe)
        return float(sizes[top].sum(axis=1).mean())

    def scan(self, xb: Any, cut: float, p0: int, p1: int) -> tuple[list[np.ndarray], int]:
        """Candidate pairs (float32 score above `cut`) of every row with the residents of its probe ranks
        [p0, p1), and how many pairs were scored."""
        import torch

        found: list[np.ndarray] = []
        checked = 0
        n_cells = len(self.cent)
        top = _top_cells(self.zb, self.cent, p1, p0)  # one ranking for every pass
        for r0 in range(0, p1 - p0, _RANKS_PER_PASS):
            ranks = np.ascontiguousarray(top[:, r0 : r0 + _RANKS_PER_PASS])
            flat = ranks.ravel()
            prb_order = np.argsort(flat, kind="stable")
            prb_bounds = np.searchsorted(flat[prb_order], np.arange(n_cells + 1))
            prb_rows = torch.from_numpy((prb_order // ranks.shape[1]).astype(np.int64))
            del flat, prb_order, ranks
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


def plan_probes(ranks: np.ndarray, misses: int, floor: int, n_cells: int) -> list[int]:
    """The probes per table (0: the table is not scanned) with the fewest in all such that at most `misses` of
    the pairs are left unscored, a pair being scored by a table whose probes reach its rank there (`ranks`:
    (pairs, tables) from _Table.probe_ranks); every scanned table probes at least `floor` cells, at most all."""

    def probes_for(r: np.ndarray) -> int:
        if len(r) <= misses:
            return 0
        need = int(np.sort(r)[len(r) - misses - 1])  # the pair ranked misses + 1 from the top
        return min(n_cells, max(floor, need))

    if ranks.shape[1] == 1:
        return [probes_for(ranks[:, 0])]
    first, second = ranks[:, 0], ranks[:, 1]
    # second table's candidate probe counts: none, the floor, and a spread of the ranks it would need
    options = np.unique(np.concatenate([[0, floor], np.quantile(second, np.linspace(0, 1, 257)).astype(int)]))
    best: list[int] | None = None
    for p2 in options[options <= n_cells]:
        p2 = max(floor, int(p2)) if p2 else 0
        p1 = probes_for(first[second > p2] if p2 else first)
        if best is None or p1 + p2 < sum(best):
            best = [p1, p2]
    return best  # type: ignore[return-value]


class IndexCostlierThanExact(Exception):
    """The index's planned probes would score more pairs than the exact search ("auto" then runs exact)."""

    def __init__(self, stats: dict[str, Any]) -> None:
        super().__init__(f"index plan {stats.get('plan')} costs more than the exact search")
        self.stats = stats


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
    exact_when_cheaper: bool = False,
) -> tuple[np.ndarray, np.ndarray, int, dict]:
    """The pairs of unit rows `x` above `threshold` that the index finds (see the module docstring).

    `n_probe` fixes the probes of every space (one round, no calibration). By default the probes are planned
    from the calibration sample's pairs: per space, the fewest probes with which the scan would find all but
    half the misses `recall_target` allows (a space that does not pay is not scanned). If the calibration
    recall then falls short, the probes grow by half until it reaches `recall_target`, the probes reach
    `max_probe_share` of the cells, or the next round's predicted time would pass `budget_s`.
    `exact_when_cheaper`: raise IndexCostlierThanExact (before any scan) when the plan would score more
    pairs, at the index's cost per pair, than the exact search.
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
    floor = min(n_cells, max(MIN_PROBES, int(np.ceil(PROBE_SHARE * n_cells))))
    cap = max(floor, int(max_probe_share * n_cells))
    stats: dict[str, Any] = {"spaces": list(spaces), "n_cells": n_cells, "rounds": []}
    t = time.perf_counter()
    xb = _bf16(x)
    tables: list[_Table | None] = []
    for i, space in enumerate(spaces):
        zb = xb if space == "raw" else _whitened(x, np.random.default_rng(seed + 17 * i))
        tables.append(_Table.build(zb, n_cells, per_cell, iters, refit, seed + 1000 * i))
    del zb  # the tables hold their rows: one that the plan leaves out is freed below
    stats["build_s"] = time.perf_counter() - t
    truth = np.zeros((0, 2), np.int64)
    if fixed:
        probes = [min(n_cells, int(n_probe))] * len(tables)  # type: ignore[arg-type]
    else:
        t = time.perf_counter()
        # two samples of their own, neither the one scale.sampled_figures reports recall on: the plan is fitted
        # to the first, so only the second measures its recall without bias
        rng = np.random.default_rng(seed + 104_729)
        drawn = rng.choice(n, size=min(n, 2 * calibration_rows), replace=False)
        plan_truth = query_pairs(x, drawn[:calibration_rows], threshold)
        check_rows = drawn[calibration_rows:] if n > calibration_rows else drawn
        truth = query_pairs(x, check_rows, threshold) if n > calibration_rows else plan_truth
        # a plan that leaves m of E sampled pairs out leaves ~(m + 1) / (E + 1) of all pairs out: aim at half the
        # misses the target allows
        misses = max(0, int((1 - recall_target) / 2 * (len(plan_truth) + 1)) - 1)
        if len(plan_truth):
            ranks = np.stack([table.probe_ranks(plan_truth) for table in tables if table], axis=1)
            probes = [min(cap, p) for p in plan_probes(ranks, misses, floor, n_cells)]
        else:
            probes = [floor] * len(tables)  # no sampled pairs to plan from: the smallest scan in every space
        probe_rows = np.sort(rng.choice(n, size=min(n, 1000), replace=False))
        planned = n * sum(table.probed_rows(probe_rows, p) for table, p in zip(tables, probes, strict=True) if table)
        stats["calibration_s"] = time.perf_counter() - t
        stats["plan"] = {
            "n_probe": probes,
            "from_pairs": len(plan_truth),
            "share_of_pairs": planned / max(1, n * (n - 1) // 2),
        }
        if exact_when_cheaper and INDEX_COST_PER_PAIR * planned >= n * (n - 1) / 2:
            raise IndexCostlierThanExact(stats)
    # a space the plan does not scan frees its rows (1 GB of bfloat16 at 1M x 512)
    tables = [table if p else None for table, p in zip(tables, probes, strict=True)]
    pairs = np.zeros((0, 2), np.int64)
    checked, scan_s, ranks_scanned = 0, 0.0, 0
    p0 = [0] * len(tables)
    cut = threshold - MARGINS["bfloat16"]
    while True:
        t = time.perf_counter()
        for table, a, b in zip(tables, p0, probes, strict=True):
            if table is None or b <= a:
                continue
            found, c = table.scan(xb, cut, a, b)
            checked += c
            ranks_scanned += b - a
            pairs = _above(x, np.concatenate([pairs, *found]), threshold)
        scan_s += time.perf_counter() - t
        pairs, closure_checked = _closure(x, pairs, threshold, closure, closure_max_degree)
        checked += closure_checked
        recall = _recall(truth, pairs, n)
        stats["rounds"].append(
            {"n_probe": list(probes), "calibration_recall": recall, "seconds": time.perf_counter() - t}
        )
        # half again, not double: the plan is near the need, so the overshoot of a doubling is mostly waste
        p_next = [min(n_cells, -(-3 * p // 2), max(p, cap)) if p else 0 for p in probes]
        predicted = scan_s / max(1, ranks_scanned) * (sum(p_next) - sum(probes))
        if fixed or recall >= recall_target or p_next == probes or time.perf_counter() - t_start + predicted > budget_s:
            break
        p0, probes = probes, p_next
    stats.update({"n_probe": list(probes), "scan_s": scan_s})
    if not fixed:
        stats["calibration"] = {
            "rows": len(check_rows),
            "pairs": len(truth),
            "recall": recall,
        }
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
