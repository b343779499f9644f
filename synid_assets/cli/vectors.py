"""`synid vectors sample`: identity vectors under a maximum cosine similarity, written as an (N, D) float32 .npy."""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path


def slot_seeds(seed: int, n: int) -> list[int]:
    """The recorded seed of each row: row i's candidates are sub-streams of derive_seed('vectors', seed, i)."""
    from synid_assets.core.dataset.seeds import derive_seed

    return [derive_seed("vectors", seed, i) for i in range(n)]


def run_sample(
    n: int,
    dim: int,
    method: str,
    centres: str | None,
    max_similarity: float,
    seed: int,
    out: str,
    gallery: str | None = None,
    max_attempts: int = 1000,
) -> int:
    """Sample n unit vectors and write them atomically to `out`; nothing is written when the space is full."""
    import numpy as np

    from synid_assets.core.dataset.layout import atomic_write_bytes
    from synid_assets.core.filtering.leakage import Gallery, GalleryError
    from synid_assets.core.identity_vectors import SamplerSettings, VectorSpaceFull, sample_vectors

    if n < 1 or dim < 1:
        print("synid vectors sample: --n and --dim must be at least 1", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        settings = SamplerSettings(method=method, max_similarity=max_similarity, centres=centres,
                                   max_attempts=max_attempts)
        placed = sample_vectors(slot_seeds(seed, n), dim, settings, gallery=Gallery(gallery) if gallery else None)
    except (ValueError, GalleryError) as exc:  # bad settings, centres file or gallery: the message names it
        print(f"synid vectors sample: {exc}", file=sys.stderr)
        return 2
    except VectorSpaceFull as exc:
        print(f"synid vectors sample: {exc}; nothing written to {out}", file=sys.stderr)
        return 1
    buffer = io.BytesIO()
    np.save(buffer, placed.vectors.astype(np.float32), allow_pickle=False)
    atomic_write_bytes(Path(out), buffer.getvalue())
    nearest = np.nanmax(placed.nearest_similarity) if n > 1 else float("nan")
    redraws = placed.candidates_drawn - n
    print(f"{method}: {n} unit vectors in {dim} dimensions, largest similarity to an earlier vector {nearest:.4f} "
          f"(bound {max_similarity}), {redraws} redraws, {time.perf_counter() - started:.1f} s -> {out}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    vectors = commands.add_parser("vectors", help="identity vectors in an embedding space")
    sub = vectors.add_subparsers(dest="vectors_command", required=True)
    sample = sub.add_parser("sample", help="sample N unit vectors, each within a max cosine similarity of the others")
    sample.add_argument("--n", type=int, required=True, help="number of vectors")
    sample.add_argument("--dim", type=int, required=True, help="dimensions (512 for ArcFace spaces)")
    sample.add_argument("--method", choices=["gaussian", "pca", "repulsion"], default="gaussian")
    sample.add_argument("--centres", default=None, help="pca: (m, D) float .npy of real identity centres, m >= D")
    sample.add_argument("--max-similarity", type=float, default=0.3,
                        help="largest cosine similarity allowed between two vectors (Vec2Face used 0.3-0.4)")
    sample.add_argument("--seed", type=int, default=0, help="every draw derives from this seed")
    sample.add_argument("--gallery", default=None,
                        help="leakage gallery of real faces (.npy or '<lancedb dir>::<table>'): kept under the bound")
    sample.add_argument("--max-attempts", type=int, default=1000,
                        help="candidates one vector may draw before the sampler stops (the space is full)")
    sample.add_argument("--out", required=True, help=".npy file to write: (N, D) float32, unit rows")
    sample.set_defaults(
        handler=lambda args: run_sample(args.n, args.dim, args.method, args.centres, args.max_similarity, args.seed,
                                        args.out, args.gallery, args.max_attempts)
    )
