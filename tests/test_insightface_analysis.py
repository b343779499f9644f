import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from synid_assets.core.analysis.insightface_analyzer import THRESHOLDS, InsightFaceAnalyzer
from synid_assets.core.analysis.types import FaceAnalyzer
from synid_assets.core.errors import ModelLoadError
from synid_assets.random_models import faces as tiny_faces

LANDMARK_ATOL = 1e-4  # float32 coordinates of a few hundred pixels
CROP_MAX_LEVELS = 1  # rounding of cv2's fixed-point bilinear weights
CROP_MEAN_LEVELS = 0.01
EMBEDDING_ATOL = 1e-4  # a one-level crop difference on a few pixels, through the tiny recognizer


# Tiny models on a shared CPU: thread start-up and contention cost more than the work.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    return tiny_faces.build_pack(tmp_path_factory.mktemp("insightface"))


@pytest.fixture(scope="module")
def analyzer(pack):
    a = InsightFaceAnalyzer(str(pack), batch_size=2)
    a.load()
    return a


def test_reports_the_known_face_and_a_unit_embedding(analyzer):
    face = tiny_faces.default_face()
    img = tiny_faces.face_image()
    result = analyzer.analyze(img)
    assert isinstance(analyzer, FaceAnalyzer)
    assert analyzer.model_id == "insightface:tinypack/w_tiny"
    assert analyzer.dim == 512
    assert result.detected and result.error is None
    assert result.face_count == 1  # 2 anchors x 3 strides at the same centre, merged by NMS
    assert result.bbox == tuple(int(v) for v in face.box)
    np.testing.assert_allclose(result.landmarks, face.kps, atol=1e-3)
    assert result.detection_score == pytest.approx(1.0, abs=1e-6)
    assert result.embedding.dtype == np.float32 and result.embedding.shape == (512,)
    assert np.linalg.norm(result.embedding) == pytest.approx(1.0, abs=1e-5)
    assert result.aligned.shape == (112, 112, 3) and result.aligned.dtype == np.uint8
    from insightface.utils import face_align

    np.testing.assert_array_equal(result.aligned, face_align.norm_crop(img, np.array(face.kps, np.float64)))


def test_letterbox_scale_maps_back_to_image_coordinates(analyzer):
    # 480 high x 320 wide -> resized to 640 x 426 in the 640x640 canvas: scale 4/3
    result = analyzer.analyze(tiny_faces.face_image(480, 320))
    face = tiny_faces.default_face()
    scale = 640 / 480
    assert result.bbox == tuple(round(v / scale) for v in face.box)
    np.testing.assert_allclose(result.landmarks, np.array(face.kps) / scale, atol=1e-3)


