"""Identity vectors sampled in a face-recognition embedding space, each within a maximum cosine similarity bound.

Slots (identities) are filled in order. Slot i's k-th candidate is drawn from its own seed stream,
`stream_seed(slot_seed, "identity-vector", k)`, so a vector depends only on its slot's recorded seed, its attempt
number and the vectors accepted before it: never on the block size or on what comes after it. A candidate is
accepted when its cosine similarity to every vector accepted before it (the earlier batches' vectors included) and
to every face of the leakage gallery is at most the bound; otherwise the slot draws again, at most `max_attempts`
times, after which the sampler stops with `VectorSpaceFull` saying how many vectors it placed.

Methods: `gaussian` (isotropic normal draws, normalized: Vec2Face issue #18), `pca` (draws of the Gaussian fitted on
real identity centres: Vec2Face #10/#11), `repulsion` (gaussian draws pushed apart on the hypersphere before the
check: HyperFace; the candidates of REPULSION_CHUNK consecutive slots move together, away from each other and from
their nearest vectors accepted before them, which stay fixed). Candidates are checked a block at a time against the
accepted vectors (see accepted.py: bfloat16 scans, the nearest rows re-scored in float64).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from synid_assets.core.dataset.seeds import stream_seed
from synid_assets.core.identity_vectors.accepted import ROUNDING_GUARD, AcceptedVectors, unit
from synid_assets.core.identity_vectors.centres import PcaGaussian
from synid_assets.core.identity_vectors.repulsion import repel

METHODS = ("gaussian", "pca", "repulsion")
DRAW_STREAM = "identity-vector"
REPULSION_NEIGHBOURS = 16  # accepted vectors each repelled candidate is pushed away from
# repulsion moves the candidates of REPULSION_CHUNK consecutive slots together (slots [0, 256), [256, 512), ...),
# away from each other and from the vectors accepted before them, whatever the block size
REPULSION_CHUNK = 256


class VectorSettingsError(ValueError):
    """Sampler settings that cannot work; the message names the setting."""


class VectorSpaceFull(RuntimeError):
    """The space holds no more vectors under the bound: `placed` of `requested` were placed before the stop."""

    def __init__(self, placed: int, requested: int, settings: SamplerSettings, dim: int, prior: int) -> None:
        self.placed, self.requested = placed, requested
        earlier = f" (and {prior} earlier vectors)" if prior else ""
        super().__init__(
            f"identity vectors: placed {placed} of {requested} {dim}-d vectors{earlier} at max similarity "
            f"{settings.max_similarity} ({settings.method}); slot {placed} found no candidate under the bound in "
            f"{settings.max_attempts} attempts: the space is full at this bound; lower the count or raise "
            "max_similarity"
        )


@dataclass(frozen=True)
class SamplerSettings:
    method: str = "gaussian"
    max_similarity: float = 0.3  # Vec2Face #18 used 0.3; its faiss script defaults to 0.4
    centres: str | None = None  # .npy of real identity centres (pca)
    max_attempts: int = 1000  # candidates one slot may draw before the sampler stops
    repulsion_steps: int = 50

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise VectorSettingsError(f"identity vectors: method {self.method!r} is not one of {list(METHODS)}")
        if not -1.0 < float(self.max_similarity) <= 1.0:
            raise VectorSettingsError(f"identity vectors: max_similarity {self.max_similarity} is not in (-1, 1]")
        if int(self.max_attempts) < 1 or int(self.repulsion_steps) < 0:
            raise VectorSettingsError("identity vectors: max_attempts must be >= 1 and repulsion_steps >= 0")
        if self.method == "pca" and not self.centres:
            raise VectorSettingsError("identity vectors: method pca needs centres (a .npy of real identity centres)")
        if self.method != "pca" and self.centres:
            raise VectorSettingsError(f"identity vectors: centres are used by method pca only, not {self.method}")

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> SamplerSettings:
        known = {"method", "max_similarity", "centres", "max_attempts", "repulsion_steps"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise VectorSettingsError(f"identity vectors: unknown option(s) {unknown} (options: {sorted(known)})")
        return cls(**{k: v for k, v in options.items() if v is not None})


@dataclass
class PlacedVectors:
    """The placed vectors in slot order, and for each: the accepted draw, and its nearest neighbours."""

    vectors: np.ndarray  # (n, d) float32 unit rows
    attempts: np.ndarray  # (n,) the attempt number of the accepted draw (0: the first candidate)
    draw_seeds: list[int]  # the seed of the accepted draw
    nearest_row: np.ndarray  # (n,) row among [earlier vectors, then these] most similar before it (-1: none)
    nearest_similarity: np.ndarray  # (n,) its cosine similarity (nan: none)
    gallery_match: list[str | None]  # the most similar leakage-gallery face (None: no gallery)
    gallery_similarity: np.ndarray  # (n,) its cosine similarity (nan: no gallery)
    candidates_drawn: int


def draw_seed(slot_seed: int, attempt: int) -> int:
    """The seed of a slot's attempt-th candidate: a sub-stream of the slot's recorded seed."""
    return stream_seed(int(slot_seed), DRAW_STREAM, attempt)


class _Candidates:
    """Raw candidate draws of a method (not yet normalized, not yet repelled)."""

    def __init__(self, dim: int, settings: SamplerSettings) -> None:
        self.dim = dim
        self.pca = PcaGaussian.from_file(settings.centres, dim) if settings.method == "pca" else None

    def draw(self, seeds: Sequence[int]) -> np.ndarray:
        normals = np.stack([np.random.default_rng(seed).standard_normal(self.dim) for seed in seeds])
        return normals if self.pca is None else self.pca.transform(normals)


class _GalleryCheck:
    def __init__(self, gallery: Any | None) -> None:
        self.gallery = gallery

    def __call__(self, candidates: np.ndarray) -> tuple[list[str | None], np.ndarray]:
        if self.gallery is None:
            return [None] * len(candidates), np.full(len(candidates), np.nan)
        hits = self.gallery.nearest(candidates)
        return [ref for ref, _ in hits], np.array([sim for _, sim in hits], dtype=np.float64)


def sample_vectors(
    slot_seeds: Sequence[int],
    dim: int,
    settings: SamplerSettings,
    prior: np.ndarray | None = None,
    gallery: Any | None = None,
    block: int = 2048,
    progress: Callable[[int, int], None] | None = None,
) -> PlacedVectors:
    """One unit vector per slot, each within `settings.max_similarity` of everything accepted before it.

    `prior`: the vectors accepted earlier (earlier batches), `gallery`: a leakage gallery (`.nearest(queries)`).
    Raises VectorSpaceFull when a slot finds no candidate under the bound in `max_attempts` draws.
    """
    n = len(slot_seeds)
    if dim < 1:
        raise VectorSettingsError(f"identity vectors: dim must be >= 1, not {dim}")
    draws = _Candidates(dim, settings)
    check_gallery = _GalleryCheck(gallery)
    accepted = AcceptedVectors(dim, prior, capacity=n)
    bound = float(settings.max_similarity) - ROUNDING_GUARD
    repulsion = settings.method == "repulsion"
    out = PlacedVectors(
        vectors=np.zeros((n, dim), np.float32), attempts=np.zeros(n, np.int32), draw_seeds=[0] * n,
        nearest_row=np.full(n, -1, np.int64), nearest_similarity=np.full(n, np.nan), gallery_match=[None] * n,
        gallery_similarity=np.full(n, np.nan), candidates_drawn=0,
    )  # fmt: skip

    def shaped(raw: np.ndarray) -> np.ndarray:
        if repulsion and settings.repulsion_steps:
            _, rows = accepted.scan(unit(raw), REPULSION_NEIGHBOURS)
            raw = repel(raw, accepted.rows[rows] if rows.size else None, steps=settings.repulsion_steps)
        return unit(raw)

    def place(slot: int, vector: np.ndarray, attempt: int, seed: int, near: tuple, match: tuple) -> None:
        accepted.add(vector)
        out.vectors[slot], out.attempts[slot], out.draw_seeds[slot] = vector, attempt, seed
        if near[0] > -np.inf:
            out.nearest_row[slot], out.nearest_similarity[slot] = near[1], near[0]
        out.gallery_match[slot], out.gallery_similarity[slot] = match

    if repulsion:
        block = REPULSION_CHUNK  # a repelled vector depends on its chunk: chunks are fixed by slot, not by `block`
    for start in range(0, n, block):
        slots = range(start, min(start + block, n))
        seeds = [draw_seed(slot_seeds[s], 0) for s in slots]
        candidates = shaped(draws.draw(seeds))
        out.candidates_drawn += len(seeds)
        before_best, before_row = accepted.nearest(candidates)  # against everything accepted before this block
        matches, gallery_sims = check_gallery(candidates)
        within = candidates @ candidates.T
        for p, slot in enumerate(slots):
            # earlier slots of this block are accepted rows prior_count + slot: compare with them via `within`,
            # except those placed by a redraw (their row is not this block's candidate)
            best, row = float(before_best[p]), int(before_row[p])
            if p:
                kept = out.attempts[start:slot] == 0
                sims = np.where(kept, within[p, :p], -np.inf)
                redrawn = np.flatnonzero(~kept)
                if len(redrawn):
                    sims[redrawn] = out.vectors[start + redrawn] @ candidates[p]
                q = int(np.argmax(sims))
                if sims[q] > best:
                    best, row = float(sims[q]), accepted.prior_count + start + q
            gallery_ok = np.isnan(gallery_sims[p]) or gallery_sims[p] <= bound
            if best <= bound and gallery_ok:
                place(slot, candidates[p], 0, seeds[p], (best, row), (matches[p], gallery_sims[p]))
                continue
            for attempt in range(1, settings.max_attempts):
                seed = draw_seed(slot_seeds[slot], attempt)
                vector = shaped(draws.draw([seed]))
                out.candidates_drawn += 1
                sims, rows = accepted.nearest(vector)
                match, gallery_sim = check_gallery(vector)
                if sims[0] <= bound and (np.isnan(gallery_sim[0]) or gallery_sim[0] <= bound):
                    place(slot, vector[0], attempt, seed, (float(sims[0]), int(rows[0])), (match[0], gallery_sim[0]))
                    break
            else:
                raise VectorSpaceFull(accepted.count - accepted.prior_count, n, settings, dim, accepted.prior_count)
        if progress is not None:
            progress(accepted.count - accepted.prior_count, n)
    return out
