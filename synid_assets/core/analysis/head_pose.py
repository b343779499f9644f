"""6DRepNet head-pose estimation (Hempel et al., ICIP 2022), the yaw estimator of Vec2Face's and Vec2Face+'s AttrOP.

Written for SynID with the module and parameter names of the `sixdrepnet` 0.1.6 package (PyPI; github.com/thohemp/
6DRepNet), so a state_dict of `SixDRepNet` has the keys and shapes of `SixDRepNet(backbone_name='RepVGG-B1g2',
deploy=True)` there: `layer0` .. `layer4` (RepVGG's `stage0` .. `stage4`, each block one re-parameterised 3x3
convolution `rbr_reparam` with bias, then ReLU; the SE block is an Identity), global average pooling and
`linear_reg` Linear(2048, 6). Its output, two 3-vectors, is turned into a rotation matrix by Gram-Schmidt
(`compute_rotation_matrix_from_ortho6d`) and into Euler angles (`compute_euler_angles_from_rotation_matrices`: x
pitch, y yaw, z roll, radians).

Vec2Face+ loads `weights/6DRepNet_300W_LP_AFLW2000.pth` of BooBooWu/Vec2Face (the published 300W-LP checkpoint in the
deploy layout) with a strict `load_state_dict` (HaiyuWu/Vec2Face `pose_image_generation.py` @ 9d9fa8c), and feeds it
the generator's 112x112 output as BGR in [0, 1] without ImageNet normalisation; SynID does the same.

The package itself is not a dependency: it needs torchvision, matplotlib and pandas, and pip resolves it to another
torch build; its `__init__` also appends its own folder to sys.path (bare `utils`, `model`, `datasets` modules).
torch is imported by this module: import it only where a model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from synid_assets.core.errors import ModelLoadError

CHECKPOINT_FILE = "weights/6DRepNet_300W_LP_AFLW2000.pth"  # in BooBooWu/Vec2Face
LICENSE = "MIT (6DRepNet, github.com/thohemp/6DRepNet); file from BooBooWu/Vec2Face"
# RepVGG-B1g2 (sixdrepnet/backbone/repvgg.py create_RepVGG_B1g2): blocks [4, 6, 16, 1], widths 64 x [2, 2, 2, 4],
# stage0 min(64, 64 x 2) = 64; groups 2 on the layer indices 2, 4, ..., 26 (stage0 is index 0).
B1G2_BLOCKS = (4, 6, 16, 1)
B1G2_WIDTHS = (64, 128, 256, 512, 2048)
GROUPED_LAYERS = frozenset(range(2, 27, 2))


@dataclass(frozen=True)
class HeadPoseConfig:
    blocks: tuple[int, ...] = B1G2_BLOCKS  # blocks of stage1..stage4
    widths: tuple[int, ...] = B1G2_WIDTHS  # out channels of stage0..stage4
    groups: int = 2  # of the grouped layers


class RepVGGBlock(nn.Module):
    """A deployed RepVGG block: one 3x3 convolution (the fused 3x3, 1x1 and identity branches), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int) -> None:
        super().__init__()
        self.rbr_reparam = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, groups=groups, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.rbr_reparam(x))


class SixDRepNet(nn.Module):
    """Images [n, 3, h, w] (BGR in [0, 1] as Vec2Face feeds it) -> rotation matrices [n, 3, 3]."""

    def __init__(self, config: HeadPoseConfig = HeadPoseConfig()) -> None:  # noqa: B008 (frozen dataclass)
        super().__init__()
        self.config = config
        self.layer0 = RepVGGBlock(3, config.widths[0], 2, 1)
        layer_index, in_channels = 1, config.widths[0]
        stages = []
        for count, width in zip(config.blocks, config.widths[1:], strict=True):
            blocks = []
            for k in range(count):
                groups = config.groups if layer_index in GROUPED_LAYERS else 1
                blocks.append(RepVGGBlock(in_channels, width, 2 if k == 0 else 1, groups))
                in_channels, layer_index = width, layer_index + 1
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.linear_reg = nn.Linear(in_channels, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.layer0(x)))))
        return rotation_from_ortho6d(self.linear_reg(torch.flatten(self.gap(x), 1)))


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-8)


