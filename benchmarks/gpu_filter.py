"""Exact identity filter on a GPU: 1M x 512 face-like embeddings, every pair scored (issue 13's target: <= 2 min).

    .venv/bin/python benchmarks/gpu_filter.py                       # 1M rows, k1 preset, float16 products
    .venv/bin/python benchmarks/gpu_filter.py --n 200000 --spectrum k1.5 --precision bfloat16
    .venv/bin/python benchmarks/gpu_filter.py --device cpu --n 20000   # the same code on the CPU (slow at scale)

The products run in float16 (or bfloat16) with float32 accumulation; every pair within the precision's rounding
margin of the threshold is re-scored in float64, so the kept sets are exactly those of the CPU search. The check
at the end compares the pairs of `--check-rows` random rows with an exact CPU search of those rows (query_pairs).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from synid_assets.core.filtering import scale as fs
from synid_assets.core.filtering.exact import default_device, exact_pairs, query_pairs
from synid_assets.core.filtering.similarity import dataset_fmr
from synid_assets.core.filtering.synthetic import face_like_vectors, neighbour_share_threshold


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--spectrum", default="k1", help="shape preset: iso, k0.5, k1, k1.5")
    ap.add_argument("--threshold", type=float, default=None, help="default: where 5%% of rows have a neighbour")
    ap.add_argument("--device", default=None, help="default: cuda when torch sees one, else cpu")
    ap.add_argument("--precision", default=None, help="float16 (GPU default), bfloat16 or float32")
    ap.add_argument("--check-rows", type=int, default=1000)
    args = ap.parse_args()
    device = args.device or default_device()
    t = time.perf_counter()
    x, _ = face_like_vectors(args.n, args.dim, args.spectrum, seed=0)
    thr = args.threshold if args.threshold is not None else neighbour_share_threshold(x, 0.05)
    print(f"n={args.n} dim={args.dim} spectrum={args.spectrum} threshold={thr} device={device} "
          f"[generate + threshold {time.perf_counter() - t:.1f}s]", flush=True)
    t = time.perf_counter()
    pairs, sims, stats = exact_pairs(x, thr, device=device, precision=args.precision)
    search_s = time.perf_counter() - t
    print(f"exact search: {search_s:.1f}s  pairs={len(pairs)}  " + ", ".join(f"{k}={v}" for k, v in stats.items()))
    for mode, target in (("strict", None), ("fmr", float(f"{dataset_fmr(args.n, len(pairs)) / 4:.1g}"))):
        t = time.perf_counter()
        found = (pairs, sims, {**stats, "method": "exact"})
        res = fs.filter_vectors(x, thr, mode=mode, target_fmr=target, normalized=True, precomputed=found)
        print(f"filter[{mode}]: search {search_s:.1f}s + decide {time.perf_counter() - t:.1f}s = "
              f"{search_s + time.perf_counter() - t:.1f}s  kept={res['n_kept']}  fmr_before={res['fmr_before']:.3e}  "
              f"fmr_after={res['fmr_after']:.3e} (exact)", flush=True)
    t = time.perf_counter()
    rows = np.random.default_rng(1).choice(args.n, size=min(args.n, args.check_rows), replace=False)
    truth = query_pairs(x, rows, thr)
    in_rows = np.isin(pairs[:, 0], rows) | np.isin(pairs[:, 1], rows)
    same = np.array_equal(truth, pairs[in_rows])
    print(f"check: pairs of {len(rows)} random rows identical to the CPU float32+float64 search: {same} "
          f"({len(truth)} pairs) [{time.perf_counter() - t:.1f}s]")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
