"""The three face-recognition systems FLUXSynID filters with, as torch IResNets loading their published checkpoints.

- adaface: `adaface_ir101_webface12m.ckpt`, a Lightning checkpoint whose `state_dict` keys are prefixed
  `model.`; IR-101 as mk-minchul/AdaFace `net.py` `Backbone(input_size, 100, 'ir')`; input BGR in [-1, 1].
- arcface: `model_ir_se50.pth`, a plain state_dict; IR-SE-50 as TreB1eN/InsightFace_Pytorch `model.py`
  `Backbone(50, drop_ratio, 'ir_se')`; input RGB in [-1, 1].
- curricularface: `CurricularFace_Backbone.pth`, a plain state_dict; IR-101 as HuangYG123/CurricularFace
  `backbone/model_irse.py` `IR_101`; input RGB in [-1, 1].

Both families name modules `input_layer` (Conv, BN, PReLU), `body.<i>` (units with `shortcut_layer` = MaxPool (no
weights) or Sequential(Conv1x1, BN), and `res_layer`), `output_layer` (BN2d, Dropout, Flatten, Linear(512*7*7,
512), BN1d). They differ inside `res_layer`:

- AdaFace `BasicBlockIR`: 0 BN, 1 Conv3x3, 2 BN, 3 PReLU, 4 Conv3x3(stride), 5 BN (SE, for ir_se, as `se_block`);
  output BN1d affine=False.
- TreB1eN / CurricularFace `bottleneck_IR(_SE)`: 0 BN, 1 Conv3x3, 2 PReLU, 3 Conv3x3(stride), 4 BN (5 SEModule
  with fc1/fc2 for ir_se); output BN1d affine=True in TreB1eN's ArcFace, affine=False in CurricularFace.

Input conventions follow FLUXSynID (models/face_recognition/*/model.py @ b9b3041), which is where the thresholds
below were measured: ArcFace and CurricularFace get the RGB crop normalized to [-1, 1]; AdaFace swaps it to BGR
first (as AdaFace's own inference.py does). Embeddings are L2-normalized here (AdaFace/TreB1eN normalize inside
their forward; CurricularFace returns the raw BN1d output).

Note on alignment: FLUXSynID crops with MTCNN landmarks and a full affine least-squares fit onto the same 112x112
ArcFace template; this module uses SCRFD (or dlib) landmarks and a similarity fit, so scores near a threshold can
differ slightly from FLUXSynID's.
"""

from __future__ import annotations

import pickle
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from synid_assets.core.analysis.alignment import align_face_eyes
from synid_assets.core.analysis.types import FaceAnalysis, Threshold, as_rgb_uint8, embed_detected
from synid_assets.core.config.requirements import BackendRequirements, ModelNeed, local_model
from synid_assets.core.errors import ModelLoadError

FLUXSYNID_SOURCE = "FLUXSynID dataset_filtering/find_similar_ids.py (Raul2718/FLUXSynID @ b9b3041)"

_FRS_THRESHOLD_VALUES: dict[str, dict[float, float]] = {
    "arcface": {1e-3: 0.42314568161964417, 1e-4: 0.49696439504623413},
    "adaface": {1e-3: 0.2530066967010498, 1e-4: 0.333987832069397},
    "curricularface": {1e-3: 0.2855643630027771, 1e-4: 0.3750773072242737},
}

STAGE_UNITS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    152: (3, 8, 36, 3),
}
FULL_CHANNELS = (64, 128, 256, 512)


@dataclass(frozen=True)
class FRSSpec:
    depth: int
    mode: str  # "ir" or "ir_se"
    block_style: str  # "adaface" or "treb1en"
    bn1d_affine: bool
    bgr_input: bool
    checkpoint_name: str
    how_to_get: str

    @property
    def arch_name(self) -> str:
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
}


def frs_thresholds(frs: str) -> list[Threshold]:
    """FLUXSynID's cosine thresholds for an FRS at FMR 1e-3 and 1e-4."""
    if frs not in _FRS_THRESHOLD_VALUES:
        raise KeyError(f"unknown FRS {frs!r} (known: {sorted(_FRS_THRESHOLD_VALUES)})")
    return [Threshold(fmr=f, value=v, source=FLUXSYNID_SOURCE) for f, v in _FRS_THRESHOLD_VALUES[frs].items()]


