"""The embedding-space generators' ID embedders: ArcFace R100 (Glint360K, Vec2Face) and ElasticFace-Arc R100."""

import numpy as np
import pytest
import torch

from synid_assets.core.analysis.frs import (
    CALIBRATE_HINT,
    FRSCheckpointError,
    TorchFRSAnalyzer,
    frs_thresholds,
    hub_checkpoint,
    load_frs_checkpoint,
    threshold_at,
)
from synid_assets.core.analysis.frs_models import build_backbone
from synid_assets.core.config.profiles import load_profile
from synid_assets.core.config.requirements import ModelNeed
from synid_assets.core.generation import render
from synid_assets.core.generation.vec2face import VECTOR_SPACE
from synid_assets.random_models import faces as tiny_faces

EMBEDDERS = ["arcface-r100-glint360k", "elasticface-arc-r100"]
TINY = {"units": tiny_faces.TINY_UNITS, "channels": tiny_faces.TINY_CHANNELS}
VEC2FACE_FILE = "weights/arcface-r100-glint360k.pth"


# Tiny models on a shared CPU: thread start-up and contention cost more than the work.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("id_embedders")
    names = {"arcface-r100-glint360k": "arcface-r100-glint360k.pth", "elasticface-arc-r100": "295672backbone.pth"}
    return {frs: tiny_faces.tiny_frs_checkpoint(frs, root / names[frs], seed=7 + i) for i, frs in enumerate(EMBEDDERS)}


def upstream_iresnet_layout(units=(3, 13, 30, 3), planes=(64, 128, 256, 512)) -> dict[str, tuple[int, ...]]:
    """state_dict keys and shapes of arcface_torch's IResNet, in registration order, written out from
    HaiyuWu/Vec2Face gradio_demo/models/iresnet.py @ 4d5580a and fdbtrs/ElasticFace backbones/iresnet.py @ b7c0712."""

    def bn(name: str, c: int) -> dict[str, tuple[int, ...]]:
        stats = ("weight", "bias", "running_mean", "running_var")
        return {f"{name}.{s}": (c,) for s in stats} | {f"{name}.num_batches_tracked": ()}

    layout = {"conv1.weight": (64, 3, 3, 3)} | bn("bn1", 64) | {"prelu.weight": (64,)}
    inplanes = 64
    for stage, (n_blocks, out_c) in enumerate(zip(units, planes, strict=True), start=1):
        for i in range(n_blocks):
            p, in_c = f"layer{stage}.{i}", inplanes if i == 0 else out_c
            layout |= bn(f"{p}.bn1", in_c) | {f"{p}.conv1.weight": (out_c, in_c, 3, 3)} | bn(f"{p}.bn2", out_c)
            layout |= {f"{p}.prelu.weight": (out_c,), f"{p}.conv2.weight": (out_c, out_c, 3, 3)} | bn(f"{p}.bn3", out_c)
            if i == 0:  # every stage starts with stride 2: _make_layer adds conv1x1 + BN
                layout |= {f"{p}.downsample.0.weight": (out_c, in_c, 1, 1)} | bn(f"{p}.downsample.1", out_c)
        inplanes = out_c
    layout |= bn("bn2", 512) | {"fc.weight": (512, 512 * 7 * 7), "fc.bias": (512,)} | bn("features", 512)
    return layout


@pytest.mark.parametrize("frs", EMBEDDERS)
def test_full_size_layout_matches_upstream_iresnet100(frs):
    with torch.device("meta"):  # shapes only
        model = build_backbone(frs)
    state = model.state_dict()
    expected = upstream_iresnet_layout()
    assert list(state) == list(expected)  # same names, same order
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert len(state) == 925
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 65.2  # arcface_torch's r100: 65.2M


@pytest.mark.parametrize("frs", EMBEDDERS)
def test_tiny_checkpoint_in_released_layout_loads_strictly(frs, checkpoints):
    raw = torch.load(checkpoints[frs], weights_only=True)
    assert "layer1.0.downsample.0.weight" in raw and "features.running_var" in raw and "fc.bias" in raw
    model = load_frs_checkpoint(frs, checkpoints[frs], **TINY)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, raw[key])
    assert model(torch.randn(2, 3, 112, 112)).shape == (2, 512)


def test_checkpoint_without_bn_counters_loads(tmp_path, checkpoints):
    raw = torch.load(checkpoints["elasticface-arc-r100"], weights_only=True)
    torch.save({k: v for k, v in raw.items() if not k.endswith("num_batches_tracked")}, tmp_path / "old.pth")
    model = load_frs_checkpoint("elasticface-arc-r100", tmp_path / "old.pth", **TINY)
    torch.testing.assert_close(model.state_dict()["features.running_var"], raw["features.running_var"])
    del raw["layer2.0.bn3.running_var"]  # a real statistic missing is still an error
    torch.save(raw, tmp_path / "holed.pth")
    with pytest.raises(FRSCheckpointError, match=r"holed\.pth.*1 missing keys.*layer2\.0\.bn3\.running_var"):
        load_frs_checkpoint("elasticface-arc-r100", tmp_path / "holed.pth", **TINY)


