import numpy as np
import pytest
import torch

from synid_assets.core.analysis.frs import (
    FLUXSYNID_SOURCE,
    FRSCheckpointError,
    TorchFRSAnalyzer,
    frs_thresholds,
    load_frs_checkpoint,
    threshold_at,
)
from synid_assets.core.analysis.frs_models import build_backbone
from synid_assets.core.analysis.types import FaceAnalyzer, Threshold
from synid_assets.core.errors import ModelLoadError
from synid_assets.core.generation import render
from synid_assets.random_models import faces as tiny_faces

FRS = ["adaface", "arcface", "curricularface"]
TINY = {"units": tiny_faces.TINY_UNITS, "channels": tiny_faces.TINY_CHANNELS}


# Tiny models on a shared CPU: thread start-up and contention cost more than the work.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("frs")
    names = {
        "adaface": "adaface_ir101_webface12m.ckpt",
        "arcface": "model_ir_se50.pth",
        "curricularface": "CurricularFace_Backbone.pth",
    }
    return {frs: tiny_faces.tiny_frs_checkpoint(frs, root / names[frs], seed=i) for i, frs in enumerate(FRS)}


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    return tiny_faces.build_pack(tmp_path_factory.mktemp("det"))


def test_fluxsynid_thresholds():
    assert threshold_at("arcface", 1e-3) == Threshold(1e-3, 0.42314568161964417, FLUXSYNID_SOURCE)
    assert threshold_at("arcface", 1e-4).value == 0.49696439504623413
    assert threshold_at("adaface", 1e-3).value == 0.2530066967010498
    assert threshold_at("adaface", 0.0001).value == 0.333987832069397
    assert threshold_at("curricularface", 0.001).value == 0.2855643630027771
    assert threshold_at("curricularface", 1e-4).value == 0.3750773072242737
    assert FLUXSYNID_SOURCE == "FLUXSynID dataset_filtering/find_similar_ids.py (Raul2718/FLUXSynID @ b9b3041)"
    assert [t.fmr for t in frs_thresholds("adaface")] == [1e-3, 1e-4]


def test_unknown_fmr_names_the_known_ones():
    with pytest.raises(KeyError, match=r"0\.001, 0\.0001"):
        threshold_at("adaface", 1e-5)
    with pytest.raises(KeyError, match="arcface"):
        frs_thresholds("facenet")


@pytest.mark.parametrize("frs", FRS)
def test_each_layout_loads_strictly_and_keeps_its_weights(frs, checkpoints):
    model = load_frs_checkpoint(frs, checkpoints[frs], **TINY)
    raw = torch.load(checkpoints[frs], weights_only=True)
    state = raw["state_dict"] if frs == "adaface" else raw
    prefix = "model." if frs == "adaface" else ""
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[prefix + key])
    out = model(torch.randn(3, 3, 112, 112))
    assert out.shape == (3, 512)


def test_published_key_layouts():
    # The module names of the published checkpoints (full size), checked against their repos' sources.
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        ada, arc, cur = (build_backbone(frs).state_dict() for frs in FRS)
    assert "body.48.res_layer.5.running_var" in ada and "body.48.res_layer.3.weight" in ada  # BN, Conv, BN, PReLU...
    assert "output_layer.4.weight" not in ada and "output_layer.3.weight" in ada  # BN1d affine=False
    assert ada["output_layer.3.weight"].shape == (512, 512 * 7 * 7)
    assert "body.23.res_layer.5.fc2.weight" in arc and "body.24.res_layer.0.weight" not in arc  # IR-SE-50
    assert "output_layer.4.weight" in arc  # TreB1eN's BN1d has affine weights
    assert "body.48.res_layer.4.running_mean" in cur and "body.48.res_layer.5.weight" not in cur
    assert "body.3.shortcut_layer.0.weight" in cur and "body.4.shortcut_layer.0.weight" not in cur
    assert len(ada) == 917 and len(arc) == 397 and len(cur) == 672


