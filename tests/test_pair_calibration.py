"""`synid calibrate`: thresholds from an LFW-layout pairs file of real images, or from precomputed scores."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synid_assets.cli import main
from synid_assets.core.config.profiles import load_profile
from synid_assets.core.generation import render
from synid_assets.core.quality.calibration import round_threshold_up
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


def _written(profile: Path) -> dict[float, float]:
    return {t["fmr"]: t["value"] for t in load_profile(str(profile))["face_analyzer"]["thresholds"]}


def test_written_threshold_is_rounded_up_and_keeps_the_fmr(tmp_path: Path, capsys) -> None:
    """A threshold of 0.9124274 with impostors just above 0.9124: writing 0.9124 would accept them."""
    rng = np.random.default_rng(1)
    impostor = np.concatenate([rng.uniform(0.95, 0.99, 20), [0.9124274, 0.91242, 0.91241], rng.uniform(0, 0.9, 19_977)])
    genuine = rng.uniform(0.9, 1.0, 200)
    rows = ["score,label"] + [f"{float(s)!r},same" for s in genuine] + [f"{float(s)!r},different" for s in impostor]
    scores = tmp_path / "scores.csv"
    scores.write_text("\n".join(rows) + "\n")
    profile = tmp_path / "p.yaml"
    shutil.copyfile(REPO / "resources" / "local.yaml", profile)
    assert main(["calibrate", "--embedder", "dlib", "--pairs", str(scores), "--write", str(profile)]) == 0
    computed = thresholds_from_scores(genuine, impostor)["fmr"]
    assert computed[1e-3]["threshold"] == 0.9124274
    written = _written(profile)
    assert written[0.001] == 0.9125
    for fmr, value in written.items():
        assert value >= computed[fmr]["threshold"]
        assert np.mean(impostor > value) <= fmr
    assert "FMR 0.001: threshold 0.912427" in capsys.readouterr().out


def test_round_threshold_up() -> None:
    assert round_threshold_up(0.9124274) == 0.9125
    assert round_threshold_up(0.9124) == 0.9124  # already at four decimals: unchanged
    assert round_threshold_up(0.1 + 0.2) == 0.3001  # 0.30000000000000004 is above 0.3
    assert round_threshold_up(-0.00001) == 0.0 and str(round_threshold_up(-0.00001)) == "0.0"
    for value in np.random.default_rng(2).uniform(-1, 1, 1000):
        assert value <= round_threshold_up(value) < value + 1e-4


def test_symlinked_images_dir_and_files_are_read(lfw_layout: Path, tmp_path: Path, capsys) -> None:
    """An LFW tree laid out by links: the images dir is a link, and each person's files are links too."""
    real = tmp_path / "real"
    real.mkdir()
    linked_root = tmp_path / "lfw_links"
    linked_root.mkdir()
    for person in ("Person_0", "Person_1"):
        (linked_root / person).mkdir()
        for k in (1, 2):
            name = f"{person}_{k:04d}.jpg"
            (linked_root / person / name).symlink_to(lfw_layout / person / name)
    images = tmp_path / "images"
    images.symlink_to(linked_root, target_is_directory=True)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("Person_0 1 2\nPerson_1 1 2\nPerson_0 1 Person_1 2\n")
    read = read_pairs(pairs, images)
    assert [p.first for p in read][:1] == [images / "Person_0" / "Person_0_0001.jpg"]
    code = main(["calibrate", "--embedder", "dlib", "--pairs", str(pairs), "--images", str(images)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "images: 4 read, 4 with a face, 0 without" in out.out
    # A real '..' escape is still refused, through a link or not.
    escape = tmp_path / "escape.csv"
    escape.write_text("path1,path2,label\nPerson_0/../../real/x.jpg,Person_0/Person_0_0001.jpg,1\n")
    with pytest.raises(PairsFileError, match=r"escape\.csv:2: image path .* escapes"):
        read_pairs(escape, images)
    # '..' that stays inside the dir is fine.
    inside = tmp_path / "inside.csv"
    inside.write_text("path1,path2,label\nPerson_1/../Person_0/Person_0_0001.jpg,Person_1/Person_1_0001.jpg,0\n")
    assert read_pairs(inside, images)[0].first == images / "Person_0" / "Person_0_0001.jpg"


def _group_photo(path: Path) -> None:
    """Three rendered documents side by side: the third face is the largest."""
    documents = [render.render_document({"genders": "Male", "origins": "West European"}, seed) for seed in (1, 2, 3)]
    group = Image.new("RGB", (sum(d.width for d in documents), documents[0].height), (255, 255, 255))
    for k, document in enumerate(documents):
        group.paste(document, (k * document.width, 0))
    group.save(path, quality=95)


def test_group_photos_faces_and_score_ranges_are_reported(lfw_layout: Path, tmp_path: Path, capsys) -> None:
    images = tmp_path / "images"
    shutil.copytree(lfw_layout, images)
    _group_photo(images / "group.jpg")
    Image.new("RGB", (200, 200), (128, 128, 128)).save(images / "blank.jpg")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "path1,path2,label\n"
        "Person_0/Person_0_0001.jpg,Person_0/Person_0_0002.jpg,same\n"
        "Person_1/Person_1_0001.jpg,Person_1/Person_1_0002.jpg,same\n"
        "Person_0/Person_0_0001.jpg,group.jpg,different\n"
        "Person_0/Person_0_0001.jpg,Person_2/Person_2_0001.jpg,different\n"
        "Person_1/Person_1_0001.jpg,blank.jpg,different\n"
    )
    code = main(["calibrate", "--embedder", "dlib", "--pairs", str(pairs), "--images", str(images)])
    out = capsys.readouterr().out
    assert code == 0
    assert "images: 7 read, 6 with a face, 1 without" in out
    assert "  blank.jpg: no face" in out
    assert re.search(r"  group\.jpg: 3 faces, scored the largest \(bbox left,top,right,bottom \d+,\d+,\d+,\d+\)", out)
    assert "images with several faces: 1" in out
    assert "pairs: 2 genuine and 2 impostor scored; 1 skipped: no face (0 genuine, 1 impostor)" in out
    assert "genuine scores: min 0." in out and "impostor scores: min " in out


def test_all_impostor_pairs_without_a_face_says_why(lfw_layout: Path, tmp_path: Path, capsys) -> None:
    images = tmp_path / "images"
    shutil.copytree(lfw_layout, images)
    Image.new("RGB", (200, 200), (128, 128, 128)).save(images / "blank.jpg")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "path1,path2,label\n"
        "Person_0/Person_0_0001.jpg,Person_0/Person_0_0002.jpg,same\n"
        "Person_0/Person_0_0001.jpg,blank.jpg,different\n"
        "Person_1/Person_1_0001.jpg,blank.jpg,different\n"
    )
    code = main(["calibrate", "--embedder", "dlib", "--pairs", str(pairs), "--images", str(images)])
    captured = capsys.readouterr()
    assert code == 2
    assert "all 2 impostor pairs were skipped because an image of each had no face detected" in captured.err
    assert "no impostor pairs" not in captured.err
    assert "images: 4 read, 3 with a face, 1 without" in captured.out
    # A file with no impostor pairs at all still says so.
    only_genuine = tmp_path / "genuine.csv"
    only_genuine.write_text("score,label\n0.9,same\n")
    assert main(["calibrate", "--embedder", "dlib", "--pairs", str(only_genuine)]) == 2
    assert "no impostor pairs" in capsys.readouterr().err


