"""The FR backbones SynID loads published checkpoints into: their architectures and the registry of models.

Two module layouts:

- `IResNetBackbone` (`input_layer`, `body.<i>`, `output_layer`): AdaFace IR-101, TreB1eN's ArcFace IR-SE-50 and
  CurricularFace IR-101 (see frs.py's docstring for the block orders).
- `InsightFaceIResNet` (`conv1`, `bn1`, `prelu`, `layer1`..`layer4` of `IBasicBlock`s with `bn1`, `conv1`, `bn2`,
  `prelu`, `conv2`, `bn3` and `downsample.0/1` on each stage's first block, then `bn2`, `dropout`, `fc`
  Linear(512*7*7, 512), `features` BN1d affine): insightface's arcface_torch `iresnet100`, the layout of
  - `arcface-r100-glint360k`: Vec2Face's ID embedder `weights/arcface-r100-glint360k.pth` on BooBooWu/Vec2Face,
    built by `iresnet("100")` and loaded with a strict `load_state_dict(torch.load(path))` (HaiyuWu/Vec2Face
    `gradio_demo/models/iresnet.py` @ 4d5580a, `image_generation_with_reference.py` `_create_fr_model` @ 73c8ffa);
    input RGB, (x / 255 - 0.5) / 0.5.
  - `elasticface-arc-r100`: ElasticFace-Arc R100 `295672backbone.pth` (fdbtrs/ElasticFace `backbones/iresnet.py`
    @ b7c0712, `iresnet100(num_features=512)`, use_se=False), which IDiff-Face and UIFace load strictly as
    `utils/Elastic_R100_295672backbone.pth` (fdbtrs/IDiff-Face `extract_face_embeddings_from_dir.py` @ 31f8d95);
    input RGB, ToTensor + Normalize(0.5, 0.5).
  Both checkpoints are plain state_dicts with these key names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

STAGE_UNITS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    152: (3, 8, 36, 3),
}
FULL_CHANNELS = (64, 128, 256, 512)


def stage_shape(depth: int, units: Sequence[int] | None, channels: Sequence[int] | None
                ) -> tuple[Sequence[int], tuple[int, ...]]:
    """Units and channels of an IResNet's four stages: `units` or the depth's published ones, and `channels`
    or the full widths."""
    if units is None:
        if depth not in STAGE_UNITS:
            raise ValueError(f"depth must be one of {sorted(STAGE_UNITS)}, got {depth}")
        units = STAGE_UNITS[depth]
    chans = tuple(channels) if channels is not None else FULL_CHANNELS
    if len(units) != 4 or len(chans) != 4:
        raise ValueError("units and channels need 4 stages each")
    return units, chans


@dataclass(frozen=True)
class FRSSpec:
    depth: int
    mode: str  # "ir" or "ir_se"
    block_style: str  # "adaface", "treb1en" (IResNetBackbone) or "insightface" (InsightFaceIResNet)
    bn1d_affine: bool
    bgr_input: bool
    checkpoint_name: str
    how_to_get: str

    @property
    def arch_name(self) -> str:
        if self.block_style == "insightface":
            return f"iresnet{self.depth}"
        depth = 101 if self.depth == 100 else self.depth  # the published "IR-101" is num_layers=100
        return f"{self.mode.upper().replace('_', '-')}-{depth}"


FRS_SPECS: dict[str, FRSSpec] = {
    "adaface": FRSSpec(
        100,
        "ir",
        "adaface",
        False,
        True,
        "adaface_ir101_webface12m.ckpt",
        "download adaface_ir101_webface12m.ckpt from the link in mk-minchul/AdaFace's README (pretrained models)",
    ),
    "arcface": FRSSpec(
        50,
        "ir_se",
        "treb1en",
        True,
        False,
        "model_ir_se50.pth",
        "download model_ir_se50.pth (IR-SE50) from the link in TreB1eN/InsightFace_Pytorch's README",
    ),
    "curricularface": FRSSpec(
        100,
        "ir",
        "treb1en",
        False,
        False,
        "CurricularFace_Backbone.pth",
        "download CurricularFace_Backbone.pth (IR101) from the link in HuangYG123/CurricularFace's README",
    ),
    "arcface-r100-glint360k": FRSSpec(
        100,
        "ir",
        "insightface",
        True,
        False,
        "arcface-r100-glint360k.pth",
        "`synid models download PROFILE` fetches weights/arcface-r100-glint360k.pth of the BooBooWu/Vec2Face hub "
        "repo (name it as checkpoint: BooBooWu/Vec2Face:weights/arcface-r100-glint360k.pth)",
    ),
    "elasticface-arc-r100": FRSSpec(
        100,
        "ir",
        "insightface",
        True,
        False,
        "295672backbone.pth",
        "download 295672backbone.pth from the ElasticFace-Arc folder linked in fdbtrs/ElasticFace's README "
        "(IDiff-Face names it utils/Elastic_R100_295672backbone.pth) and give its path as checkpoint",
    ),
}


class SEModule(nn.Module):
    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, padding=0, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        w = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * w


class IRUnit(nn.Module):
    """One residual unit; `block_style` picks the res_layer order of AdaFace or TreB1eN/CurricularFace."""

    def __init__(self, in_c: int, out_c: int, stride: int, se: bool, block_style: str) -> None:
        super().__init__()
        if in_c == out_c:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_c, out_c, (1, 1), stride, bias=False), nn.BatchNorm2d(out_c)
            )
        if block_style == "adaface":
            layers = [
                nn.BatchNorm2d(in_c),
                nn.Conv2d(in_c, out_c, (3, 3), (1, 1), 1, bias=False),
                nn.BatchNorm2d(out_c),
                nn.PReLU(out_c),
                nn.Conv2d(out_c, out_c, (3, 3), stride, 1, bias=False),
                nn.BatchNorm2d(out_c),
            ]
            self.res_layer = nn.Sequential(*layers)
            if se:
                self.res_layer.add_module("se_block", SEModule(out_c, 16))
        elif block_style == "treb1en":
            layers = [
                nn.BatchNorm2d(in_c),
                nn.Conv2d(in_c, out_c, (3, 3), (1, 1), 1, bias=False),
                nn.PReLU(out_c),
                nn.Conv2d(out_c, out_c, (3, 3), stride, 1, bias=False),
                nn.BatchNorm2d(out_c),
            ]
            if se:
                layers.append(SEModule(out_c, 16))
            self.res_layer = nn.Sequential(*layers)
        else:
            raise ValueError(f"unknown block_style {block_style!r} (adaface, treb1en)")

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class Flatten(nn.Module):
    def forward(self, x):
        return x.reshape(x.shape[0], -1)


class IResNetBackbone(nn.Module):
    """IR / IR-SE backbone for 112x112 crops with the published checkpoints' module names.

    depth 50/100/152 sets the units per stage; `units` and `channels` override them for reduced test models
    (same key naming, fewer/narrower units). forward returns the raw 512-d embedding (not normalized).
    """

    def __init__(
        self,
        depth: int = 100,
        mode: str = "ir",
        block_style: str = "treb1en",
        bn1d_affine: bool = False,
        units: Sequence[int] | None = None,
        channels: Sequence[int] | None = None,
        embedding_size: int = 512,
    ) -> None:
        super().__init__()
        if mode not in ("ir", "ir_se"):
            raise ValueError(f"mode must be 'ir' or 'ir_se', got {mode!r}")
        units, chans = stage_shape(depth, units, channels)
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, chans[0], (3, 3), 1, 1, bias=False), nn.BatchNorm2d(chans[0]), nn.PReLU(chans[0])
        )
        modules = []
        in_c = chans[0]
        for n_units, out_c in zip(units, chans, strict=True):
            for i in range(n_units):
                stride = 2 if i == 0 else 1
                modules.append(IRUnit(in_c if i == 0 else out_c, out_c, stride, mode == "ir_se", block_style))
            in_c = out_c
        self.body = nn.Sequential(*modules)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(chans[3]),
            nn.Dropout(0.4),
            Flatten(),
            nn.Linear(chans[3] * 7 * 7, embedding_size),
            nn.BatchNorm1d(embedding_size, affine=bn1d_affine),
        )

    def forward(self, x):
        return self.output_layer(self.body(self.input_layer(x)))


class IBasicBlock(nn.Module):
    """arcface_torch's IBasicBlock: BN, Conv3x3, BN, PReLU, Conv3x3(stride), BN, plus the identity or downsample."""

    def __init__(self, in_c: int, out_c: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_c, eps=1e-05)
        self.conv1 = nn.Conv2d(in_c, out_c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_c, eps=1e-05)
        self.prelu = nn.PReLU(out_c)
        self.conv2 = nn.Conv2d(out_c, out_c, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_c, eps=1e-05)
        self.downsample = None
        if stride != 1 or in_c != out_c:
            self.downsample = nn.Sequential(nn.Conv2d(in_c, out_c, 1, stride, bias=False), nn.BatchNorm2d(out_c))

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class InsightFaceIResNet(nn.Module):
    """insightface arcface_torch's IResNet (as Vec2Face and ElasticFace ship it) for 112x112 crops, 512-d output.

    `units` and `channels` reduce it for test models (same key names); forward returns the raw `features` output.
    """

    def __init__(
        self,
        depth: int = 100,
        units: Sequence[int] | None = None,
        channels: Sequence[int] | None = None,
        embedding_size: int = 512,
    ) -> None:
        super().__init__()
        units, chans = stage_shape(depth, units, channels)
        self.conv1 = nn.Conv2d(3, chans[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(chans[0], eps=1e-05)
        self.prelu = nn.PReLU(chans[0])
        in_c = chans[0]
        for stage, (n_units, out_c) in enumerate(zip(units, chans, strict=True), start=1):
            blocks = [IBasicBlock(in_c if i == 0 else out_c, out_c, 2 if i == 0 else 1) for i in range(n_units)]
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
            in_c = out_c
        self.bn2 = nn.BatchNorm2d(chans[3], eps=1e-05)
        self.dropout = nn.Dropout(p=0.0)  # no weights; inactive in eval either way (0.4 in Vec2Face, 0 in ElasticFace)
        self.fc = nn.Linear(chans[3] * 7 * 7, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-05)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.features(self.fc(self.dropout(self.bn2(x).flatten(1))))


def build_backbone(frs: str, units: Sequence[int] | None = None, channels: Sequence[int] | None = None) -> nn.Module:
    """The FRS's backbone (random weights), full published size unless units/channels reduce it."""
    if frs not in FRS_SPECS:
        raise KeyError(f"unknown FRS {frs!r} (known: {sorted(FRS_SPECS)})")
    spec = FRS_SPECS[frs]
    if spec.block_style == "insightface":
        return InsightFaceIResNet(spec.depth, units=units, channels=channels)
    return IResNetBackbone(spec.depth, spec.mode, spec.block_style, spec.bn1d_affine, units=units, channels=channels)
