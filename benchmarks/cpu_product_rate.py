"""How steady this CPU's product rate is: the exact filter's block (rows x columns x dim, bfloat16 by default,
into one reused output buffer, as core/filtering/exact.py runs it), timed call by call.

    .venv/bin/python benchmarks/cpu_product_rate.py                     # 8192 x 16384 x 512, bfloat16, 30 calls
    .venv/bin/python benchmarks/cpu_product_rate.py --dim 2048 --calls 10 --dtype float32

On a shared VM the rate of the same call can change several-fold from one second to the next (another guest on
the same cores); the exact search's time at 1M rows follows it. Prints each call's GFLOP/s and a summary.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--cols", type=int, default=16_384)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    ap.add_argument("--calls", type=int, default=30)
    args = ap.parse_args()
    import torch

    dtype = getattr(torch, args.dtype)
    a = torch.nn.functional.normalize(torch.randn(args.rows, args.dim), dim=1).to(dtype)
    b = torch.nn.functional.normalize(torch.randn(args.cols, args.dim), dim=1).to(dtype)
    out = torch.empty(args.rows, args.cols, dtype=dtype)
    torch.mm(a, b.T, out=out)  # warm-up: the kernel choice and the buffer's pages
    flops = 2 * args.rows * args.cols * args.dim
    rates = []
    for _ in range(args.calls):
        t = time.perf_counter()
        torch.mm(a, b.T, out=out)
        rates.append(flops / (time.perf_counter() - t) / 1e9)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    print(f"{args.rows} x {args.cols} x {args.dim} {args.dtype}, GFLOP/s per call:")
    print(" ".join(f"{r:.0f}" for r in rates))
    q = np.quantile(rates, [0, 0.5, 1])
    print(f"min {q[0]:.0f}  median {q[1]:.0f}  max {q[2]:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
