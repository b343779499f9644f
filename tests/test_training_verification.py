"""Verification math (10-fold, as InsightFace), .bin reading errors, augmentations and heads: no dataset needed."""

from __future__ import annotations

import io
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synid_assets.core.training.config import TrainingError
from synid_assets.core.training.verification import read_bin, verification_accuracy, write_bin


def _pairs_with_distances(distances: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Unit 2-d vectors whose squared distances are `distances` (d = 2 - 2 cos a)."""
    angles = np.arccos(1.0 - np.asarray(distances) / 2.0)
    emb1 = np.tile([1.0, 0.0], (len(distances), 1))
    emb2 = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return emb1, emb2


def test_ten_fold_accuracy_matches_the_hand_computed_case() -> None:
    # 20 pairs -> 10 folds of 2 (pair 2k genuine, 2k+1 impostor). Genuine at d 0.455, impostors at 1.995, but
    # genuine pair 0 at 3.005. Fold 0 held out: nine folds separate perfectly from t = 0.46 (the first best of
    # 0, 0.01, ...), so pair 0 is called different: 1/2. Any other fold: the hard pair is in training; t in
    # (0.455, 1.995] gets 17/18 there, more than any t > 3.005 (9 impostors wrong), first best 0.46 again,
    # and its test fold is right: 2/2. Mean (0.5 + 9) / 10 = 0.95; std sqrt((0.45^2 + 9 * 0.05^2) / 10) = 0.15.
    distances = [3.005 if i == 0 else (0.455 if i % 2 == 0 else 1.995) for i in range(20)]
    issame = np.array([i % 2 == 0 for i in range(20)])
    emb1, emb2 = _pairs_with_distances(distances)
    result = verification_accuracy(emb1, emb2, issame)
    assert result["accuracy"] == pytest.approx(0.95)
    assert result["std"] == pytest.approx(0.15)
    assert result["threshold"] == pytest.approx(0.46)
    assert result["cosine_threshold"] == pytest.approx(1 - 0.46 / 2)
    assert result["pairs"] == 20


def test_uneven_folds_follow_kfold_sizes() -> None:
    # 23 pairs: folds of 3, 3, 3, 2, ... (sklearn's KFold). All perfectly separable: accuracy 1 on every fold.
    issame = np.array([i % 2 == 0 for i in range(23)])
    emb1, emb2 = _pairs_with_distances([0.3 if s else 2.5 for s in issame])
    result = verification_accuracy(emb1, emb2, issame)
    assert result["accuracy"] == 1.0 and result["std"] == 0.0
    with pytest.raises(TrainingError, match="at least 10"):
        verification_accuracy(emb1[:5], emb2[:5], issame[:5])


def _jpeg(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (112, 112), color).save(buffer, format="JPEG")
    return buffer.getvalue()


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("echo should-not-run",))


def test_read_bin_round_trip_and_errors_name_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.bin"
    write_bin(good, [_jpeg((10, 20, 30)), _jpeg((40, 50, 60))], [True])
    images, issame = read_bin(good)
    assert len(images) == 2 and issame.tolist() == [True]
    as_arrays = tmp_path / "arrays.bin"  # some converters store numpy arrays
    as_arrays.write_bytes(pickle.dumps(([np.frombuffer(b, np.uint8) for b in images], np.array([True]))))
    assert read_bin(as_arrays)[0] == images

    cases = {
        "missing.bin": (None, "not found"),
        "text.bin": (b"this is not a pickle", "not an InsightFace .bin"),
        "dict.bin": (pickle.dumps({"a": 1}), "expected a pickled"),
        "count.bin": (pickle.dumps(([_jpeg((1, 2, 3))] * 3, [True, False])), "3 images for 2 pairs"),
        "empty.bin": (pickle.dumps(([], [])), "no pairs"),
        "code.bin": (pickle.dumps(_RunsCode()), "refusing to load posix.system"),
    }
    for name, (payload, message) in cases.items():
        path = tmp_path / name
        if payload is not None:
            path.write_bytes(payload)
        with pytest.raises(TrainingError, match=message) as info:
            read_bin(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_undecodable_image_names_file_and_index(tmp_path: Path) -> None:
    from synid_assets.core.training.verification import decode_images

    path = tmp_path / "broken.bin"
    write_bin(path, [_jpeg((1, 2, 3)), b"not an image"], [False])
    images, _ = read_bin(path)
    with pytest.raises(TrainingError, match=r"broken\.bin: image 1 does not decode"):
        decode_images(images, 112, path)
    decoded = decode_images(images[:1], 56, path)
    assert decoded.shape == (1, 3, 56, 56) and decoded.dtype == np.uint8


def test_augment_flips_and_erases_like_torchvision() -> None:
    import torch

    from synid_assets.core.training.data import augment, normalize

    batch = torch.randint(1, 255, (256, 3, 32, 32), dtype=torch.uint8)
    batch[..., 16:] = 255  # right half white: a flip moves it left
    plain = augment(batch, torch.Generator().manual_seed(0), flip=False, random_erasing=False)
    assert torch.equal(plain, normalize(batch)) and plain.min() >= -1 and plain.max() <= 1
    flipped = augment(batch, torch.Generator().manual_seed(0), flip=True, random_erasing=False)
    moved = (flipped[:, :, :, :16] == 1.0).all(dim=(1, 2, 3))
    assert 0.35 < moved.float().mean() < 0.65  # p = 0.5
    assert torch.equal(flipped[moved], normalize(batch)[moved].flip(3))
    erased = augment(batch, torch.Generator().manual_seed(1), flip=False, random_erasing=True)
    zero = erased == 0.0  # the inputs are never 127.5, so only erasing makes zeros
    hit = zero.any(dim=(1, 2, 3))
    assert 0.35 < hit.float().mean() < 0.65
    for i in hit.nonzero().squeeze(1).tolist():
        rows = zero[i, 0].any(dim=1).nonzero().squeeze(1)
        cols = zero[i, 0].any(dim=0).nonzero().squeeze(1)
        box = zero[i, :, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all(), "erasing is one rectangle over every channel"
        area = box.shape[1] * box.shape[2] / (32 * 32)
        assert 0.01 <= area <= 0.4
    # The same generator state gives the same batch (a resumed epoch repeats its draws).
    again = augment(batch, torch.Generator().manual_seed(1), flip=False, random_erasing=True)
    assert torch.equal(erased, again)


def test_margin_heads_put_the_margin_on_the_true_class() -> None:
    import dataclasses

    import torch
    import torch.nn.functional as F

    from synid_assets.core.training.config import PRESETS
    from synid_assets.core.training.models import build_head

    config = dataclasses.replace(PRESETS["vec2face"], embedding_size=8)
    torch.manual_seed(0)
    emb = torch.randn(4, 8)
    labels = torch.tensor([0, 1, 2, 0])
    for head_name, margin in (("arcface", 0.5), ("cosface", 0.35)):
        head = build_head(dataclasses.replace(config, head=head_name), 3)
        cos = F.linear(F.normalize(emb), F.normalize(head.weight)).detach()
        logits = head(emb, labels).detach()
        for row, label in enumerate(labels.tolist()):
            theta = math.acos(float(cos[row, label]))
            if head_name == "cosface":
                expected = 64 * (float(cos[row, label]) - margin)
            elif theta + margin < math.pi:
                expected = 64 * math.cos(theta + margin)
            else:
                expected = 64 * (float(cos[row, label]) - math.sin(math.pi - margin) * margin)
            assert float(logits[row, label]) == pytest.approx(expected, abs=1e-4)
            others = [c for c in range(3) if c != label]
            assert torch.allclose(logits[row, others], 64 * cos[row, others], atol=1e-5)
    adaface = build_head(dataclasses.replace(config, head="adaface"), 3)
    logits = adaface(emb, labels)
    assert torch.isfinite(logits).all() and logits.shape == (4, 3)
    assert float(adaface.batch_mean) != 20.0  # the norm statistics move in training mode
