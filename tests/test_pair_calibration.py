"""`synid calibrate`: thresholds from an LFW-layout pairs file of real images, or from precomputed scores."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from synid_assets.cli import main
from synid_assets.core.config.profiles import load_profile
from synid_assets.core.generation import render
from synid_assets.core.quality.pair_calibration import PairsFileError, read_pairs, thresholds_from_scores

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lfw_layout(tmp_path_factory) -> Path:
    """Five 'people', three images each, in LFW's <name>/<name>_<k:04d>.jpg layout, plus pairs.txt."""
    root = tmp_path_factory.mktemp("lfw")
    attributes = {"genders": "Female", "ages": "30-39"}
    for person in range(5):
        name = f"Person_{person}"
        (root / name).mkdir()
        images = [render.render_document(attributes, 1000 + person)]
        images += [render.render_live(attributes, 1000 + person, render.draw_live_variation(7 * person + k))
                   for k in range(2)]
        for k, image in enumerate(images, start=1):
            image.save(root / name / f"{name}_{k:04d}.jpg", quality=95)
    lines = ["1 20"]
    lines += [f"Person_{p} 1 {k}" for p in range(5) for k in (2, 3)]
    lines += [f"Person_{p} 1 Person_{q} 1" for p in range(5) for q in range(p + 1, 5)]
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root


def test_lfw_pairs_with_dlib(lfw_layout: Path, tmp_path: Path, capsys) -> None:
    pairs = read_pairs(lfw_layout / "pairs.txt", lfw_layout)
    assert sum(p.same for p in pairs) == 10 and sum(not p.same for p in pairs) == 10
    profile = tmp_path / "calibrated.yaml"
    shutil.copyfile(REPO / "resources" / "local.yaml", profile)
    code = main(["calibrate", "--embedder", "dlib", "--pairs", str(lfw_layout / "pairs.txt"),
                 "--images", str(lfw_layout), "--write", str(profile)])
    out = capsys.readouterr()
    # Ten impostor pairs cannot measure FMR 1e-3: nothing may be written, and it says so.
    assert code == 1 and "not measurable" in out.out and "nothing written" in out.err
    assert "FMR 0.001: threshold" in out.out


def test_precomputed_scores_and_write(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    genuine, impostor = rng.normal(0.7, 0.05, 500), rng.normal(0.2, 0.1, 20_000)
    rows = ["score,label"] + [f"{s:.6f},same" for s in genuine] + [f"{s:.6f},different" for s in impostor]
    scores = tmp_path / "scores.csv"
    scores.write_text("\n".join(rows) + "\n")
    profile = tmp_path / "p.yaml"
    shutil.copyfile(REPO / "resources" / "local.yaml", profile)
    assert main(["calibrate", "--embedder", "dlib", "--pairs", str(scores), "--write", str(profile)]) == 0
    expected = np.sort(impostor)[::-1][20]  # 20 of 20,000 scores may lie above the FMR 1e-3 threshold
    written = {t["fmr"]: t for t in load_profile(str(profile))["face_analyzer"]["thresholds"]}
    assert written[0.001]["value"] == pytest.approx(expected, abs=1e-4)
    assert "synid calibrate --embedder dlib" in written[0.001]["source"]
    assert written[0.0001]["value"] > written[0.001]["value"]
    result = thresholds_from_scores(genuine, impostor)
    assert result["fmr"][1e-3]["fnmr"] == pytest.approx(np.mean(genuine <= expected))


def test_bad_pairs_files_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "pairs.txt"
    bad.write_text("10 300\nAlice 1 2\nBob one 2\n")
    with pytest.raises(PairsFileError, match=r"pairs\.txt:3: image numbers must be integers"):
        read_pairs(bad, tmp_path)
    bad.write_text("score,label\n0.5,maybe\n")
    with pytest.raises(PairsFileError, match=r"pairs\.txt:2: label 'maybe'"):
        read_pairs(bad)
    bad.write_text("path1,path2,label\n../../etc/passwd,a.jpg,1\n")
    with pytest.raises(PairsFileError, match="escapes"):
        read_pairs(bad, tmp_path / "images")
