"""The index's scan against the exact search, per scored pair, in one process (this shared CPU's product rate
moves between runs, so only a same-process ratio says what the index costs): where the scan's time goes
(probe lists, gathers, products, thresholding) and the exact search's blocks on the same rows.

    .venv/bin/python benchmarks/index_scan_profile.py --n 200000 --probes 120
    .venv/bin/python benchmarks/index_scan_profile.py --n 1000000 --probes 32     # ~3.5 min

Rows: synthetic face-like embeddings (core/filtering/synthetic.py, --spectrum), threshold where 20% of rows have
a neighbour; one raw partition of 1.5 sqrt(n) cells, every row probing its --probes nearest cells, scanned as
ivf._Table.scan does it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--probes", type=int, default=120)
    ap.add_argument("--spectrum", default="k0.5")
    args = ap.parse_args()
    import torch

    from synid_assets.core.filtering import ivf
    from synid_assets.core.filtering.exact import MARGINS, block_hits
    from synid_assets.core.filtering.synthetic import face_like_vectors, neighbour_share_threshold

    x, _ = face_like_vectors(args.n, 512, args.spectrum, seed=0)
    cut = neighbour_share_threshold(x, 0.2) - MARGINS["bfloat16"]
    xb = ivf._bf16(x)
    n_cells = round(1.5 * np.sqrt(args.n))
    table = ivf._Table.build(xb, n_cells, 32, 6, 1, 0)
    seconds: dict[str, float] = {}

    def timed(name: str, fn, *a):  # noqa: ANN001, ANN202
        t = time.perf_counter()
        out = fn(*a)
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t
        return out

    top = timed("probe lists", ivf._top_cells, xb, table.cent, args.probes)
    scored = 0
    for r0 in range(0, args.probes, ivf._RANKS_PER_PASS):
        ranks = np.ascontiguousarray(top[:, r0 : r0 + ivf._RANKS_PER_PASS])
        order = timed("sort by cell", lambda r=ranks: np.argsort(r.ravel(), kind="stable"))
        bounds = np.searchsorted(ranks.ravel()[order], np.arange(n_cells + 1))
        probers_all = torch.from_numpy((order // ranks.shape[1]).astype(np.int64))
        for k in range(n_cells):
            residents = table.res_rows[table.res_bounds[k] : table.res_bounds[k + 1]]
            probers = probers_all[bounds[k] : bounds[k + 1]]
            if len(residents) == 0 or len(probers) == 0:
                continue
            res_vecs = timed("gathers", lambda r=residents: xb.index_select(0, r).T.contiguous())
            for s in range(0, len(probers), ivf._SCAN_ROWS):
                rows = timed("gathers", xb.index_select, 0, probers[s : s + ivf._SCAN_ROWS])
                sims = timed("products", torch.mm, rows, res_vecs)
                scored += sims.numel()
                timed("thresholding", block_hits, sims, cut)
    total = sum(seconds.values())
    print(f"n={args.n} cells={n_cells} probes={args.probes}: {scored:.3e} pairs scored in {total:.1f} s, "
          f"{total / scored * 1e9:.2f} ns per pair")
    print("  " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    out = torch.empty(8192, 16_384, dtype=torch.bfloat16)
    t = time.perf_counter()
    blocks = 0
    for r in range(0, min(args.n, 32_768), 8192):
        block_hits(torch.mm(xb[r : r + 8192], xb[:16_384].T, out=out), cut)
        blocks += 1
    exact_s = time.perf_counter() - t
    print(f"exact search blocks (8192 x 16384, product and thresholding): "
          f"{exact_s / (blocks * 8192 * 16_384) * 1e9:.2f} ns per pair")


if __name__ == "__main__":
    main()