def test_recognizer_input_is_rgb_minus_127_5_over_127_5(analyzer):
    result = analyzer.analyze(tiny_faces.face_image(seed=3))
    model = tiny_faces.TinyArcFace(seed=0).eval()
    x = torch.from_numpy(result.aligned.astype(np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = model((x - 127.5) / 127.5)[0].numpy()
    np.testing.assert_allclose(result.embedding, expected / np.linalg.norm(expected), atol=1e-5)


def test_analyze_many_batches_like_single_calls(analyzer):
    images = [tiny_faces.face_image(seed=s) for s in range(5)]
    many = analyzer.analyze_many(images)  # batch_size=2: three recognizer runs
    singles = [analyzer.analyze(img) for img in images]
    for a, b in zip(many, singles, strict=True):
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)
    assert not np.allclose(many[0].embedding, many[1].embedding)


def test_all_low_scores_give_no_face(tmp_path):
    pack = tiny_faces.build_pack(tmp_path, score_bias=-40.0, pack="quiet")
    result = InsightFaceAnalyzer(str(pack)).analyze(tiny_faces.face_image())
    assert result.detected is False
    assert result.embedding is None and result.aligned is None and result.bbox is None
    assert result.error == "no face detected"


def test_largest_face_is_chosen(tmp_path):
    small = tiny_faces.small_face()  # the more confident face is the smaller one
    pack = tiny_faces.build_pack(tmp_path, faces=[small, tiny_faces.default_face()], pack="two")
    result = InsightFaceAnalyzer(str(pack)).analyze(tiny_faces.face_image())
    assert result.face_count == 2
    assert result.bbox == (240, 180, 400, 400)


def test_missing_pack_folder_is_named(tmp_path):
    missing = tmp_path / "models" / "antelopev2"
    with pytest.raises(ModelLoadError, match="antelopev2") as info:
        InsightFaceAnalyzer(str(missing)).load()
    assert "insightface" in str(info.value) and "buffalo_l" in str(info.value)


def test_missing_named_file_is_named(pack):
    with pytest.raises(ModelLoadError, match="glintr100.onnx"):
        InsightFaceAnalyzer(str(pack), recognizer="glintr100.onnx").load()


def test_pack_without_detector_is_an_error(tmp_path, pack):
    shutil.copy(pack / "w_tiny.onnx", tmp_path / "w_tiny.onnx")
    with pytest.raises(ModelLoadError, match="no SCRFD detector"):
        InsightFaceAnalyzer(str(tmp_path)).load()


def test_two_recognizers_need_a_name(tmp_path, pack):
    for name in ("det_tiny.onnx", "w_tiny.onnx"):
        shutil.copy(pack / name, tmp_path / name)
    shutil.copy(pack / "w_tiny.onnx", tmp_path / "arcface.onnx")
    with pytest.raises(ModelLoadError, match="several recognizers"):
        InsightFaceAnalyzer(str(tmp_path)).load()
    named = InsightFaceAnalyzer(str(tmp_path), recognizer="arcface.onnx")
    named.load()
    assert named.model_id == f"insightface:{tmp_path.name}/arcface"


def test_no_invented_thresholds():
    assert all(len(v) > 0 for v in THRESHOLDS.values())  # nothing listed without a source


# --- parity with the analyzer before it used insightface's model zoo and face_align ---------------------------
# tests/fixtures/insightface_parity.npz was recorded with synid_assets' own SCRFD decoding, numpy alignment and
# onnxruntime recognizer code (commit 64a1151) on the tiny packs below: per pack and image, the bbox, face count,
# 5 landmarks, detection score, the embedding and the aligned 112x112 crop (not for pack "two": it aligns the same
# largest face as pack "one"). The tiny detector ignores pixel values, so detection parity covers the letterbox
# scale and the decoding, not the resize filter (insightface: cv2 INTER_LINEAR; before: Pillow bilinear).
# Measured against insightface 2.1: bboxes, face counts, landmarks and scores identical; crops differ by at most
# 1 grey level on 0.1% of the pixels of noise images (cv2.warpAffine's 5-bit fixed-point bilinear weights against
# float64 weights), embeddings by at most 2.5e-5 per component; the same crops give the same embeddings (3e-8).
PARITY = Path(__file__).parent / "fixtures" / "insightface_parity.npz"
PARITY_IMAGES = {
    "noise_640": lambda: tiny_faces.face_image(seed=0),
    "noise_480x320": lambda: tiny_faces.face_image(480, 320, seed=1),
    "smooth_500x700": lambda: tiny_faces.smooth_image(500, 700),
    "smooth_900x600": lambda: tiny_faces.smooth_image(900, 600),
}


@pytest.fixture(scope="module")
def parity_analyzers(pack, tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    two = tiny_faces.build_pack(root, faces=[tiny_faces.small_face(), tiny_faces.default_face()], pack="two")
    tilted = tiny_faces.build_pack(root, faces=[tiny_faces.tilted_face()], pack="tilted")
    packs = {"one": pack, "two": two, "tilted": tilted}
    return {name: InsightFaceAnalyzer(str(path), batch_size=2) for name, path in packs.items()}


@pytest.mark.parametrize("pack_name", ["one", "two", "tilted"])
def test_parity_with_the_pre_insightface_analyzer(parity_analyzers, pack_name):
    expected = np.load(PARITY)
    analyzer = parity_analyzers[pack_name]
    names = list(PARITY_IMAGES)
    results = analyzer.analyze_many([PARITY_IMAGES[n]() for n in names])
    for name, result in zip(names, results, strict=True):
        key = f"{pack_name}__{name}"
        assert result.detected, key
        assert result.bbox == tuple(int(v) for v in expected[f"{key}__bbox"]), key
        assert result.face_count == int(expected[f"{key}__face_count"]), key
        np.testing.assert_allclose(result.landmarks, expected[f"{key}__landmarks"], rtol=0, atol=LANDMARK_ATOL)
        assert result.detection_score == pytest.approx(float(expected[f"{key}__score"]), abs=1e-6)
        crop_key = f"{'one' if pack_name == 'two' else pack_name}__{name}__aligned"
        crop_diff = np.abs(result.aligned.astype(np.int16) - expected[crop_key].astype(np.int16))
        assert crop_diff.max() <= CROP_MAX_LEVELS, (key, int(crop_diff.max()))
        assert crop_diff.mean() <= CROP_MEAN_LEVELS, (key, float(crop_diff.mean()))
        np.testing.assert_allclose(result.embedding, expected[f"{key}__embedding"], rtol=0, atol=EMBEDDING_ATOL)


def test_recognizer_parity_on_the_recorded_crops(analyzer):
    # The same crops in, the same embeddings out: the recognizer path alone, free of alignment differences.
    expected = np.load(PARITY)
    names = list(PARITY_IMAGES)
    keys = [f"{pack}__{n}" for pack in ("one", "tilted") for n in names]
    got = analyzer.embed_aligned([expected[f"{k}__aligned"] for k in keys])  # batch_size=2: four runs
    want = np.stack([expected[f"{k}__embedding"] for k in keys])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
