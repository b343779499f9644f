"""Tiny stand-ins for the InsightFace pack and the FRS checkpoints, built in a temporary folder (no downloads).

- `TinySCRFD`: a torch module with SCRFD's ONNX signature (input N x 3 x H x W, dynamic; outputs scores for
  strides 8/16/32, then bbox distances for 8/16/32, then keypoint offsets for 8/16/32, each (H/s*W/s*2, C)).
  Its "weights" are set by hand: for each anchor it scores how close the anchor centre is to one of the given
  target faces (in network-input pixels) and predicts that face's box and keypoints, so decoding must give them
  back exactly.
- `TinyArcFace`: N x 3 x 112 x 112 -> N x 512 with seeded random weights.
- `tiny_frs_checkpoint`: a reduced IResNet (same key names, fewer and narrower units) saved in the FRS's
  published layout (AdaFace: Lightning dict with `model.`-prefixed keys plus a `head.kernel`; the others, including
  the arcface_torch layout of `arcface-r100-glint360k` and `elasticface-arc-r100`: a plain state_dict).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

STRIDES = (8, 16, 32)
NUM_ANCHORS = 2
TINY_UNITS = (1, 1, 1, 1)
TINY_CHANNELS = (16, 32, 48, 64)


@dataclass(frozen=True)
class TinyFace:
    """A face the tiny detector reports, in network-input pixels: anchor centre, box and 5 keypoints."""

    center: tuple[float, float]
    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    kps: tuple[tuple[float, float], ...]  # 5 x (x, y)
    logit: float = 20.0


class TinySCRFD(nn.Module):
    def __init__(self, faces: list[TinyFace], score_bias: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("centers", torch.tensor([f.center for f in faces], dtype=torch.float32))
        self.register_buffer("boxes", torch.tensor([f.box for f in faces], dtype=torch.float32))
        self.register_buffer("kps", torch.tensor([f.kps for f in faces], dtype=torch.float32).reshape(len(faces), 10))
        self.register_buffer("logits", torch.tensor([f.logit for f in faces], dtype=torch.float32))
        self.score_bias = float(score_bias)

    def forward(self, x):
        _, _, h, w = x.shape
        link = 0.0 * x.mean()  # keeps the input in the graph
        scores, bboxes, kpss = [], [], []
        for stride in STRIDES:
            ys = torch.arange(h // stride, dtype=torch.float32) * stride
            xs = torch.arange(w // stride, dtype=torch.float32) * stride
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)  # (L, 2), row-major like insightface
            grid = grid.repeat_interleave(NUM_ANCHORS, dim=0)  # (L*A, 2)
            d2 = ((grid[:, None, :] - self.centers[None, :, :]) ** 2).sum(-1)  # (L*A, F)
            near = torch.softmax(-d2 * 10.0, dim=1)  # one-hot of the nearest face
            logit = (self.logits[None, :] - d2).mul(near).sum(1, keepdim=True) + self.score_bias
            scores.append(torch.sigmoid(logit + link))
            # Distances the decoder multiplies by the stride: box = centre -/+ distance, kps = centre + offset.
            box = near @ self.boxes
            dist = torch.cat([grid - box[:, :2], box[:, 2:] - grid], dim=1) / stride
            bboxes.append(dist + link)
            kp = (near @ self.kps).reshape(-1, 5, 2) - grid[:, None, :]
            kpss.append(kp.reshape(-1, 10) / stride + link)
        return (*scores, *bboxes, *kpss)


class TinyArcFace(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, kernel_size=4, stride=4)  # 112 -> 28, pooled 7x7 -> 4x4
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(8 * 16, 512)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def _export(module: nn.Module, example: torch.Tensor, path: Path, outputs: list[str], dynamic: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (example,),
            str(path),
            input_names=["input.1"],
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )
    return path


def export_detector(path: Path, faces: list[TinyFace], score_bias: float = 0.0) -> Path:
    names = [f"{kind}_{s}" for kind in ("score", "bbox", "kps") for s in STRIDES]
    dynamic = {"input.1": {0: "batch", 2: "height", 3: "width"}} | {n: {0: f"anchors_{n}"} for n in names}
    return _export(TinySCRFD(faces, score_bias), torch.zeros(1, 3, 64, 64), path, names, dynamic)


def export_recognizer(path: Path, seed: int = 0) -> Path:
    dynamic = {"input.1": {0: "batch"}, "fc1": {0: "batch"}}
    return _export(TinyArcFace(seed), torch.zeros(2, 3, 112, 112), path, ["fc1"], dynamic)


def default_face() -> TinyFace:
    """A face centred on an anchor every stride shares, eyes level, in 640x640 network-input pixels."""
    return TinyFace(
        center=(320.0, 288.0),
        box=(240.0, 180.0, 400.0, 400.0),
        kps=((280.0, 260.0), (360.0, 260.0), (320.0, 300.0), (288.0, 345.0), (352.0, 345.0)),
    )


def small_face() -> TinyFace:
    """A smaller face in the top-left corner, scored higher than `default_face` (largest-face tests)."""
    return TinyFace(
        center=(128.0, 128.0),
        box=(100.0, 100.0, 156.0, 160.0),
        kps=((115.0, 120.0), (141.0, 120.0), (128.0, 132.0), (118.0, 145.0), (138.0, 145.0)),
        logit=30.0,
    )


def tilted_face(degrees: float = 20.0) -> TinyFace:
    """`default_face` with its 5 keypoints turned about the box centre (alignment then has to rotate)."""
    face = default_face()
    (x1, y1, x2, y2), angle = face.box, np.deg2rad(degrees)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    cos, sin = float(np.cos(angle)), float(np.sin(angle))
    kps = tuple((cx + cos * (x - cx) - sin * (y - cy), cy + sin * (x - cx) + cos * (y - cy)) for x, y in face.kps)
    return TinyFace(center=face.center, box=face.box, kps=kps, logit=face.logit)


def build_pack(
    root: Path, faces: list[TinyFace] | None = None, score_bias: float = 0.0, pack: str = "tinypack"
) -> Path:
    """<root>/models/<pack>/det_tiny.onnx + w_tiny.onnx; returns the pack folder."""
    pack_dir = root / "models" / pack
    export_detector(pack_dir / "det_tiny.onnx", faces if faces is not None else [default_face()], score_bias)
    export_recognizer(pack_dir / "w_tiny.onnx")
    return pack_dir


def face_image(height: int = 640, width: int = 640, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def smooth_image(height: int, width: int) -> np.ndarray:
    """A smooth RGB uint8 test card (sines and a ramp): unlike noise, bilinear warps of it differ little."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    red = 127.5 + 100 * np.sin(xs / 23.0) * np.cos(ys / 31.0)
    green = 255.0 * xs / width
    blue = 127.5 + 120 * np.cos((xs + ys) / 47.0)
    return np.clip(np.stack([red, green, blue], -1), 0, 255).astype(np.uint8)


def tiny_frs_checkpoint(frs: str, path: Path, seed: int = 0, layout: str | None = None) -> Path:
    """Save a reduced-size FRS backbone with random weights in `layout`'s checkpoint format (default: frs's own).

    Any FRS of frs_models.FRS_SPECS, e.g. "elasticface-arc-r100" (conv1, layer1.0.bn1, ..., fc, features keys).
    """
    from synid_assets.core.analysis.frs_models import build_backbone

    torch.manual_seed(seed)
    model = build_backbone(layout or frs, units=TINY_UNITS, channels=TINY_CHANNELS)
    with torch.no_grad():  # non-trivial BN statistics so a wrong load would change the output
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                buf.normal_(0.0, 0.1)
    state = model.state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    if (layout or frs) == "adaface":
        ckpt = {
            "epoch": 25,
            "state_dict": {f"model.{k}": v for k, v in state.items()} | {"head.kernel": torch.randn(512, 10)},
        }
        torch.save(ckpt, path)
    else:
        torch.save(state, path)
    return path
