"""Renderer quality: does dlib detect the procedural faces and tell identities apart?

    python benchmarks/renderer_quality.py --identities 256 --live 2 --seed 0

Renders one document and --live live images per identity, analyses them with DlibFaceAnalyzer and
prints detection rates, genuine (live vs own document) and impostor (document vs document) cosine
similarity distributions, EER, impostor thresholds at FMR 1e-3 / 1e-4 and the share of identities a
strict greedy filter keeps at the FMR 1e-3 threshold.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synid_assets.core.dataset.seeds import identity_seed, rng_for, stream_seed  # noqa: E402
from synid_assets.core.generation import render  # noqa: E402
from synid_assets.core.quality.calibration import (  # noqa: E402
    attribute_sampler,
    eer,
    impostor_thresholds,
    pairwise_cosine,
    profile_analyzer,
)

_ANALYZER = None
_SAMPLER = None


def _work(job: tuple[int, int, int, int, str]) -> dict:
    """Render and analyse the document and live images of one identity (runs in a worker)."""
    global _ANALYZER, _SAMPLER
    if _ANALYZER is None:
        _ANALYZER = profile_analyzer(job[4])
    if _SAMPLER is None:
        _SAMPLER = attribute_sampler()
    dataset_seed, index, n_live, size, _ = job
    iseed = identity_seed(dataset_seed, "bench", index)
    attrs = dict(_SAMPLER(rng_for(iseed, "attributes")))
    t0 = time.perf_counter()
    images = [np.asarray(render.render_document(attrs, iseed, size=size))]
    variations = []
    for k in range(n_live):
        var = render.draw_live_variation(stream_seed(iseed, "live", k))
        variations.append(var)
        images.append(np.asarray(render.render_live(attrs, iseed, var, size=size)))
    render_s = time.perf_counter() - t0
    results = _ANALYZER.analyze_many(images)
    return {
        "index": index,
        "attrs": attrs,
        "variations": variations,
        "embeddings": [r.embedding for r in results],
        "render_s": render_s / len(images),
    }


def _describe(name: str, x: np.ndarray) -> str:
    if x.size == 0:
        return f"{name}: (none)"
    p = np.percentile(x, [1, 5, 25, 50, 75, 95, 99])
    return (
        f"{name}: n={x.size} mean={x.mean():.4f} std={x.std():.4f} min={x.min():.4f} "
        f"p1={p[0]:.4f} p5={p[1]:.4f} p25={p[2]:.4f} p50={p[3]:.4f} p75={p[4]:.4f} p95={p[5]:.4f} "
        f"p99={p[6]:.4f} max={x.max():.4f}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--identities", type=int, default=256)
    ap.add_argument("--live", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--verbose", action="store_true", help="list missed detections")
    ap.add_argument("--profile", default="local", help="resource profile whose face analyzer to use")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    jobs = [(args.seed, i, args.live, args.size, args.profile) for i in range(args.identities)]
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            rows = list(pool.map(_work, jobs, chunksize=4))
    else:
        rows = [_work(j) for j in jobs]
    elapsed = time.perf_counter() - t0

    doc_ok = [r for r in rows if r["embeddings"][0] is not None]
    live_total = args.identities * args.live
    live_ok = sum(e is not None for r in rows for e in r["embeddings"][1:])
    print(f"renderer={render.RENDERER_NAME} v{render.RENDERER_VERSION} identities={args.identities} "
          f"live/identity={args.live} seed={args.seed} size={args.size}")
    print(f"time: {elapsed:.1f}s total, render {1000 * np.mean([r['render_s'] for r in rows]):.1f} ms/image")
    print(f"document detection: {len(doc_ok)}/{args.identities} = {len(doc_ok) / args.identities:.2%}")
    if live_total:
        print(f"live detection:     {live_ok}/{live_total} = {live_ok / live_total:.2%}")

    if args.verbose:
        for r in rows:
            for k, e in enumerate(r["embeddings"]):
                if e is None:
                    what = "document" if k == 0 else f"live {k - 1} {r['variations'][k - 1]}"
                    print(f"  miss identity {r['index']} {what} attrs={r['attrs']}")

    genuine = np.array(
        [float(r["embeddings"][0] @ e) for r in doc_ok for e in r["embeddings"][1:] if e is not None]
    )
    docs = np.stack([r["embeddings"][0] for r in doc_ok]) if doc_ok else np.zeros((0, 128))
    impostor = pairwise_cosine(docs) if len(docs) > 1 else np.zeros(0)
    print(_describe("genuine  (live vs own document)", genuine))
    print(_describe("impostor (document vs document)", impostor))
    if genuine.size and impostor.size:
        e, t = eer(genuine, impostor)
        print(f"EER: {e:.2%} at threshold {t:.4f}")
    if impostor.size:
        th = impostor_thresholds(impostor, (1e-3, 1e-4))
        for fmr, t in th.items():
            fnmr = float(np.mean(genuine <= t)) if genuine.size else float("nan")
            print(f"threshold @FMR {fmr:g}: {t:.4f} (genuine FNMR there: {fnmr:.2%})")
        t3 = th[1e-3]
        accepted: list[np.ndarray] = []
        for emb in docs:
            if not accepted or float(np.max(np.stack(accepted) @ emb)) <= t3:
                accepted.append(emb)
        print(f"greedy filter @FMR 1e-3 ({t3:.4f}): accepts {len(accepted)}/{len(docs)} = "
              f"{len(accepted) / max(len(docs), 1):.2%} of detected identities")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
