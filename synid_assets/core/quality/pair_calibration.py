"""Thresholds from labelled pairs: an LFW-style pairs file of images, or precomputed scores.

Formats read by `read_pairs`:
- LFW `pairs.txt`: an optional header line ("10 300"), then `name i j` (same person) or
  `name1 i name2 j` (different people); image k of `name` is `<images>/<name>/<name>_<k:04d>.jpg`.
- CSV with a header: `path1,path2,label` (image pairs, paths relative to --images or absolute), or
  `score,label` (precomputed scores). Labels: 1/0, true/false, same/different, genuine/impostor.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synid_assets.core.quality.calibration import eer, impostor_thresholds

_TRUE = {"1", "true", "same", "genuine", "match", "yes"}
_FALSE = {"0", "false", "different", "impostor", "nonmatch", "non-match", "no"}


class PairsFileError(ValueError):
    """A pairs file that cannot be read; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class Pair:
    first: Path | None
    second: Path | None
    same: bool
    score: float | None = None


def _label(text: str, path: Path, line: int) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise PairsFileError(f"{path}:{line}: label {text!r} is not one of 1/0, same/different, genuine/impostor")


def _inside(images: Path | None, relative: str, path: Path, line: int) -> Path:
    """The image path under --images, normalised lexically: '..' may not climb out of the dir, while symlinks
    inside it (an LFW tree linked rather than copied) are followed wherever they point, as the user laid them out."""
    candidate = Path(relative)
    if not candidate.is_absolute():
        if images is None:
            raise PairsFileError(f"{path}:{line}: relative image path {relative!r} needs --images DIR")
        root = Path(os.path.abspath(images))
        candidate = Path(os.path.normpath(root / candidate))
        if not candidate.is_relative_to(root):
            raise PairsFileError(f"{path}:{line}: image path {relative!r} escapes {images} (a '..' climbs out)")
    return candidate


def read_pairs(path: str | Path, images: str | Path | None = None) -> list[Pair]:
    path = Path(path)
    root = Path(images) if images else None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PairsFileError(f"{path}: cannot read pairs file: {exc}") from exc
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    if "," in first:
        return _read_csv(path, lines, root)
    pairs = []
    for number, raw in enumerate(lines, start=1):
        fields = raw.split()
        if not fields or (number == 1 and len(fields) <= 2 and all(f.isdigit() for f in fields)):
            continue  # blank, or LFW's "folds pairs-per-fold" header
        if len(fields) == 3:
            name, i, j = fields
            a, b, same = (name, i), (name, j), True
        elif len(fields) == 4:
            a, b, same = (fields[0], fields[1]), (fields[2], fields[3]), False
        else:
            raise PairsFileError(f"{path}:{number}: expected 'name i j' or 'name1 i name2 j', got {raw!r}")
        try:
            first_path = _inside(root, f"{a[0]}/{a[0]}_{int(a[1]):04d}.jpg", path, number)
            second_path = _inside(root, f"{b[0]}/{b[0]}_{int(b[1]):04d}.jpg", path, number)
        except ValueError as exc:
            if isinstance(exc, PairsFileError):
                raise
            raise PairsFileError(f"{path}:{number}: image numbers must be integers: {raw!r}") from exc
        pairs.append(Pair(first_path, second_path, same))
    if not pairs:
        raise PairsFileError(f"{path}: no pairs found")
    return pairs


def _read_csv(path: Path, lines: Sequence[str], root: Path | None) -> list[Pair]:
    reader = csv.DictReader(lines)
    columns = set(reader.fieldnames or [])
    pairs = []
    if {"score", "label"} <= columns:
        for number, row in enumerate(reader, start=2):
            try:
                score = float(row["score"])
            except (TypeError, ValueError) as exc:
                raise PairsFileError(f"{path}:{number}: score {row['score']!r} is not a number") from exc
            pairs.append(Pair(None, None, _label(row["label"], path, number), score))
    elif {"path1", "path2", "label"} <= columns:
        for number, row in enumerate(reader, start=2):
            pairs.append(
                Pair(
                    _inside(root, row["path1"], path, number),
                    _inside(root, row["path2"], path, number),
                    _label(row["label"], path, number),
                )
            )
    else:
        raise PairsFileError(f"{path}:1: a CSV pairs file needs columns score,label or path1,path2,label")
    if not pairs:
        raise PairsFileError(f"{path}: no pairs found")
    return pairs


