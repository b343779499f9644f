"""Could an exact search skip pairs by a bound? Score the top d principal directions of 512 and bound the rest by
the product of the two rows' residual norms (Cauchy-Schwarz): a pair needs its full product only when that
upper bound is above the threshold minus the bfloat16 margin. Prints, per d, the share of the products' cost
and the share of pairs left as candidates (2,000 sampled rows against all rows).

    .venv/bin/python benchmarks/filter_pca_bound.py --n 200000 --spectrum k0.5 --share 0.2
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--spectrum", default="k0.5")
    ap.add_argument("--share", type=float, default=0.2)
    args = ap.parse_args()
    from synid_assets.core.filtering.exact import MARGINS
    from synid_assets.core.filtering.synthetic import face_like_vectors, neighbour_share_threshold

    x, _ = face_like_vectors(args.n, 512, args.spectrum, seed=0)
    threshold = neighbour_share_threshold(x, args.share)
    cut = threshold - MARGINS["bfloat16"]
    rng = np.random.default_rng(3)
    sample = x[rng.choice(args.n, 20_000, replace=False)].astype(np.float64)
    eigval, eigvec = np.linalg.eigh(sample.T @ sample / len(sample))  # uncentred: the mean direction is kept
    eigval, eigvec = eigval[::-1], eigvec[:, ::-1]
    y = x @ eigvec.astype(np.float32)
    queries = rng.choice(args.n, 2000, replace=False)
    print(f"n={args.n} {args.spectrum} threshold={threshold} (cut {cut:.3f}); pairs above the cut: "
          f"{np.mean(x[queries] @ x.T > cut):.2e}")
    for d in (256, 320, 352, 384, 416, 448, 480):
        residual = np.sqrt((y[:, d:] ** 2).sum(axis=1))
        bound = y[queries, :d] @ y[:, :d].T + np.outer(residual[queries], residual)
        print(f"d={d}: products {(d + 1) / 512:.3f} of the full cost, candidates {np.mean(bound > cut):.2e} of pairs, "
              f"energy in the top d {eigval[:d].sum() / eigval.sum():.3f}")


if __name__ == "__main__":
    main()
