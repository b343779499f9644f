"""Face analysis with dlib: HOG detection, 5-point landmarks, aligned chip and ResNet descriptor.

dlib is imported inside `DlibFaceAnalyzer.load`, so importing this module stays cheap. The model files
come from the `face-recognition-models` wheel, found on disk without importing it (its __init__ imports
pkg_resources, which recent setuptools no longer ships).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synid_assets.core.analysis.types import FaceAnalysis, as_rgb_uint8, no_face
from synid_assets.core.config.requirements import BackendRequirements, ModelNeed
from synid_assets.core.errors import ModelLoadError

SHAPE_PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"
RECOGNITION_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CHIP_SIZE = 150  # the ResNet descriptor was trained on 150x150 chips with dlib's default padding
CHIP_PADDING = 0.25


class FaceModelError(ModelLoadError):
    """The dlib model files are missing or unreadable."""


def default_model_dir() -> Path | None:
    """The `models/` folder of the installed face-recognition-models package, or None if absent."""
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "models"
        if candidate.is_dir():
            return candidate
    return None


def model_paths(model_dir: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """(shape predictor, recognition model) paths; raises FaceModelError naming what is missing."""
    base = Path(model_dir) if model_dir is not None else default_model_dir()
    if base is None:
        raise FaceModelError(
            "dlib model files not found: the face-recognition-models package is not installed. "
            "Fix: `pip install face-recognition-models`, or pass model_dir pointing at a folder holding "
            f"{SHAPE_PREDICTOR_FILE} and {RECOGNITION_MODEL_FILE}."
        )
    paths = (base / SHAPE_PREDICTOR_FILE, base / RECOGNITION_MODEL_FILE)
    for path in paths:
        if not path.is_file():
            raise FaceModelError(
                f"dlib model file missing: {path}. Fix: `pip install face-recognition-models`, or set "
                f"model_dir to a folder holding {SHAPE_PREDICTOR_FILE} and {RECOGNITION_MODEL_FILE}."
            )
    return paths


class DlibFaceAnalyzer:
    """HOG detector + 5-point landmarks + dlib ResNet v1 descriptor (128-d, cosine-compared)."""

    model_id = "dlib_face_recognition_resnet_model_v1"
    dim = 128
    # What it needs (see core/config/requirements.py): the CPU. Its model files come with the
    # face-recognition-models package (or a local model_dir): nothing to fetch.
    requirements = BackendRequirements(device="cpu")

    @classmethod
    def required_models(cls, options: Mapping[str, Any]) -> list[ModelNeed]:
        return []

    def __init__(
        self, model_dir: str | None = None, upsample: int = 1, num_jitters: int = 0, retry_upsample: int | None = None
    ) -> None:
        self.model_dir = model_dir
        self.upsample = int(upsample)
        # A second, finer pass over images where the first found nothing: HOG misses some faces at one
        # scale that it finds at the next. Only failures pay for it; a miss is still a miss after it.
        self.retry_upsample = int(retry_upsample) if retry_upsample else None
        self.num_jitters = int(num_jitters)
        self._detector = None
        self._predictor = None
        self._facerec = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the three dlib models once; later calls are no-ops."""
        if self._facerec is not None:
            return
        with self._lock:
            if self._facerec is not None:
                return
            shape_path, rec_path = model_paths(self.model_dir)
            import dlib  # heavy native import, kept out of module import time

            try:
                detector = dlib.get_frontal_face_detector()
                predictor = dlib.shape_predictor(str(shape_path))
                facerec = dlib.face_recognition_model_v1(str(rec_path))
            except RuntimeError as exc:
                raise FaceModelError(f"cannot load dlib models from {shape_path.parent}: {exc}") from exc
            self._detector, self._predictor, self._facerec = detector, predictor, facerec

    def _detect(self, img: np.ndarray):
        """(chosen face's FaceAnalysis without embedding, shape) or (no-face analysis, None)."""
        rects, scores, _ = self._detector.run(img, self.upsample, 0.0)
        if len(rects) == 0 and self.retry_upsample and self.retry_upsample > self.upsample:
            rects, scores, _ = self._detector.run(img, self.retry_upsample, 0.0)
        if len(rects) == 0:
            return no_face(), None
        # Largest face: the subject of a portrait, not a face in the background.
        areas = [r.width() * r.height() for r in rects]
        best = int(np.argmax(areas))
        rect = rects[best]
        shape = self._predictor(img, rect)
        import dlib

        chip = dlib.get_face_chip(img, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        analysis = FaceAnalysis(
            detected=True,
            face_count=len(rects),
            bbox=(int(rect.left()), int(rect.top()), int(rect.right()), int(rect.bottom())),
            landmarks=[[float(p.x), float(p.y)] for p in shape.parts()],
            embedding=None,
            aligned=np.asarray(chip, dtype=np.uint8),
            detection_score=float(scores[best]),
        )
        return analysis, shape

    @staticmethod
    def _normalise(descriptor) -> np.ndarray:
        vec = np.asarray(descriptor, dtype=np.float32).ravel()
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm > 0 else vec

    def analyze(self, image: np.ndarray) -> FaceAnalysis:
        """Analyse one RGB uint8 image; no face gives detected=False and embedding=None."""
        self.load()
        img = as_rgb_uint8(image)
        analysis, shape = self._detect(img)
        if shape is None:
            return analysis
        descriptor = self._facerec.compute_face_descriptor(img, shape, self.num_jitters)
        analysis.embedding = self._normalise(descriptor)
        return analysis

    def analyze_many(self, images: Sequence[np.ndarray]) -> list[FaceAnalysis]:
        """Analyse several images; descriptors of all detected faces go through the network as one batch."""
        self.load()
        results: list[FaceAnalysis] = []
        chips: list[np.ndarray] = []
        chip_owner: list[int] = []
        for image in images:
            analysis, shape = self._detect(as_rgb_uint8(image))
            if shape is not None:
                chips.append(analysis.aligned)
                chip_owner.append(len(results))
            results.append(analysis)
        if chips:
            if self.num_jitters > 0:
                descriptors = [self._facerec.compute_face_descriptor(c, self.num_jitters) for c in chips]
            else:
                # The aligned chips are exactly what compute_face_descriptor(img, shape) extracts itself.
                descriptors = self._facerec.compute_face_descriptor(chips)
            for owner, desc in zip(chip_owner, descriptors, strict=True):
                results[owner].embedding = self._normalise(desc)
        return results
