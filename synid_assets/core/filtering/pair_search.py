"""The above-threshold pairs of a set of unit rows, without the dense n x n similarity matrix.

* "exact" (exact.py): blocked torch products over the upper triangle on the CPU or a GPU, re-scored in float64;
* "index" (ivf.py): an inverted-file index of our own over raw and whitened spherical k-means cells, scanned with
  bfloat16 products, every candidate re-scored in float64, a two-hop closure, and probes planned from the pairs
  of sampled rows and checked on others (they grow until 99.9% of those are found, or the time budget ends).

Why our own index rather than FAISS, hnswlib or usearch (issue 13's k^-1 shape, on the shared 2-core box; see
the README's filter section for the side-by-side figures): a FAISS IVF partition has the same recall per probe
as ours, raw or centred (200k rows, 670 cells, 16 probes: 0.923 / 0.923; 64: 0.985 / 0.986); the win is the
whitened second partition (a pair is found when either partition brings it together), which one FAISS index
cannot give, since it scores in the space it partitions. FAISS's range search also scores one query row at a
time against each probed list in float32, where ours scores a cell's probers at once in bfloat16 (AMX). Graph
indexes build row by row: usearch (f16, connectivity 16) had not built 200k rows after 4.5 min.

Why not LanceDB's vector index for the search: it answers one query vector at a time. On the 2-core dev box an
IVF_PQ index over 20k x 512 took 117 s to build and answered 64 queries/s (nprobes 8, refine 10): ~4 h for the
1M self-join, against ~8 min for the numpy IVF here, which scores whole cells with one matrix product.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from synid_assets.core.filtering.exact import cpu_exact_seconds, cuda_available, exact_pairs
from synid_assets.core.filtering.ivf import IndexCostlierThanExact, ivf_pairs

# "auto" searches exactly up to this many rows whatever the estimate (a few seconds), and above it while the
# exact search's estimated time on this CPU fits the budget (seconds; $SYNID_FILTER_EXACT_BUDGET_S overrides).
AUTO_EXACT_MAX_ROWS = 20_000
EXACT_OPTIONS = ("device", "precision", "block", "col_block")
AUTO_EXACT_BUDGET_S = float(os.environ.get("SYNID_FILTER_EXACT_BUDGET_S", "300"))


def above_threshold_pairs(
    vectors: np.ndarray, threshold: float, method: str = "auto", **options: Any
) -> tuple[np.ndarray, np.ndarray, dict]:
    """All unordered pairs (i < j) with similarity > threshold (float64, see exact.rescore), their similarities
    and stats.

    `vectors` must already be unit rows (see `unit_rows`); they are used as float32 without a copy when they
    are float32 C-contiguous. method: "exact" (options: device, precision, block, col_block), "index" (options:
    see ivf.ivf_pairs) or "auto": exact on a GPU, and on the CPU where its estimated time fits `exact_budget_s`
    (default AUTO_EXACT_BUDGET_S) or n <= AUTO_EXACT_MAX_ROWS; the index otherwise, unless the probes it plans
    from its calibration sample would score more pairs (at its cost per pair) than the exact search: then exact.
    Returns (pairs int64 (E, 2) sorted by (i, j), similarities float64 (E,), stats).
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = x.shape[0]
    budget = float(options.pop("exact_budget_s", AUTO_EXACT_BUDGET_S))
    stats: dict[str, Any] = {"n": n}
    auto = method == "auto"
    if auto:
        method, stats["auto"] = choose_method(n, x.shape[1], budget, options.get("device"))
    stats["method"] = method
    t0 = time.perf_counter()
    # each search takes its own options: callers of "auto" may pass both sets
    exact_options = {k: v for k, v in options.items() if k in EXACT_OPTIONS}
    index_options = {k: v for k, v in options.items() if k not in EXACT_OPTIONS}
    if method not in ("exact", "index"):
        raise ValueError(f"unknown method {method!r} (exact, index or auto)")
    if method == "index":
        try:
            # "auto" lets the index give way to the exact search when its probe plan would cost more
            pairs, sims, checked, extra = ivf_pairs(x, threshold, exact_when_cheaper=auto, **index_options)
            stats.update(extra)
            stats.update({"candidates": int(checked), "edges": len(pairs), "seconds": time.perf_counter() - t0})
            return pairs, sims, stats
        except IndexCostlierThanExact as planned:
            plan = planned.stats["plan"]
            stats["auto"] += (
                f"; the index's plan ({plan['n_probe']} probes per space, {plan['share_of_pairs']:.0%} of the"
                " pairs) costs more than scoring every pair: exact"
            )
            stats.update({"method": "exact", "index_plan": planned.stats})
    pairs, sims, extra = exact_pairs(x, threshold, **exact_options)
    stats.update(extra)
    stats.update({"edges": len(pairs), "seconds": time.perf_counter() - t0})
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