def threshold_at(frs: str, fmr: float) -> Threshold:
    """The threshold of `frs` at `fmr`; KeyError names the FMRs that are known."""
    thresholds = frs_thresholds(frs)
    for t in thresholds:
        if abs(t.fmr - fmr) <= 1e-12 * max(1.0, fmr):
            return t
    known = ", ".join(f"{t.fmr:g}" for t in thresholds)
    raise KeyError(f"FRS {frs!r} has no threshold for FMR {fmr:g} (known: {known})")


class FRSCheckpointError(ModelLoadError):
    """A checkpoint that is missing, unreadable, or whose keys do not match the FRS's architecture."""


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
        if units is None:
            if depth not in STAGE_UNITS:
                raise ValueError(f"depth must be one of {sorted(STAGE_UNITS)}, got {depth}")
            units = STAGE_UNITS[depth]
        chans = tuple(channels) if channels is not None else FULL_CHANNELS
        if len(units) != 4 or len(chans) != 4:
            raise ValueError("units and channels need 4 stages each")
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


def build_backbone(
    frs: str, units: Sequence[int] | None = None, channels: Sequence[int] | None = None
) -> IResNetBackbone:
    """The FRS's IResNet (random weights), full published size unless units/channels reduce it."""
    if frs not in FRS_SPECS:
        raise KeyError(f"unknown FRS {frs!r} (known: {sorted(FRS_SPECS)})")
    spec = FRS_SPECS[frs]
    return IResNetBackbone(spec.depth, spec.mode, spec.block_style, spec.bn1d_affine, units=units, channels=channels)


def _read_checkpoint(path: Path):
    if not path.is_file():
        raise FRSCheckpointError(f"FRS checkpoint not found: {path}")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Lightning checkpoints (AdaFace) pickle their hyper-parameters; the file is one the profile names.
        warnings.warn(f"{path}: not loadable with weights_only=True; loading it as a full pickle", stacklevel=3)
    except Exception as exc:  # noqa: BLE001
        raise FRSCheckpointError(f"cannot read FRS checkpoint {path}: {exc}") from exc
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise FRSCheckpointError(f"cannot read FRS checkpoint {path}: {exc}") from exc


def checkpoint_state_dict(frs: str, raw, path: Path | str = "<memory>") -> dict[str, torch.Tensor]:
    """The backbone's weights from a loaded checkpoint, in the backbone's own key names.

    AdaFace: `raw['state_dict']` keys starting with `model.` (the prefix dropped; `head.*` ignored). ArcFace,
    CurricularFace: the dict itself. A `module.` prefix on every key (DataParallel) is dropped.
    """
    state = raw
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise FRSCheckpointError(f"{path}: expected a state_dict (dict of tensors), got {type(state).__name__}")
    if frs == "adaface" and any(k.startswith("model.") for k in state):
        state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_frs_checkpoint(
    frs: str,
    checkpoint: str | Path,
    model=None,
    units: Sequence[int] | None = None,
    channels: Sequence[int] | None = None,
):
    """Build the FRS backbone and load `checkpoint` strictly; FRSCheckpointError names the file and first bad keys."""
    path = Path(checkpoint).expanduser()
    if frs not in FRS_SPECS:
        raise KeyError(f"unknown FRS {frs!r} (known: {sorted(FRS_SPECS)})")
    spec = FRS_SPECS[frs]
    if not path.is_file():
        raise FRSCheckpointError(f"{frs} checkpoint not found: {path}. Fix: {spec.how_to_get}.")
    state = checkpoint_state_dict(frs, _read_checkpoint(path), path)
    if model is None:
        model = build_backbone(frs, units=units, channels=channels)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {missing[:5]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {unexpected[:5]})")
        if wrong_shape:
            parts.append(f"{len(wrong_shape)} shape mismatches (checkpoint vs model, first: {wrong_shape[:5]})")
        raise FRSCheckpointError(
            f"{path} does not match the {frs} architecture ({spec.arch_name}, "
            f"{spec.block_style} layout, expected file {spec.checkpoint_name}): " + "; ".join(parts)
        )
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


