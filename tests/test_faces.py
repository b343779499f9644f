"""dlib face analysis on real models and rendered faces."""

from __future__ import annotations

import numpy as np
import pytest

from synid_assets.core.analysis.dlib_analyzer import DlibFaceAnalyzer, FaceModelError, model_paths
from synid_assets.core.analysis.images import ImageReadError, load_rgb
from synid_assets.core.dataset.seeds import identity_seed, stream_seed
from synid_assets.core.filtering.similarity import cosine_similarity
from synid_assets.core.generation import render

ATTRS = {"genders": "Male", "origins": "West European", "hair_colors": "Brown", "hair_styles": "Straight"}


@pytest.fixture(scope="module")
def analyzer() -> DlibFaceAnalyzer:
    a = DlibFaceAnalyzer()
    a.load()
    return a


def test_document_is_detected_with_a_normalised_embedding(analyzer):
    res = analyzer.analyze(np.asarray(render.render_document(ATTRS, 1)))
    assert res.detected and res.error is None and res.face_count >= 1
    assert res.embedding is not None and res.embedding.dtype == np.float32 and res.embedding.shape == (128,)
    assert abs(float(np.linalg.norm(res.embedding)) - 1.0) < 1e-5
    assert len(res.landmarks) == 5 and res.aligned.shape == (150, 150, 3)


def test_blank_image_has_no_face_and_no_embedding(analyzer):
    res = analyzer.analyze(np.full((200, 200, 3), 128, dtype=np.uint8))
    assert not res.detected and res.embedding is None and res.bbox is None
    assert res.error == "no face detected"


def test_live_matches_own_document_better_than_other_identities(analyzer):
    seeds = [identity_seed(99, "test", i) for i in range(6)]
    docs = [np.asarray(render.render_document(ATTRS, s)) for s in seeds]
    lives = [
        np.asarray(render.render_live(ATTRS, s, render.draw_live_variation(stream_seed(s, "live", 0))))
        for s in seeds[:3]
    ]
    doc_res = analyzer.analyze_many(docs)
    live_res = analyzer.analyze_many(lives)
    genuine, impostor = [], []
    for k, lr in enumerate(live_res):
        if lr.embedding is None or doc_res[k].embedding is None:
            continue
        genuine.append(cosine_similarity(lr.embedding, doc_res[k].embedding))
        impostor += [cosine_similarity(doc_res[k].embedding, d.embedding) for j, d in enumerate(doc_res)
                     if j != k and d.embedding is not None]
    assert genuine and impostor
    assert np.mean(genuine) > np.mean(impostor)


def test_analyze_many_matches_analyze(analyzer):
    img = np.asarray(render.render_document(ATTRS, 2))
    one = analyzer.analyze(img)
    many = analyzer.analyze_many([img, np.zeros((64, 64, 3), np.uint8)])
    assert many[1].embedding is None
    assert cosine_similarity(one.embedding, many[0].embedding) > 0.999


def test_unreadable_file_names_the_path(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="broken.png"):
        load_rgb(bad)
    with pytest.raises(ImageReadError, match="missing.png"):
        load_rgb(tmp_path / "missing.png")


def test_load_rgb_roundtrip(tmp_path):
    path = tmp_path / "doc.png"
    render.render_document(ATTRS, 3, size=64).save(path)
    arr = load_rgb(path)
    assert arr.shape == (64, 64, 3) and arr.dtype == np.uint8


def test_missing_model_dir_names_the_file(tmp_path):
    with pytest.raises(FaceModelError, match="shape_predictor_5_face_landmarks.dat"):
        model_paths(tmp_path)
    with pytest.raises(FaceModelError, match=str(tmp_path)):
        DlibFaceAnalyzer(model_dir=str(tmp_path)).analyze(np.zeros((32, 32, 3), np.uint8))


def test_retry_upsample_finds_faces_a_single_pass_misses() -> None:
    """A renderer-v3 document (benchmark seed 0, identity 66) that HOG misses at upsample 1 but finds at 2."""
    from synid_assets.core.dataset.seeds import identity_seed, rng_for
    from synid_assets.core.generation import render
    from synid_assets.core.quality.calibration import attribute_sampler

    seed = identity_seed(0, "bench", 66)
    image = np.asarray(render.render_document(dict(attribute_sampler()(rng_for(seed, "attributes"))), seed))
    assert not DlibFaceAnalyzer(upsample=1).analyze(image).detected
    found = DlibFaceAnalyzer(upsample=1, retry_upsample=2).analyze(image)
    assert found.detected and found.embedding is not None
    # A blank image stays a miss after the second pass: no fallback to the whole frame.
    assert not DlibFaceAnalyzer(upsample=1, retry_upsample=2).analyze(np.full((256, 256, 3), 200, np.uint8)).detected
