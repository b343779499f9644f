"""Verification on InsightFace-format `.bin` sets (LFW, CFP-FP, AgeDB-30, ...), as InsightFace's verification.py.

A `.bin` is a pickle of (bins, issame_list): 2N encoded images (JPEG/PNG bytes), pair i = images 2i and 2i+1,
and N booleans. Each image's embedding is the model's output for it plus for its horizontal flip, L2-normalised;
pair scores are squared Euclidean distances; the accuracy is 10-fold: on each fold the threshold (0 to 4 in
steps of 0.01) with the best accuracy on the other nine folds is applied to it.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from synid_assets.core.training.config import TrainingError

if TYPE_CHECKING:
    import torch

FIVE_SETS = ("lfw", "cfp_fp", "cplfw", "agedb_30", "calfw")
DISTANCE_THRESHOLDS = np.arange(0, 4, 0.01)


# The only globals a .bin may name: numpy arrays (some converters store images or issame as arrays).
_ALLOWED_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype")}


class _BinUnpickler(pickle.Unpickler):
    """A pickle is code: a .bin may hold lists, bytes, bools and numpy arrays, and nothing that runs."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (a .bin holds only images and booleans)")
        return super().find_class(module, name)


def read_bin(path: str | Path) -> tuple[list[bytes], np.ndarray]:
    """(encoded images, issame booleans) of a `.bin`; TrainingError names the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path}: verification .bin not found")
    try:
        with open(path, "rb") as handle:
            data = _BinUnpickler(handle, encoding="bytes").load()  # Python 2 pickles in InsightFace's releases
    except Exception as exc:  # noqa: BLE001 - unpickling a bad file raises many types
        raise TrainingError(f"{path}: not an InsightFace .bin (pickle of images and issame list): {exc}") from None
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TrainingError(f"{path}: expected a pickled (images, issame_list) pair, got {type(data).__name__}")
    bins, issame = data
    try:
        bins = [bytes(b) if not isinstance(b, bytes) else b for b in bins]
        issame_array = np.asarray([bool(s) for s in issame], dtype=bool)
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"{path}: images must be encoded bytes and issame booleans: {exc}") from None
    if len(issame_array) == 0:
        raise TrainingError(f"{path}: no pairs")
    if len(bins) != 2 * len(issame_array):
        raise TrainingError(f"{path}: {len(bins)} images for {len(issame_array)} pairs (needs 2 images a pair)")
    return bins, issame_array


def decode_images(bins: list[bytes], image_size: int, source: str | Path) -> np.ndarray:
    """uint8 (N, 3, size, size) RGB; TrainingError names the file and the first image that does not decode."""
    from PIL import Image

    out = np.empty((len(bins), 3, image_size, image_size), dtype=np.uint8)
    for i, data in enumerate(bins):
        try:
            with Image.open(io.BytesIO(data)) as img:
                rgb = img.convert("RGB")
        except (OSError, ValueError) as exc:
            raise TrainingError(f"{source}: image {i} does not decode: {exc}") from None
        if rgb.size != (image_size, image_size):
            rgb = rgb.resize((image_size, image_size), Image.BILINEAR, reducing_gap=None)
        out[i] = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
    return out


def flip_sum_embeddings(model: torch.nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """L2-normalised (embedding(image) + embedding(flipped image)), float64 (N, D)."""
    import torch

    from synid_assets.core.training.data import normalize

    parameter = next(model.parameters())
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = normalize(torch.from_numpy(images[start : start + batch_size])).to(parameter.device)
            feats = model(x).float() + model(x.flip(3)).float()
            out.append(feats.cpu().double().numpy())
    emb = np.concatenate(out)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def _folds(n: int, n_folds: int) -> list[np.ndarray]:
    """The test indices of sklearn's KFold(n_splits, shuffle=False): consecutive, the first n % k one longer."""
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [np.arange(bounds[i], bounds[i + 1]) for i in range(n_folds)]


def _accuracy(threshold: float, dist: np.ndarray, issame: np.ndarray) -> float:
    predict = dist < threshold
    tp = np.sum(predict & issame)
    tn = np.sum(~predict & ~issame)
    return float(tp + tn) / dist.size


def verification_accuracy(
    emb1: np.ndarray, emb2: np.ndarray, issame: np.ndarray, n_folds: int = 10,
    thresholds: np.ndarray = DISTANCE_THRESHOLDS,
) -> dict[str, float]:
    """10-fold accuracy of unit embeddings' pairs, as InsightFace's calculate_roc.

    Returns accuracy (mean over folds), std (over folds), threshold (the mean of the folds' chosen squared
    distances) and cosine_threshold (the same as a cosine similarity, 1 - d/2).
    """
    issame = np.asarray(issame, dtype=bool)
    n = len(issame)
    if n < n_folds:
        raise TrainingError(f"{n} pairs: need at least {n_folds} for {n_folds}-fold verification")
    dist = np.sum(np.square(np.asarray(emb1, np.float64) - np.asarray(emb2, np.float64)), axis=1)
    accuracies, chosen = [], []
    all_index = np.arange(n)
    for test in _folds(n, n_folds):
        train = np.setdiff1d(all_index, test)
        train_acc = [_accuracy(t, dist[train], issame[train]) for t in thresholds]
        best = float(thresholds[int(np.argmax(train_acc))])  # the first best, as np.argmax in InsightFace
        chosen.append(best)
        accuracies.append(_accuracy(best, dist[test], issame[test]))
    threshold = float(np.mean(chosen))
    return {
        "accuracy": float(np.mean(accuracies)),
        "std": float(np.std(accuracies)),
        "threshold": threshold,
        "cosine_threshold": 1.0 - threshold / 2.0,
        "pairs": n,
    }


def evaluate_bin(
    model: torch.nn.Module, bin_path: str | Path, image_size: int, batch_size: int = 256
) -> dict[str, Any]:
    """The verification result of `model` on one `.bin`."""
    bins, issame = read_bin(bin_path)
    images = decode_images(bins, image_size, bin_path)
    emb = flip_sum_embeddings(model, images, batch_size)
    return verification_accuracy(emb[0::2], emb[1::2], issame)


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{"sets": results, "average": mean accuracy, and "five_set_average" when the five standard sets are all in}."""
    summary: dict[str, Any] = {
        "sets": results,
        "average": float(np.mean([r["accuracy"] for r in results.values()])) if results else None,
    }
    if all(name in results for name in FIVE_SETS):
        summary["five_set_average"] = float(np.mean([results[name]["accuracy"] for name in FIVE_SETS]))
    return summary


def write_bin(path: str | Path, encoded_images: list[bytes], issame: list[bool]) -> None:
    """Write a `.bin` in InsightFace's layout (a pickle of (images, issame_list)), atomically."""
    from synid_assets.core.dataset.layout import atomic_write_bytes

    if len(encoded_images) != 2 * len(issame):
        raise ValueError(f"{len(encoded_images)} images for {len(issame)} pairs")
    atomic_write_bytes(Path(path), pickle.dumps((list(encoded_images), [bool(s) for s in issame]), protocol=4))