def rotation_from_ortho6d(poses: torch.Tensor) -> torch.Tensor:
    """[n, 6] -> [n, 3, 3]: x = unit(a), z = unit(x cross b), y = z cross x, as columns (Zhou et al.'s 6D form)."""
    x = _unit(poses[:, 0:3])
    z = _unit(torch.cross(x, poses[:, 3:6], dim=1))
    y = torch.cross(z, x, dim=1)
    return torch.stack([x, y, z], dim=2)


def euler_from_rotation(matrices: torch.Tensor) -> torch.Tensor:
    """[n, 3, 3] -> [n, 3] (pitch, yaw, roll) in degrees, by 6DRepNet's formula (x, y, z order; gimbal-lock branch
    when sqrt(R00^2 + R10^2) < 1e-6)."""
    r = matrices
    sy = torch.sqrt(r[:, 0, 0] ** 2 + r[:, 1, 0] ** 2)
    singular = sy < 1e-6
    pitch = torch.where(singular, torch.atan2(-r[:, 1, 2], r[:, 1, 1]), torch.atan2(r[:, 2, 1], r[:, 2, 2]))
    yaw = torch.atan2(-r[:, 2, 0], sy)
    roll = torch.where(singular, torch.zeros_like(sy), torch.atan2(r[:, 1, 0], r[:, 0, 0]))
    return torch.rad2deg(torch.stack([pitch, yaw, roll], dim=1))


def yaw_degrees(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Yaw [n] in degrees of generator images [n, 3, h, w] RGB in [-1, 1], fed as Vec2Face does (BGR, [0, 1])."""
    return euler_from_rotation(model((images[:, [2, 1, 0]] + 1.0) / 2.0).float())[:, 1]


def config_from_state_dict(state: dict[str, torch.Tensor]) -> HeadPoseConfig:
    """The sizes a deploy-layout state_dict was built with (blocks per stage, widths, the grouped layers' groups)."""
    blocks = tuple(len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in range(1, 5))
    widths = (int(state["layer0.rbr_reparam.weight"].shape[0]),) + tuple(
        int(state[f"layer{i}.0.rbr_reparam.weight"].shape[0]) for i in range(1, 5)
    )
    groups, index, in_channels = 1, 1, widths[0]
    for stage in range(1, 5):  # the first grouped layer (index 2) says the groups
        for k in range(blocks[stage - 1]):
            if index == min(GROUPED_LAYERS):
                groups = in_channels // int(state[f"layer{stage}.{k}.rbr_reparam.weight"].shape[1])
            in_channels, index = widths[stage], index + 1
    return HeadPoseConfig(blocks=blocks, widths=widths, groups=groups)


def load_head_pose_checkpoint(path: str | Path, device: str = "cpu") -> SixDRepNet:
    """6DRepNet from a deploy-layout checkpoint (a state_dict, or one under 'state_dict'; a 'module.' prefix is
    dropped), loaded strictly; a file in another layout is named with the first keys that do not match."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"6DRepNet checkpoint {str(path)!r} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelLoadError(f"6DRepNet checkpoint {str(path)!r} could not be read: {type(error).__name__}") from error
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not state:
        raise ModelLoadError(f"6DRepNet checkpoint {str(path)!r} holds no state_dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if "layer0.rbr_reparam.weight" not in state:
        layout = "training (not deployed) RepVGG" if "layer0.rbr_dense.conv.weight" in state else "unknown"
        raise ModelLoadError(
            f"6DRepNet checkpoint {str(path)!r} is not in the deploy layout (layer0.rbr_reparam.*): {layout} keys, "
            f"first {sorted(state)[:3]}"
        )
    try:
        model = SixDRepNet(config_from_state_dict(state))
        model.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError, ValueError, IndexError) as error:
        raise ModelLoadError(f"6DRepNet checkpoint {str(path)!r} does not match RepVGG-B1g2: {error}") from error
    return model.to(device).eval().requires_grad_(False)