def test_bad_checkpoints_get_one_line_errors_naming_the_file(tmp_path, checkpoints):
    garbage = tmp_path / "295672backbone.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.warns(UserWarning), pytest.raises(FRSCheckpointError) as info:
        load_frs_checkpoint("elasticface-arc-r100", garbage, **TINY)
    assert str(garbage) in str(info.value) and "\n" not in str(info.value)
    curricular = tiny_faces.tiny_frs_checkpoint("curricularface", tmp_path / "CurricularFace_Backbone.pth")
    with pytest.raises(FRSCheckpointError) as info:
        load_frs_checkpoint("arcface-r100-glint360k", curricular, **TINY)
    msg = str(info.value)
    assert str(curricular) in msg and "iresnet100" in msg and "arcface-r100-glint360k.pth" in msg
    assert "missing keys" in msg and "conv1.weight" in msg and "\n" not in msg
    with pytest.raises(FRSCheckpointError, match=r"iresnet100.*shape mismatches"):  # a tiny file, full-size model
        load_frs_checkpoint("elasticface-arc-r100", checkpoints["elasticface-arc-r100"])
    with pytest.raises(FRSCheckpointError, match="ElasticFace"):
        load_frs_checkpoint("elasticface-arc-r100", tmp_path / "absent.pth")


def test_no_published_thresholds_points_to_calibrate():
    for frs in EMBEDDERS:
        assert frs_thresholds(frs) == []
        with pytest.raises(KeyError, match="synid calibrate"):
            threshold_at(frs, 1e-3)
    assert "synid calibrate --profile" in CALIBRATE_HINT
    assert [t.fmr for t in frs_thresholds("arcface")] == [1e-3, 1e-4]  # FLUXSynID's three keep theirs


def test_embedding_end_to_end_on_cpu_matches_rgb_in_minus_one_one(checkpoints):
    attrs = {"genders": "Female", "origins": "East Asian", "hair_colors": "Black", "hair_styles": "Straight"}
    image = np.asarray(render.render_document(attrs, 3))
    frs = "elasticface-arc-r100"
    analyzer = TorchFRSAnalyzer(frs, str(checkpoints[frs]), device="cpu", **TINY)
    assert analyzer.model_id == "frs:elasticface-arc-r100/295672backbone" and analyzer.thresholds == []
    result = analyzer.analyze(image)
    assert result.detected and result.aligned.shape == (112, 112, 3)
    assert result.embedding.shape == (512,) and result.embedding.dtype == np.float32
    model = load_frs_checkpoint(frs, checkpoints[frs], **TINY)
    x = torch.from_numpy(np.ascontiguousarray(result.aligned)).permute(2, 0, 1)[None].float()
    with torch.no_grad():  # as IDiff-Face: RGB, ToTensor then Normalize(0.5, 0.5); as Vec2Face: x/255 - 0.5 / 0.5
        expected = torch.nn.functional.normalize(model((x / 255 - 0.5) / 0.5), dim=1)[0].numpy()
    np.testing.assert_allclose(result.embedding, expected, atol=1e-5)
    swapped = analyzer.embed_aligned([result.aligned[..., ::-1]])[0]
    assert float(swapped @ result.embedding) < 0.999  # channel order matters, so RGB is a real choice


def test_hub_checkpoint_from_the_cache(tmp_path, checkpoints):
    assert hub_checkpoint(VECTOR_SPACE) == ("BooBooWu/Vec2Face", VEC2FACE_FILE)
    assert hub_checkpoint(str(checkpoints["elasticface-arc-r100"])) is None and hub_checkpoint("C:\\x.pth") is None
    needs = TorchFRSAnalyzer.required_models({"checkpoint": VECTOR_SPACE, "revision": None})
    assert needs == [
        ModelNeed(
            "BooBooWu/Vec2Face",
            None,
            (VEC2FACE_FILE,),
            "MIT (model card); trained on a WebFace4M subset (research-only terms)",
            part="checkpoint",
        )
    ]
    # a hub cache as huggingface_hub writes it: refs/main names the snapshot holding the file
    repo_dir = tmp_path / "hub" / "models--BooBooWu--Vec2Face"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    target = repo_dir / "snapshots" / commit / VEC2FACE_FILE
    target.parent.mkdir(parents=True)
    target.write_bytes(checkpoints["arcface-r100-glint360k"].read_bytes())
    options = {"cache_dir": str(tmp_path / "hub"), "local_files_only": True, "device": "cpu", **TINY}
    analyzer = TorchFRSAnalyzer("arcface-r100-glint360k", VECTOR_SPACE, **options)
    assert analyzer.checkpoint_path() == target
    crop = tiny_faces.smooth_image(112, 112)
    embedding = analyzer.embed_aligned([crop])[0]
    assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)
    empty = TorchFRSAnalyzer("arcface-r100-glint360k", VECTOR_SPACE, **options | {"cache_dir": str(tmp_path / "no")})
    with pytest.raises(FRSCheckpointError, match="synid models download") as info:
        empty.load()
    assert VEC2FACE_FILE in str(info.value)


def test_vec2face_profile_filters_in_the_generators_space():
    section = load_profile("vec2face-80gb")["face_analyzer"]
    assert section["backend"] == "frs" and section["frs"] == "arcface-r100-glint360k"
    assert section["checkpoint"] == VECTOR_SPACE  # the space identity vectors are sampled in
