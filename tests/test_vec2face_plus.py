"""Vec2Face+: released checkpoint layouts (LoRA, pose model, 6DRepNet), LoRA placement, landmark images, AttrOP's
losses, gating, quality target and cap, and generation on tiny random-weight models."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from synid_assets.core.analysis.head_pose import (
    HeadPoseConfig,
    SixDRepNet,
    euler_from_rotation,
    load_head_pose_checkpoint,
    rotation_from_ortho6d,
)
from synid_assets.core.config.registry import backend_class
from synid_assets.core.errors import ModelLoadError
from synid_assets.core.generation.attrop import (
    AttrOPSettings,
    identity_loss,
    passes,
    quality_loss,
    run_attrop,
    score,
    yaw_loss,
)
from synid_assets.core.generation.types import DocumentRequest, LiveRequest
from synid_assets.core.generation.vec2face_model import Vec2FaceConfig, Vec2FaceGenerator
from synid_assets.core.generation.vec2face_plus import (
    Vec2FacePlusDocumentGenerator,
    Vec2FacePlusLiveGenerator,
    target_yaw,
)
from synid_assets.core.generation.vec2face_plus_model import (
    PoseCondModel,
    add_pose_lora,
    landmark_image,
    landmark_points,
    load_pose_checkpoint,
    peft_to_upstream,
    render_pose,
)
from synid_assets.random_models.vec2face_plus import (
    TINY_HEAD_POSE,
    TINY_POSE_CHANNELS,
    build_tiny_vec2face_plus,
    tiny_options,
)
from tests.generator_helpers import identity, unit
from tests.test_vec2face import shapes_of, upstream_shapes

TINY_GENERATOR = (512, 32, 1, 32, 1, 16, 8, 32, (1, 1, 2, 2, 2), 1)  # tests/test_vec2face.py's tiny sizes


def with_lora(shapes: dict[str, tuple[int, ...]], rank: int) -> dict[str, tuple[int, ...]]:
    """Keys of MaskedGenerativeEncoderViT with use_lora (HaiyuWu/Vec2Face_plus @ 7aea100, lora.py LoRALinear wrapping
    attn.qkv and attn.proj of every block: base.weight, base.bias, A [r, in], B [out, r])."""
    out: dict[str, tuple[int, ...]] = {}
    for key, shape in shapes.items():
        match = re.fullmatch(r"((?:decoder_)?blocks\.\d+\.attn\.(?:qkv|proj))\.(weight|bias)", key)
        if match is None:
            out[key] = shape
            continue
        out[f"{match[1]}.base.{match[2]}"] = shape
        if match[2] == "weight":
            out[f"{match[1]}.A"], out[f"{match[1]}.B"] = (rank, shape[1]), (shape[0], rank)
    return out


def pose_cond_shapes(channels=(32, 64, 128, 256), token: int = 768) -> dict[str, tuple[int, ...]]:
    """PoseCondModel's keys (pose_condition.py @ 7aea100: conv1..conv4 3x3, Linear(7*7*256, 768))."""
    widths = (3, *channels)
    shapes = {}
    for i in range(4):
        shapes[f"conv{i + 1}.weight"], shapes[f"conv{i + 1}.bias"] = (widths[i + 1], widths[i], 3, 3), (widths[i + 1],)
    return shapes | {"linear.weight": (token, 49 * widths[-1]), "linear.bias": (token,)}


