"""Score statistics for the face matcher: impostor thresholds at a target FMR, EER, renderer calibration."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_FMRS = (1e-3, 1e-4)
ATTRIBUTES_DIR = Path(__file__).resolve().parents[3] / "attributes"


def impostor_thresholds(impostor_scores: np.ndarray, fmrs: Sequence[float] = DEFAULT_FMRS) -> dict[float, float]:
    """For each FMR, the smallest threshold t (one of the scores) with share(scores > t) <= fmr.

    Taking t among the observed scores makes the answer exact for the sample: with n scores sorted
    descending, at most floor(fmr * n) of them may lie strictly above t.
    """
    scores = np.sort(np.asarray(impostor_scores, dtype=np.float64).ravel())[::-1]
    if scores.size == 0:
        raise ValueError("impostor_thresholds needs at least one impostor score")
    out: dict[float, float] = {}
    n = scores.size
    for fmr in fmrs:
        allowed = int(np.floor(float(fmr) * n + 1e-9))  # scores allowed strictly above t
        t = scores[min(allowed, n - 1)]
        out[float(fmr)] = float(t)
    return out


def eer(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """(equal error rate, threshold): where FNMR = share(genuine <= t) meets FMR = share(impostor > t).

    Scans every observed score as a candidate threshold and returns the one minimising |FMR - FNMR|,
    reporting their mean as the EER.
    """
    g = np.sort(np.asarray(genuine, dtype=np.float64).ravel())
    i = np.sort(np.asarray(impostor, dtype=np.float64).ravel())
    if g.size == 0 or i.size == 0:
        raise ValueError("eer needs genuine and impostor scores")
    cands = np.unique(np.concatenate([g, i]))
    fnmr = np.searchsorted(g, cands, side="right") / g.size  # genuine <= t rejected
    fmr = 1.0 - np.searchsorted(i, cands, side="right") / i.size  # impostor > t accepted
    k = int(np.argmin(np.abs(fmr - fnmr)))
    return float((fmr[k] + fnmr[k]) / 2.0), float(cands[k])


def attribute_sampler(attributes_dir: str | Path | None = None) -> Callable[[np.random.Generator], Mapping[str, str]]:
    """Identities drawn with the project's spec sampler from an attributes dir (default: the shipped spec)."""
    from synid_assets.core.spec.loading import load_attribute_spec
    from synid_assets.core.spec.sampling import sample_identity_attributes

    spec = load_attribute_spec(attributes_dir or ATTRIBUTES_DIR)
    return lambda rng: sample_identity_attributes(spec, rng)


def analyzer_settings(section: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(backend, options) of a profile's face_analyzer section: what the backend is built with, not the
    thresholds and operating point the filter reads from the same section."""
    skip = ("backend", "keep_loaded", "fmr", "thresholds")
    return str(section["backend"]), {k: v for k, v in section.items() if k not in skip and v is not None}


def profile_analyzer(profile: str | None = "local"):
    """The face analyzer a resource profile configures (backend and options), loaded."""
    from synid_assets.core.config.profiles import load_profile
    from synid_assets.core.config.registry import create_backend

    backend, options = analyzer_settings(load_profile(profile)["face_analyzer"])
    analyzer = create_backend("face_analyzer", backend, options)
    analyzer.load()
    return analyzer


def round_threshold_up(value: float, decimals: int = 4) -> float:
    """A similarity threshold rounded up to `decimals` places: never below the calibrated one, so a pair the
    calibrated threshold rejects (score <= t) is rejected by the written one too and the FMR stays at target."""
    from decimal import ROUND_CEILING, Decimal

    # repr() is the shortest text that reads back as exactly this float, so a value already at `decimals`
    # places stays as it is; rounding to nearest is monotonic, so the float read back is >= value.
    rounded = Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_CEILING)
    return float(rounded) + 0.0  # + 0.0 writes -0.0 as 0.0


def pairwise_cosine(embeddings: np.ndarray) -> np.ndarray:
    """Upper-triangle cosine similarities of L2-normalised rows."""
    e = np.asarray(embeddings, dtype=np.float64)
    sims = e @ e.T
    iu = np.triu_indices(len(e), k=1)
    return sims[iu]


def calibrate_renderer_thresholds(
    n_identities: int = 300, seed: int = 12345, analyzer=None, size: int = 256
) -> dict:
    """Render n document portraits of random identities, embed them, and derive impostor thresholds."""
    from synid_assets.core.dataset.seeds import identity_seed, rng_for
    from synid_assets.core.generation import render

    analyzer = analyzer or profile_analyzer("local")
    sample = attribute_sampler()
    embeddings = []
    for i in range(int(n_identities)):
        iseed = identity_seed(seed, "calibration", i)
        attrs = sample(rng_for(iseed, "attributes"))
        img = np.asarray(render.render_document(attrs, iseed, size=size))
        res = analyzer.analyze(img)
        if res.embedding is not None:
            embeddings.append(res.embedding)
    if len(embeddings) < 2:
        raise RuntimeError(f"calibration detected only {len(embeddings)} of {n_identities} faces")
    scores = pairwise_cosine(np.stack(embeddings))
    thresholds = impostor_thresholds(scores, DEFAULT_FMRS)
    return {
        "fmr_thresholds": thresholds,
        "pairs": int(scores.size),
        "n_identities": int(n_identities),
        "detected": len(embeddings),
        "seed": int(seed),
        "renderer": render.RENDERER_NAME,
        "renderer_version": render.RENDERER_VERSION,
        "model_id": getattr(analyzer, "model_id", None),
    }