def test_profile_gives_the_analyzer_options(tmp_path: Path, capsys) -> None:
    """A document dlib misses at upsample 1 and finds with the local profile's retry_upsample 2."""
    from synid_assets.core.dataset.seeds import identity_seed, rng_for
    from synid_assets.core.quality.calibration import attribute_sampler

    seed = identity_seed(0, "bench", 66)  # renderer v3: missed at upsample 1, found at 2
    render.render_document(dict(attribute_sampler()(rng_for(seed, "attributes"))), seed).save(tmp_path / "hard.png")
    render.render_document({"genders": "Female"}, 5).save(tmp_path / "easy.png")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("path1,path2,label\nhard.png,easy.png,different\n")
    assert load_profile("local")["face_analyzer"]["retry_upsample"] == 2
    base = ["calibrate", "--pairs", str(pairs), "--images", str(tmp_path)]

    assert main([*base, "--embedder", "dlib"]) == 2  # dlib's defaults: no second pass
    assert "images: 2 read, 1 with a face, 1 without" in capsys.readouterr().out

    assert main([*base, "--profile", "local"]) == 0
    out = capsys.readouterr().out
    assert "embedder dlib (" in out and "retry_upsample=2" in out and "profile local" in out
    assert "images: 2 read, 2 with a face, 0 without" in out

    assert main([*base, "--profile", "local", "--embedder-option", "retry_upsample=null"]) == 2  # overrides
    assert "1 without" in capsys.readouterr().out

    assert main([*base, "--profile", "local", "--embedder", "insightface"]) == 2
    assert "differs from profile local's face_analyzer dlib" in capsys.readouterr().err
    assert main(base) == 2
    assert "give --embedder BACKEND or --profile NAME" in capsys.readouterr().err


def test_calibrate_help_describes_profile(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["calibrate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--profile" in help_text and "face_analyzer section gives the backend and its options" in help_text