def repvgg_b1g2_shapes(blocks=(4, 6, 16, 1), widths=(64, 128, 256, 512, 2048)) -> dict[str, tuple[int, ...]]:
    """SixDRepNet('RepVGG-B1g2', deploy=True).state_dict() as sixdrepnet 0.1.6 defines it (backbone/repvgg.py:
    stage0 3 -> min(64, 64 * 2), groups 2 on layer indices 2, 4, ..., 26; model.py: layer0..4, linear_reg(., 6))."""
    shapes = {"layer0.rbr_reparam.weight": (widths[0], 3, 3, 3), "layer0.rbr_reparam.bias": (widths[0],)}
    index, cin = 1, widths[0]
    for stage in range(4):
        for k in range(blocks[stage]):
            groups = 2 if index in range(2, 27, 2) else 1
            shapes[f"layer{stage + 1}.{k}.rbr_reparam.weight"] = (widths[stage + 1], cin // groups, 3, 3)
            shapes[f"layer{stage + 1}.{k}.rbr_reparam.bias"] = (widths[stage + 1],)
            cin, index = widths[stage + 1], index + 1
    return shapes | {"linear_reg.weight": (6, cin), "linear_reg.bias": (6,)}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return build_tiny_vec2face_plus(tmp_path_factory.mktemp("vec2face_plus"))


# ---------------------------------------------------------------- checkpoint layouts


def test_tiny_files_have_the_upstream_keys_and_shapes(tiny_root: Path) -> None:
    raw = torch.load(tiny_root / "vec2face_plus" / "pose_model.pth", map_location="cpu", weights_only=True)
    assert shapes_of(raw["model_vec2face"]) == with_lora(upstream_shapes(*TINY_GENERATOR), 8)
    assert shapes_of(raw["pose_model"]) == pose_cond_shapes(TINY_POSE_CHANNELS, 32)
    main = torch.load(tiny_root / "vec2face_plus" / "main_model.pth", map_location="cpu", weights_only=True)
    assert shapes_of(main["model_vec2face"]) == upstream_shapes(*TINY_GENERATOR)
    head = torch.load(tiny_root / "weights" / "6DRepNet_300W_LP_AFLW2000.pth", map_location="cpu", weights_only=True)
    assert shapes_of(head) == repvgg_b1g2_shapes(**TINY_HEAD_POSE)
    generator, pose_model = load_pose_checkpoint(tiny_root / "vec2face_plus" / "pose_model.pth", 2, 2)
    for key, value in peft_to_upstream(generator.state_dict()).items():
        assert torch.equal(value, raw["model_vec2face"][key]), key
    for key, value in pose_model.state_dict().items():
        assert torch.equal(value, raw["pose_model"][key]), key
    loaded = load_head_pose_checkpoint(tiny_root / "weights" / "6DRepNet_300W_LP_AFLW2000.pth")
    assert all(torch.equal(v, head[k]) for k, v in loaded.state_dict().items())


def test_released_sizes_match_upstream() -> None:
    with torch.device("meta"):
        generator = add_pose_lora(Vec2FaceGenerator(Vec2FaceConfig()), 8)
        pose_model, head_pose = PoseCondModel(), SixDRepNet(HeadPoseConfig())
    released = upstream_shapes(512, 768, 12, 768, 8, 16, 256, 128, (1, 1, 2, 2, 4), 2)
    assert shapes_of(peft_to_upstream(generator.state_dict())) == with_lora(released, 8)
    assert shapes_of(pose_model.state_dict()) == pose_cond_shapes()
    shapes = shapes_of(head_pose.state_dict())
    assert shapes == repvgg_b1g2_shapes() and len(shapes) == 58
    assert shapes["layer1.1.rbr_reparam.weight"] == (128, 64, 3, 3)  # layer index 2: grouped
    assert shapes["layer4.0.rbr_reparam.weight"] == (2048, 512, 3, 3)  # index 27: not grouped


def test_lora_layer_placement(tiny_root: Path) -> None:
    from peft.tuners.lora import LoraLayer

    generator, _ = load_pose_checkpoint(tiny_root / "vec2face_plus" / "pose_model.pth", 2, 2)
    lora = {name for name, module in generator.named_modules() if isinstance(module, LoraLayer)}
    assert lora == {f"{prefix}.0.attn.{layer}" for prefix in ("blocks", "decoder_blocks") for layer in ("qkv", "proj")}
    for name in lora:
        module = generator.get_submodule(name)
        assert module.r["default"] == 8 and module.scaling["default"] == 32 / 8
    # the adapter computes the released LoRALinear: base(x) + alpha / r * x A^T B^T
    raw = torch.load(tiny_root / "vec2face_plus" / "pose_model.pth", map_location="cpu", weights_only=True)
    state = raw["model_vec2face"]
    x = torch.randn(3, 32)
    key = "decoder_blocks.0.attn.qkv"
    expected = (x @ state[f"{key}.base.weight"].T + state[f"{key}.base.bias"]
                + 4.0 * (x @ state[f"{key}.A"].T) @ state[f"{key}.B"].T)
    assert torch.allclose(generator.get_submodule(key)(x), expected, atol=1e-6)
    assert not any(p.requires_grad for p in generator.parameters())


def test_bad_pose_checkpoints_are_named(tmp_path: Path, tiny_root: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_pose_checkpoint(tmp_path / "missing.pth")
    main = tiny_root / "vec2face_plus" / "main_model.pth"
    with pytest.raises(ModelLoadError, match="main_model.pth.*no LoRA generator"):
        load_pose_checkpoint(main, 2, 2)
    raw = torch.load(tiny_root / "vec2face_plus" / "pose_model.pth", map_location="cpu", weights_only=True)
    del raw["pose_model"]["conv3.bias"]
    torch.save(raw, tmp_path / "cut.pth")
    with pytest.raises(ModelLoadError, match="cut.pth.*layout"):
        load_pose_checkpoint(tmp_path / "cut.pth", 2, 2)
    head = torch.load(tiny_root / "weights" / "6DRepNet_300W_LP_AFLW2000.pth", map_location="cpu", weights_only=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in head.items()}}, tmp_path / "wrapped.pth")
    assert isinstance(load_head_pose_checkpoint(tmp_path / "wrapped.pth"), SixDRepNet)
    torch.save({"layer0.rbr_dense.conv.weight": torch.zeros(1)}, tmp_path / "train.pth")
    with pytest.raises(ModelLoadError, match="train.pth.*not in the deploy layout.*training"):
        load_head_pose_checkpoint(tmp_path / "train.pth")