class TorchFRSAnalyzer:
    """Detection + 5-point alignment + one of FLUXSynID's FRS (AdaFace / ArcFace / CurricularFace), 512-d."""

    dim = 512
    # What it needs (see core/config/requirements.py): a GPU when one is visible (device="auto"), else the CPU.
    requirements = BackendRequirements(device="any")

    @classmethod
    def required_models(cls, options: Mapping[str, Any]) -> list[ModelNeed]:
        """The detector's model pack and the FRS checkpoint: local paths (not on the hub in a standard layout)."""
        return [local_model(options[key], key) for key in ("detector_model_dir", "checkpoint") if options.get(key)]

    def __init__(
        self,
        frs: str,
        checkpoint: str,
        detector_model_dir: str | None = None,
        device: str = "auto",
        dtype: str = "float32",
        batch_size: int = 64,
        det_size: int = 640,
        det_thresh: float = 0.5,
        units: Sequence[int] | None = None,
        channels: Sequence[int] | None = None,
    ) -> None:
        if frs not in FRS_SPECS:
            raise ModelLoadError(f"unknown FRS {frs!r} (known: {sorted(FRS_SPECS)})")
        if dtype not in _DTYPES:
            raise ModelLoadError(f"unknown dtype {dtype!r} (known: {sorted(_DTYPES)})")
        self.frs = frs
        self.spec = FRS_SPECS[frs]
        self.checkpoint = str(checkpoint)
        self.detector_model_dir = detector_model_dir
        self.device_name = device
        self.dtype_name = _DTYPES[dtype]
        self.batch_size = max(1, int(batch_size))
        self.det_size = int(det_size)
        self.det_thresh = float(det_thresh)
        self.units = tuple(units) if units is not None else None  # reduced test models only
        self.channels = tuple(channels) if channels is not None else None
        self.model_id = f"frs:{frs}/{Path(self.checkpoint).stem}"
        self.thresholds = frs_thresholds(frs)
        self._model = None
        self._detector = None
        self._dlib = None
        self._device = None
        self._dtype = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the detector and the FRS checkpoint once; later calls are no-ops."""
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            if self.detector_model_dir is not None:
                from synid_assets.core.analysis.insightface_analyzer import SCRFDDetector, find_detector

                self._detector = SCRFDDetector(find_detector(self.detector_model_dir), self.det_size, self.det_thresh)
            else:
                from synid_assets.core.analysis.dlib_analyzer import DlibFaceAnalyzer

                dlib_analyzer = DlibFaceAnalyzer()
                dlib_analyzer.load()
                self._dlib = dlib_analyzer
            model = load_frs_checkpoint(self.frs, self.checkpoint, units=self.units, channels=self.channels)
            self._device = torch.device(resolve_device(self.device_name))
            self._dtype = getattr(torch, self.dtype_name)
            self._model = model.to(self._device, dtype=self._dtype).eval()

    def _detect(self, img: np.ndarray) -> FaceAnalysis:
        if self._detector is not None:
            return self._detector.detect_and_align(img)
        # dlib fallback: its 5 points are the image-right eye's outer/inner corners (0, 1), the image-left eye's
        # outer/inner corners (2, 3) and the base of the nose (4) -- no mouth corners, so the crop is aligned by
        # the two eye centres onto the template's eyes (see alignment.align_face_eyes).
        analysis, shape = self._dlib._detect(img)
        if shape is None:
            return analysis
        pts = np.asarray(analysis.landmarks, dtype=np.float64)
        left_eye = pts[2:4].mean(axis=0)
        right_eye = pts[0:2].mean(axis=0)
        analysis.aligned = align_face_eyes(img, left_eye, right_eye, 112)
        return analysis

    def embed_aligned(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalized float32 (N, 512) embeddings of aligned 112x112 RGB uint8 crops."""
        self.load()
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = []
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                chunk = np.stack([np.asarray(c, dtype=np.uint8) for c in crops[start : start + self.batch_size]])
                if self.spec.bgr_input:
                    chunk = chunk[..., ::-1]
                x = torch.from_numpy(np.ascontiguousarray(chunk)).to(self._device)
                x = x.permute(0, 3, 1, 2).to(torch.float32).sub_(127.5).div_(127.5).to(self._dtype)
                feats = self._model(x).float()
                feats = torch.nn.functional.normalize(feats, p=2, dim=1)
                out.append(feats.cpu().numpy().astype(np.float32))
        return np.concatenate(out)

    def analyze(self, image: np.ndarray) -> FaceAnalysis:
        """Analyse one RGB uint8 image; no face gives detected=False and embedding=None."""
        return self.analyze_many([image])[0]

    def analyze_many(self, images: Sequence[np.ndarray]) -> list[FaceAnalysis]:
        self.load()
        results = [self._detect(as_rgb_uint8(img)) for img in images]
        return embed_detected(results, self.embed_aligned)
