"""The face-analysis types every analyzer shares: one face's analysis, thresholds, the analyzer protocol.

No backend lives here, so dlib, InsightFace and the torch FR systems all import these without importing
each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class Threshold:
    """A cosine-similarity threshold calibrated for a false match rate."""

    fmr: float
    value: float
    source: str


@dataclass
class FaceAnalysis:
    detected: bool
    face_count: int
    bbox: tuple[int, int, int, int] | None  # left, top, right, bottom of the chosen (largest) face
    landmarks: list[list[float]] | None  # 5 points (x, y)
    embedding: np.ndarray | None  # float32, L2-normalised, shape (dim,)
    aligned: np.ndarray | None  # aligned face chip, CHIP_SIZE x CHIP_SIZE x 3 uint8 RGB
    detection_score: float | None
    error: str | None = None


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 RGB image, got shape {arr.shape}")
    arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)  # dlib needs C-contiguous memory


def no_face(face_count: int = 0, error: str = "no face detected") -> FaceAnalysis:
    return FaceAnalysis(
        detected=False,
        face_count=face_count,
        bbox=None,
        landmarks=None,
        embedding=None,
        aligned=None,
        detection_score=None,
        error=error,
    )


@runtime_checkable
class FaceAnalyzer(Protocol):
    model_id: str
    dim: int

    def analyze_many(self, images: Sequence[np.ndarray]) -> list[FaceAnalysis]: ...


@dataclass(frozen=True)
class EmbedderThresholds:
    """An embedder's decision thresholds per false match rate, each with its stated source."""

    model_id: str
    thresholds: tuple[Threshold, ...]

    def at(self, fmr: float) -> Threshold:
        for threshold in self.thresholds:
            if abs(threshold.fmr - fmr) <= 1e-12 * max(1.0, fmr):
                return threshold
        known = ", ".join(f"{t.fmr:g}" for t in self.thresholds) or "none"
        raise KeyError(f"embedder {self.model_id!r} has no threshold for FMR {fmr:g} (known: {known})")


def embed_detected(
    results: list[FaceAnalysis], embed_aligned: Callable[[list[np.ndarray]], Sequence[np.ndarray]]
) -> list[FaceAnalysis]:
    """Fill in the embedding of every detected face, embedding all their aligned crops in one call."""
    owners = [i for i, result in enumerate(results) if result.detected]
    if owners:
        embeddings = embed_aligned([results[i].aligned for i in owners])
        for i, embedding in zip(owners, embeddings, strict=True):
            results[i].embedding = embedding
    return results