@dataclass(frozen=True)
class ImageFaces:
    """What the analyzer found in one image: how many faces, and the box of the one scored (the largest)."""

    face_count: int
    bbox: tuple[int, int, int, int] | None


@dataclass
class PairScores:
    """Scores of the labelled pairs, with what was left out and why."""

    genuine: np.ndarray
    impostor: np.ndarray
    pairs: int
    precomputed: int = 0
    skipped_genuine: int = 0  # pairs left out because an image of theirs had no face
    skipped_impostor: int = 0
    images: dict[Path, ImageFaces] = field(default_factory=dict)

    @property
    def skipped_no_face(self) -> int:
        return self.skipped_genuine + self.skipped_impostor

    @property
    def images_without_face(self) -> list[Path]:
        return [path for path, faces in self.images.items() if faces.bbox is None]

    @property
    def images_with_several_faces(self) -> dict[Path, ImageFaces]:
        return {path: faces for path, faces in self.images.items() if faces.face_count > 1}


def score_pairs(pairs: Sequence[Pair], analyzer: Any) -> PairScores:
    """Cosine scores of each pair's largest faces. Images are embedded once each; a pair with an undetected
    face is counted and left out, never scored on the whole frame."""
    from synid_assets.core.analysis.images import load_rgb

    embeddings: dict[Path, np.ndarray | None] = {}
    images: dict[Path, ImageFaces] = {}
    needed = sorted({p for pair in pairs if pair.score is None for p in (pair.first, pair.second)})
    for start in range(0, len(needed), 32):
        chunk = needed[start : start + 32]
        for path, analysis in zip(chunk, analyzer.analyze_many([load_rgb(p) for p in chunk]), strict=True):
            found = analysis.detected and analysis.embedding is not None
            embeddings[path] = analysis.embedding if found else None
            images[path] = ImageFaces(int(analysis.face_count), analysis.bbox if found else None)
    result = PairScores(np.empty(0), np.empty(0), pairs=len(pairs), images=images)
    genuine, impostor = [], []
    for pair in pairs:
        if pair.score is not None:
            score = pair.score
            result.precomputed += 1
        else:
            a, b = embeddings[pair.first], embeddings[pair.second]
            if a is None or b is None:
                if pair.same:
                    result.skipped_genuine += 1
                else:
                    result.skipped_impostor += 1
                continue
            score = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
        (genuine if pair.same else impostor).append(score)
    result.genuine, result.impostor = np.asarray(genuine, np.float64), np.asarray(impostor, np.float64)
    return result


def thresholds_for(scores: PairScores, fmrs: Sequence[float] = (1e-3, 1e-4)) -> dict[str, Any]:
    """`thresholds_from_scores` of scored pairs; when no impostor pair could be scored, the error says why."""
    if scores.impostor.size == 0 and scores.skipped_impostor:
        missing = scores.images_without_face
        raise ValueError(
            f"all {scores.skipped_impostor} impostor pairs were skipped because an image of each had no face "
            f"detected ({len(missing)} of {len(scores.images)} images without a face); "
            "thresholds need scored different-identity pairs"
        )
    return thresholds_from_scores(scores.genuine, scores.impostor, fmrs)


def thresholds_from_scores(
    genuine: np.ndarray, impostor: np.ndarray, fmrs: Sequence[float] = (1e-3, 1e-4)
) -> dict[str, Any]:
    """Threshold at each FMR (from the impostor scores) and the FNMR of the genuine scores there."""
    if impostor.size == 0:
        raise ValueError("no impostor pairs: thresholds need different-identity pairs")
    result: dict[str, Any] = {"genuine": int(genuine.size), "impostor": int(impostor.size), "fmr": {}}
    for fmr, threshold in impostor_thresholds(impostor, fmrs).items():
        result["fmr"][fmr] = {
            "threshold": threshold,
            "fnmr": float(np.mean(genuine <= threshold)) if genuine.size else None,
            # Fewer than 1/FMR impostor pairs cannot pin down that FMR.
            "measurable": bool(impostor.size * fmr >= 1.0),
        }
    if genuine.size:
        result["eer"], result["eer_threshold"] = eer(genuine, impostor)
    return result