# ---------------------------------------------------------------- pose control


def test_landmark_images_match_the_released_examples() -> None:
    """Upstream landmarks/images/2758_1.jpg and 2758_0.jpg (a profile pair): dot centres measured from the files."""
    for yaw, nose_x, eyes_x in ((80.0, 72.1, 58.0), (-80.0, 39.1, 53.0)):
        points = landmark_points(yaw)
        assert points[2, 0] == pytest.approx(nose_x, abs=1.0) and points[:2, 0].mean() == pytest.approx(eyes_x, abs=1.0)
        assert abs(points[0, 0] - points[1, 0]) == pytest.approx(5.0, abs=1.0)
        assert tuple(points[[0, 2, 3], 1]) == (48.5, 65.0, 82.5)
    image = landmark_image(0.0)
    assert image.shape == (112, 112, 3) and image.dtype == np.uint8
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    assert colours == {(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)}
    frontal = landmark_points(0.0)
    assert frontal[2, 0] == 55.5 and frontal[0, 0] + frontal[1, 0] == pytest.approx(111.0)
    assert (image[..., 1] == 255).sum() in range(18, 26)  # one dot of radius 2.5, as the examples' nose (22-25 px)


def test_pose_token_and_lora_condition_the_render(tiny_root: Path) -> None:
    generator, pose_model = load_pose_checkpoint(tiny_root / "vec2face_plus" / "pose_model.pth", 2, 2)
    rep = torch.randn(2, 512)
    dropped = torch.zeros(2, 49, dtype=torch.bool)
    dropped[:, :40] = True
    masked = dropped.clone()
    masked[:, 40:43] = True
    from synid_assets.core.generation.vec2face_plus_model import landmark_tensor

    with torch.no_grad():
        left = render_pose(generator, pose_model, rep, dropped, masked, landmark_tensor([-60.0, -60.0]))
        right = render_pose(generator, pose_model, rep, dropped, masked, landmark_tensor([60.0, 60.0]))
    assert left.shape == (2, 3, 112, 112) and not torch.allclose(left, right)


# ---------------------------------------------------------------- head pose


def test_head_pose_angles() -> None:
    turn = math.radians(30.0)
    about_y = torch.tensor([[[math.cos(turn), 0, math.sin(turn)], [0, 1, 0], [-math.sin(turn), 0, math.cos(turn)]]])
    pitch, yaw, roll = euler_from_rotation(about_y)[0].tolist()
    assert yaw == pytest.approx(30.0, abs=1e-4) and pitch == pytest.approx(0.0, abs=1e-4) and roll == pytest.approx(0)
    matrices = rotation_from_ortho6d(torch.randn(5, 6))
    assert torch.allclose(matrices @ matrices.transpose(1, 2), torch.eye(3).expand(5, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(matrices), torch.ones(5), atol=1e-5)
    identity = rotation_from_ortho6d(torch.tensor([[2.0, 0, 0, 0.5, 3.0, 0]]))
    assert torch.allclose(identity[0], torch.eye(3), atol=1e-6)


# ---------------------------------------------------------------- AttrOP


def test_identity_loss_counts_only_beyond_the_margin() -> None:
    distance = torch.tensor([0.0, 0.29, 0.3, 0.31, 0.9])
    assert identity_loss(distance).tolist() == pytest.approx([0.0, 0.0, 0.0, 0.31, 0.9])
    assert identity_loss(distance, 0.5).tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0, 0.9])


