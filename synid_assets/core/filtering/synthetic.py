"""Synthetic embeddings shaped like face embeddings, for the filter's benchmarks and tests.

Real face embeddings are not isotropic: their variance falls off steeply over the dimensions and they share a
mean direction. `face_like_vectors` draws unit rows from a Gaussian whose variances fall as k^-a (a randomly
rotated basis), adds a common mean sized so that random pairs average a chosen cosine (~0.1), and plants
near-duplicate groups: a centre row and 1-4 duplicates at cosine U(0.75, 0.95) to it, each duplicate's offset
drawn from the same anisotropic cloud (so duplicates differ from their centre along the high-variance directions,
which is what defeats partition-based indexes). Members sit at random positions in identity order.

Presets name the shapes of issue 13: "k0.5", "k1", "k1.5" (variances k^-0.5, k^-1, k^-1.5, mean cosine 0.1),
"iso" (isotropic, no mean).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synid_assets.core.filtering.similarity import unit_rows


@dataclass(frozen=True)
class Shape:
    """A synthetic embedding shape: variance decay exponent, common-mean cosine, planted share."""

    spectrum: float
    mean_cosine: float = 0.1
    planted: float = 0.1


SHAPES: dict[str, Shape] = {
    "iso": Shape(0.0, 0.0),
    "k0.5": Shape(0.5),
    "k1": Shape(1.0),
    "k1.5": Shape(1.5),
}


def shape_named(name: str) -> Shape:
    """The preset `name` (iso, k0.5, k1, k1.5) or a bare exponent ("0.75": that spectrum, mean cosine 0.1)."""
    if name in SHAPES:
        return SHAPES[name]
    try:
        return Shape(float(name.removeprefix("k")))
    except ValueError:
        raise ValueError(f"unknown spectrum {name!r}: use one of {', '.join(SHAPES)} or an exponent") from None


def face_like_vectors(
    n: int, dim: int = 512, shape: Shape | str = "k1", seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(unit float32 rows (n, dim), sorted indices of planted-group members)."""
    if isinstance(shape, str):
        shape = shape_named(shape)
    rng = np.random.default_rng(seed)
    std = (np.arange(1, dim + 1, dtype=np.float64) ** (-shape.spectrum / 2)).astype(np.float32)
    rot = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
    # mean of length mu next to unit-norm noise: random pairs then have cosine ~ mu^2 / (1 + mu^2)
    mu = np.sqrt(shape.mean_cosine / (1 - shape.mean_cosine)) if shape.mean_cosine > 0 else 0.0
    mean = (mu * unit_rows(rng.standard_normal((1, dim)))[0]).astype(np.float32)

    def draw(k: int) -> np.ndarray:
        return unit_rows((rng.standard_normal((k, dim), dtype=np.float32) * std) @ rot, copy=False)

    x = np.empty((n, dim), dtype=np.float32)
    step = 65_536
    for s in range(0, n, step):
        x[s : s + step] = unit_rows(draw(min(step, n - s)) + mean, copy=False)
    sizes = rng.integers(1, 5, size=int(n * shape.planted / 3.5))
    members = rng.permutation(n)[: int(sizes.sum() + len(sizes))]
    centres, dups = members[: len(sizes)], members[len(sizes) :]
    owner = np.repeat(centres, sizes)
    for s in range(0, len(dups), step):
        c = x[owner[s : s + step]]
        u = draw(len(c))
        u -= np.einsum("ij,ij->i", u, c)[:, None] * c  # the offset is orthogonal to the centre
        u = unit_rows(u, copy=False)
        cos = rng.uniform(0.75, 0.95, size=(len(c), 1)).astype(np.float32)
        x[dups[s : s + step]] = cos * c + np.sqrt(1 - cos**2) * u
    return x, np.sort(members)


def neighbour_share_threshold(x: np.ndarray, share: float, queries: int = 2000, seed: int = 0) -> float:
    """The threshold at which about `share` of rows have a neighbour above it (estimated on sampled rows, each
    searched exactly against all rows), rounded to 3 decimals."""
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(n, queries), replace=False))
    best = np.full(len(rows), -np.inf, np.float32)
    queries = x[rows]
    for c0 in range(0, n, 16_384):  # 2,000 x 16,384 float32 blocks: 131 MB
        sims = queries @ x[c0 : c0 + 16_384].T
        inside = (rows >= c0) & (rows < c0 + 16_384)
        sims[np.nonzero(inside)[0], rows[inside] - c0] = -np.inf  # not itself
        np.maximum(best, sims.max(axis=1), out=best)
    return round(float(np.quantile(best, 1 - share)), 3)
