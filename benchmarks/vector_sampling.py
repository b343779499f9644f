"""Benchmark the identity-vector sampler (synid_assets/core/identity_vectors/) at dataset scale.

    .venv/bin/python benchmarks/vector_sampling.py                        # 100,000 x 512-d, gaussian, T = 0.3
    .venv/bin/python benchmarks/vector_sampling.py --n 20000 --method repulsion

Prints the wall time of the sampler, the process's peak resident memory, the candidates it drew, and the largest
pairwise cosine similarity of the result measured exactly over all n(n-1)/2 pairs, in blocks (float32 blocks,
every pair near the maximum rescored in float64), separately from the sampler's own bookkeeping.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synid_assets.cli.vectors import slot_seeds  # noqa: E402
from synid_assets.core.identity_vectors import SamplerSettings, max_pairwise_similarity, sample_vectors  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--method", choices=["gaussian", "pca", "repulsion"], default="gaussian")
    parser.add_argument("--centres", default=None)
    parser.add_argument("--max-similarity", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"machine: {os.cpu_count()} CPUs; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    settings = SamplerSettings(method=args.method, max_similarity=args.max_similarity, centres=args.centres)
    seeds = slot_seeds(args.seed, args.n)
    started = time.perf_counter()
    printed = [0]

    def progress(done: int, n: int) -> None:
        if done - printed[0] >= 20_000 or done == n:  # about five lines, whatever the sampler's block
            printed[0] = done
            print(f"  {done}/{n} placed, {time.perf_counter() - started:.0f} s", flush=True)

    placed = sample_vectors(seeds, args.dim, settings, progress=progress)
    sampled = time.perf_counter() - started
    print(f"sampled {args.n} x {args.dim} ({args.method}, T = {args.max_similarity}) in {sampled:.1f} s; "
          f"{placed.candidates_drawn - args.n} redraws; peak RSS {peak_rss_mib():.0f} MiB")
    started = time.perf_counter()
    best, i, j = max_pairwise_similarity(placed.vectors)
    checked = time.perf_counter() - started
    print(f"largest pairwise similarity (exact, all {args.n * (args.n - 1) // 2} pairs): {best:.6f} (rows {i}, {j}); "
          f"bound held: {best <= args.max_similarity}; check {checked:.1f} s; peak RSS {peak_rss_mib():.0f} MiB")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0 if best <= args.max_similarity else 1


if __name__ == "__main__":
    raise SystemExit(main())
