"""Renderer quality: does dlib detect the procedural faces and tell identities apart, on every seed?

    python benchmarks/renderer_quality.py --identities 192 --live 1 --seeds 0 1 4242

For each dataset seed, renders one document and --live live images of the identities a `synid` run with
that dataset seed makes (same identity seeds, batch keys and attributes), analyses them with the
resource profile's face analyzer (dlib by default) and prints detection rates, genuine (live vs own
document) and impostor (document vs document) cosine similarity distributions, EER, impostor thresholds
at FMR 1e-3 / 1e-4 and the share of identities a strict greedy filter keeps at the FMR 1e-3 threshold.
A summary then gives each seed's detection rates and EER, and the lowest detection (highest EER) over
the seeds: a target such as document detection >= 95% must hold on the lowest, not on one lucky seed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
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

DEFAULT_SEEDS = (0, 1, 4242)  # 4242: the held-out run where one seed's document detection fell to 94.8%
TARGETS = {"document": 0.95, "live": 0.85, "eer": 0.05}

_ANALYZER = None
_SAMPLER = None


def run_identity_seed(dataset_seed: int, index: int, batch_size: int) -> int:
    """The seed a run with this dataset seed gives its index-th identity ('batch-00000', ... of batch_size)."""
    batch, position = divmod(index, batch_size)
    return identity_seed(dataset_seed, f"batch-{batch:05d}", position)


def _work(job: tuple[int, int, int, int, int, str]) -> dict:
    """Render and analyse the document and live images of one identity (runs in a worker)."""
    global _ANALYZER, _SAMPLER
    if _ANALYZER is None:
        _ANALYZER = profile_analyzer(job[5])
    if _SAMPLER is None:
        _SAMPLER = attribute_sampler()
    dataset_seed, index, batch_size, n_live, size, _ = job
    iseed = run_identity_seed(dataset_seed, index, batch_size)
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
        "seed": dataset_seed,
        "index": index,
        "identity": f"batch-{index // batch_size:05d}-{index % batch_size:04d}",
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


def _report_seed(seed: int, rows: list[dict], n_live: int, verbose: bool) -> dict[str, float]:
    """Prints one seed's measurements; returns its detection rates and EER for the summary."""
    n = len(rows)
    doc_ok = [r for r in rows if r["embeddings"][0] is not None]
    live_total = n * n_live
    live_ok = sum(e is not None for r in rows for e in r["embeddings"][1:])
    summary = {"document": len(doc_ok) / n, "live": live_ok / live_total if live_total else float("nan"),
               "eer": float("nan")}
    print(f"== seed {seed}")
    print(f"render {1000 * np.mean([r['render_s'] for r in rows]):.1f} ms/image")
    print(f"document detection: {len(doc_ok)}/{n} = {summary['document']:.2%}")
    if live_total:
        print(f"live detection:     {live_ok}/{live_total} = {summary['live']:.2%}")
    if verbose:
        for r in rows:
            for k, e in enumerate(r["embeddings"]):
                if e is None:
                    what = "document" if k == 0 else f"live {k - 1} {r['variations'][k - 1]}"
                    print(f"  miss identity {r['identity']} {what} attrs={r['attrs']}")

    genuine = np.array(
        [float(r["embeddings"][0] @ e) for r in doc_ok for e in r["embeddings"][1:] if e is not None]
    )
    docs = np.stack([r["embeddings"][0] for r in doc_ok]) if doc_ok else np.zeros((0, 128))
    impostor = pairwise_cosine(docs) if len(docs) > 1 else np.zeros(0)
    print(_describe("genuine  (live vs own document)", genuine))
    print(_describe("impostor (document vs document)", impostor))
    if genuine.size and impostor.size:
        e, t = eer(genuine, impostor)
        summary["eer"] = e
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
    return summary


def _report_document_misses(rows: list[dict], top: int = 12) -> None:
    """Attribute values most over-represented among missed documents, over all seeds: where to look."""
    missed = [r for r in rows if r["embeddings"][0] is None]
    if not missed:
        return
    total = Counter((k, v) for r in rows for k, v in r["attrs"].items())
    miss = Counter((k, v) for r in missed for k, v in r["attrs"].items())
    base = len(missed) / len(rows)
    # A value missed once is noise; rank those missed at least twice by their miss rate.
    ranked = sorted((kv for kv in miss if miss[kv] >= 2), key=lambda kv: (-miss[kv] / total[kv], -miss[kv]))
    print(f"== document misses by attribute value (overall miss rate {base:.2%})")
    for key, value in ranked[:top]:
        print(f"  {key}={value}: {miss[(key, value)]}/{total[(key, value)]} missed "
              f"({miss[(key, value)] / total[(key, value)]:.1%})")


def _print_worst(per_seed: dict[int, dict[str, float]], metric: str, label: str) -> None:
    """The worst seed's value of a metric and whether it meets the target."""
    higher_is_better = metric != "eer"
    pick = min if higher_is_better else max
    seed = pick(per_seed, key=lambda s: per_seed[s][metric])
    value, target = per_seed[seed][metric], TARGETS[metric]
    met = value >= target if higher_is_better else value <= target
    print(f"{label + ':':<27}{value:.2%} (seed {seed}), target {'>=' if higher_is_better else '<='} {target:.0%}: "
          f"{'met' if met else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--identities", type=int, default=256, help="identities per seed")
    ap.add_argument("--live", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS),
                    help=f"dataset seeds to measure (default: {' '.join(map(str, DEFAULT_SEEDS))})")
    ap.add_argument("--seed", type=int, help="measure this one seed only (same as --seeds SEED)")
    ap.add_argument("--batch-size", type=int, default=64, help="identities per batch, as in the run (profile)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--verbose", action="store_true",
                    help="list missed detections and the attribute values over-represented among missed documents")
    ap.add_argument("--profile", default="local", help="resource profile whose face analyzer to use")
    args = ap.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else list(dict.fromkeys(args.seeds))

    t0 = time.perf_counter()
    jobs = [(seed, i, args.batch_size, args.live, args.size, args.profile)
            for seed in seeds for i in range(args.identities)]
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            rows = list(pool.map(_work, jobs, chunksize=4))
    else:
        rows = [_work(j) for j in jobs]
    elapsed = time.perf_counter() - t0

    print(f"renderer={render.RENDERER_NAME} v{render.RENDERER_VERSION} identities/seed={args.identities} "
          f"live/identity={args.live} seeds={','.join(map(str, seeds))} size={args.size} "
          f"time={elapsed:.1f}s")
    per_seed = {seed: _report_seed(seed, [r for r in rows if r["seed"] == seed], args.live, args.verbose)
                for seed in seeds}
    if args.verbose:
        _report_document_misses(rows)

    print(f"== summary over {len(seeds)} seed(s)")
    print(f"{'seed':>8}  {'document':>9}  {'live':>8}  {'EER':>7}")
    for seed, m in per_seed.items():
        print(f"{seed:>8}  {m['document']:>9.2%}  {m['live']:>8.2%}  {m['eer']:>7.2%}")
    _print_worst(per_seed, "document", "lowest document detection")
    if args.live:
        _print_worst(per_seed, "live", "lowest live detection")
        _print_worst(per_seed, "eer", "highest EER")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