def test_quality_target_and_yaw_loss() -> None:
    norms = torch.tensor([10.0, 23.5, 24.0, 30.0])
    assert quality_loss(norms).tolist() == pytest.approx([14 / 30, 0.5 / 30, 0.0, 0.0])
    yaw = torch.tensor([-85.0, 30.0, 120.0, 10.0])
    targets = torch.tensor([85.0, 60.0, 60.0, float("nan")])
    assert yaw_loss(yaw, targets).tolist() == pytest.approx([0.0, 30 / 90, 30 / 90, 0.0])  # |yaw| clipped to 90


class TinyEstimators:
    """Small real torch models over 3x8x8 images: a linear 'face embedder', a 'quality' embedder whose norm is set by
    `quality_scale`, and a yaw read from the image mean."""

    def __init__(self, quality_scale: float) -> None:
        torch.manual_seed(0)
        self.identity = nn.Sequential(nn.Flatten(), nn.Linear(192, 16)).requires_grad_(False)
        self.quality_head = nn.Sequential(nn.Flatten(), nn.Linear(192, 16)).requires_grad_(False)
        self.scale = quality_scale

    def models(self) -> dict:
        return {"identity": self.identity, "quality": lambda im: self.quality_head(im) * self.scale,
                "yaw": lambda im: im.mean(dim=(1, 2, 3)) * 90.0}


def tiny_render(calls: list[int]):
    torch.manual_seed(1)
    decoder = nn.Linear(16, 192).requires_grad_(False)

    def render(vectors: torch.Tensor, rows) -> torch.Tensor:
        calls.append(len(rows))
        return torch.tanh(decoder(vectors)).reshape(-1, 3, 8, 8)

    return render


def test_attrop_stops_after_30_tries_and_records_failure() -> None:
    calls: list[int] = []
    vectors, classes = torch.randn(2, 16), torch.randn(2, 16)
    unreachable = TinyEstimators(quality_scale=1e-3)  # MagFace norm far below 24: never passes
    result = run_attrop(tiny_render(calls), vectors, classes, [30.0, None], unreachable.models())
    assert len(calls) == 30 and calls == [2] * 30  # one render per try, both images every time, then stop
    assert result.tries == [30, 30] and result.passed == [False, False] and result.statuses == ["failed", "failed"]
    assert result.images.shape == (2, 3, 8, 8) and not torch.allclose(result.vectors, vectors)
    capped = run_attrop(tiny_render(calls := []), vectors, classes, [None, None], unreachable.models(),
                        AttrOPSettings(max_tries=3))
    assert len(calls) == 3 and capped.tries == [3, 3]
    with pytest.raises(ValueError, match="max_tries"):
        AttrOPSettings(max_tries=0)


def test_attrop_keeps_passing_images_and_optimises_the_rest() -> None:
    estimators = TinyEstimators(quality_scale=1e4)  # quality always met
    vectors = torch.randn(2, 16)
    calls: list[int] = []
    render = tiny_render(calls)
    with torch.no_grad():
        own = estimators.identity(render(vectors[:1], [0]))
    calls.clear()
    # image 0's class vector is its own render's embedding (distance 0: passes at once); image 1's another one
    classes = torch.cat([own, torch.randn(1, 16)])
    result = run_attrop(render, vectors, classes, [None, None], estimators.models())
    assert result.passed[0] and result.tries[0] == 1 and torch.equal(result.vectors[0], vectors[0])
    assert calls[0] == 2 and all(c == 1 for c in calls[1:])  # after the first try only image 1 is rendered
    assert result.tries[1] == len(calls) and not torch.equal(result.vectors[1], vectors[1])
    # image 1 follows the same path alone as in the batch: its loss is its own
    alone = run_attrop(render, vectors[1:], classes[1:], [None], estimators.models())
    assert torch.allclose(alone.vectors[0], result.vectors[1], atol=1e-6) and alone.tries[0] == result.tries[1]
    scores = score(result.images, classes, torch.tensor([float("nan")] * 2), estimators.identity,
                   estimators.models()["quality"], None, AttrOPSettings())
    assert passes(scores, torch.tensor([float("nan")] * 2), AttrOPSettings()).tolist()[0]