def test_wrong_layout_names_the_file_and_first_keys(checkpoints):
    with pytest.raises(FRSCheckpointError) as info:
        load_frs_checkpoint("adaface", checkpoints["arcface"], **TINY)
    msg = str(info.value)
    assert str(checkpoints["arcface"]) in msg and "adaface" in msg
    assert "missing keys" in msg and "body.0.res_layer.2.bias" in msg
    assert "unexpected keys" in msg and "body.0.res_layer.4.bias" in msg


def test_reduced_checkpoint_against_the_full_architecture_is_an_error(checkpoints):
    with pytest.raises(FRSCheckpointError, match=r"IR-101.*missing keys.*shape mismatches"):
        load_frs_checkpoint("curricularface", checkpoints["curricularface"])


def test_missing_checkpoint_says_where_to_get_it(tmp_path):
    with pytest.raises(ModelLoadError, match="AdaFace"):
        load_frs_checkpoint("adaface", tmp_path / "adaface_ir101_webface12m.ckpt")


def test_dataparallel_prefix_and_non_dict(tmp_path, checkpoints):
    state = torch.load(checkpoints["curricularface"], weights_only=True)
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pth")
    load_frs_checkpoint("curricularface", tmp_path / "dp.pth", **TINY)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(FRSCheckpointError, match="list.pth"):
        load_frs_checkpoint("curricularface", tmp_path / "list.pth", **TINY)


@pytest.mark.parametrize("frs", FRS)
def test_analyzer_with_scrfd_gives_unit_512_embeddings(frs, checkpoints, pack):
    analyzer = TorchFRSAnalyzer(frs, str(checkpoints[frs]), detector_model_dir=str(pack), batch_size=2, **TINY)
    assert isinstance(analyzer, FaceAnalyzer) and analyzer.dim == 512
    assert analyzer.model_id == f"frs:{frs}/{checkpoints[frs].stem}"
    images = [tiny_faces.face_image(seed=s) for s in range(3)]
    results = analyzer.analyze_many(images)
    for r in results:
        assert r.detected and r.bbox == (240, 180, 400, 400)
        assert r.embedding.shape == (512,) and r.embedding.dtype == np.float32
        assert np.linalg.norm(r.embedding) == pytest.approx(1.0, abs=1e-5)
    # input convention: BGR for AdaFace, RGB for the others, both (x - 127.5) / 127.5
    model = load_frs_checkpoint(frs, checkpoints[frs], **TINY)
    crop = results[0].aligned[..., ::-1] if frs == "adaface" else results[0].aligned
    x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model((x - 127.5) / 127.5), dim=1)[0].numpy()
    np.testing.assert_allclose(results[0].embedding, expected, atol=1e-5)


def test_analyzer_no_face(tmp_path, checkpoints):
    pytest.importorskip("onnxruntime")
    quiet = tiny_faces.build_pack(tmp_path, score_bias=-40.0, pack="quiet")
    analyzer = TorchFRSAnalyzer("arcface", str(checkpoints["arcface"]), detector_model_dir=str(quiet), **TINY)
    result = analyzer.analyze(tiny_faces.face_image())
    assert not result.detected and result.embedding is None and result.error == "no face detected"


def test_analyzer_dlib_fallback_on_a_rendered_face(checkpoints):
    attrs = {"genders": "Male", "origins": "West European", "hair_colors": "Brown", "hair_styles": "Straight"}
    img = np.asarray(render.render_document(attrs, 1))
    analyzer = TorchFRSAnalyzer("curricularface", str(checkpoints["curricularface"]), **TINY)
    result = analyzer.analyze(img)
    assert result.detected and result.aligned.shape == (112, 112, 3)
    pts = np.array(result.landmarks)
    assert pts[2:4, 0].mean() < pts[0:2, 0].mean()  # dlib points 2, 3 are the image-left eye
    assert np.linalg.norm(result.embedding) == pytest.approx(1.0, abs=1e-5)


def test_bad_options_are_model_load_errors():
    with pytest.raises(ModelLoadError, match="known"):
        TorchFRSAnalyzer("facenet", "x.pth")
    with pytest.raises(ModelLoadError, match="dtype"):
        TorchFRSAnalyzer("adaface", "x.ckpt", dtype="int8")