# ---------------------------------------------------------------- the backend




def test_target_yaws_from_the_list_and_the_attributes() -> None:
    yaws = [0.0, 45.0, -45.0]
    live = [LiveRequest(identity(0), "", k, k, "doc.png") for k in range(4)]
    assert [target_yaw(r, yaws, "head_yaw") for r in live] == [(0.0, "yaws"), (45.0, "yaws"), (-45.0, "yaws"),
                                                                (0.0, "yaws")]
    posed = LiveRequest(identity(1, {"head_yaw": "20|-70"}), "", 1, 1, "doc.png")
    assert target_yaw(posed, yaws, "head_yaw") == (-70.0, "attribute:head_yaw")
    assert target_yaw(DocumentRequest(identity(0), "", 1), yaws, "head_yaw") == (0.0, "document")
    with pytest.raises(ValueError, match="b0-002.*head_yaw='left'"):
        target_yaw(LiveRequest(identity(2, {"head_yaw": "left"}), "", 0, 1, "doc.png"), yaws, "head_yaw")
    with pytest.raises(ValueError, match="yaws"):
        Vec2FacePlusLiveGenerator(yaws=[120.0])
    # the yaw list and AttrOP's settings are part of what makes an image: finished images are not reused across them
    default = Vec2FacePlusLiveGenerator().settings
    assert Vec2FacePlusLiveGenerator(yaws=[10.0]).settings != default
    assert Vec2FacePlusLiveGenerator(attrop_max_tries=5).settings["attrop"]["max_tries"] == 5


def test_generate_with_attrop_records_failures_and_regenerates(tiny_root: Path) -> None:
    assert backend_class("document_generator", "vec2face_plus") is Vec2FacePlusDocumentGenerator
    assert backend_class("live_generator", "vec2face_plus") is Vec2FacePlusLiveGenerator
    # two tries, and a quality target random weights never reach: every image is recorded as failed
    options = tiny_options(tiny_root) | {"batch_size": 4, "attrop_max_tries": 2, "quality_target": 1e6}
    live = Vec2FacePlusLiveGenerator(**options).generate(
        [LiveRequest(identity(0), "", k, 20 + k, "doc.png", identity_vector=unit(0)) for k in range(2)])
    document = Vec2FacePlusDocumentGenerator(**options).generate([DocumentRequest(identity(1), "", 5, unit(1))])[0]
    for result in (*live, document):
        assert result.image.size == (112, 112) and result.params["generation_status"] == "attrop_failed"
        record = result.params["attrop"]
        assert record["status"] == "failed" and record["tries"] == 2 and record["max_tries"] == 2
        assert len(record["vector"]) == 512 and record["yaw"] is not None
    assert [r.params["target_yaw"] for r in live] == [0.0, 30.0] and live[0].params["pose_control"] is True
    assert document.params["target_yaw"] == 0.0 and document.params["pose_control"] is False
    assert document.params["sigma"] is None and live[0].params["sigma"] in (0.3, 0.5, 0.7)
    assert 0.8 <= live[0].params["mask_ratio"] <= 0.9 and 0.1 <= document.params["mask_ratio"] <= 1.0
    for result, cls in ((live[1], Vec2FacePlusLiveGenerator), (document, Vec2FacePlusDocumentGenerator)):
        params = json.loads(json.dumps(result.params))
        fresh = cls.from_params(params, **{k: v for k, v in tiny_options(tiny_root).items() if k != "model_id"})
        again = np.asarray(fresh.regenerate(params), int)
        assert np.abs(again - np.asarray(result.image, int)).max() <= 1
    # without AttrOP: one render, no estimators loaded, nothing recorded as failed
    plain = Vec2FacePlusLiveGenerator(**tiny_options(tiny_root), attrop=False)
    image = plain.generate([LiveRequest(identity(0), "", 1, 21, "doc.png", identity_vector=unit(0))])[0]
    assert image.params["attrop"] is None and image.params["generation_status"] == "ok"
    assert set(plain._models) == {"main", "pose", "pose_cond"}
