"""Face-recognition systems as torch IResNets loading their published checkpoints (architectures: frs_models.py).

FLUXSynID's three, with its thresholds:

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

The ID embedders of the embedding-space generators (key layouts and upstream commits in frs_models.py), with no
published per-FMR cosine threshold, so a profile gets its thresholds from `synid calibrate`:

- arcface-r100-glint360k: Vec2Face / Vec2Face+'s `weights/arcface-r100-glint360k.pth` (BooBooWu/Vec2Face; give
  `checkpoint: BooBooWu/Vec2Face:weights/arcface-r100-glint360k.pth` to load it from the hub cache); input RGB in
  [-1, 1], as Vec2Face feeds it.
- elasticface-arc-r100: ElasticFace-Arc R100 `295672backbone.pth`, IDiff-Face and UIFace's embedder; input RGB in
  [-1, 1], as IDiff-Face's ToTensor + Normalize(0.5, 0.5).

Note on alignment: FLUXSynID crops with MTCNN landmarks and a full affine least-squares fit onto the same 112x112
ArcFace template; this module uses SCRFD (or dlib) landmarks and a similarity fit, so scores near a threshold can
differ slightly from FLUXSynID's.
"""

from __future__ import annotations

import pickle
import threading
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synid_assets.core.analysis.alignment import align_face_eyes
from synid_assets.core.analysis.frs_models import FRS_SPECS, build_backbone
from synid_assets.core.analysis.types import FaceAnalysis, Threshold, as_rgb_uint8, embed_detected
from synid_assets.core.config.models import license_of
from synid_assets.core.config.requirements import BackendRequirements, ModelNeed, local_model
from synid_assets.core.errors import ModelLoadError
from synid_assets.core.generation.torch_runtime import resolve_device

FLUXSYNID_SOURCE = "FLUXSynID dataset_filtering/find_similar_ids.py (Raul2718/FLUXSynID @ b9b3041)"

_FRS_THRESHOLD_VALUES: dict[str, dict[float, float]] = {
    "arcface": {1e-3: 0.42314568161964417, 1e-4: 0.49696439504623413},
    "adaface": {1e-3: 0.2530066967010498, 1e-4: 0.333987832069397},
    "curricularface": {1e-3: 0.2855643630027771, 1e-4: 0.3750773072242737},
}

CALIBRATE_HINT = (
    "no published per-FMR threshold: measure them on labelled pairs with "
    "`synid calibrate --profile PROFILE --pairs PAIRS --images DIR --write PROFILE.yaml`"
)


def frs_thresholds(frs: str) -> list[Threshold]:
    """FLUXSynID's cosine thresholds for an FRS at FMR 1e-3 and 1e-4; [] for an FRS with none published."""
    if frs not in FRS_SPECS:
        raise KeyError(f"unknown FRS {frs!r} (known: {sorted(FRS_SPECS)})")
    return [Threshold(fmr=f, value=v, source=FLUXSYNID_SOURCE) for f, v in _FRS_THRESHOLD_VALUES.get(frs, {}).items()]


def threshold_at(frs: str, fmr: float) -> Threshold:
    """The threshold of `frs` at `fmr`; KeyError names the FMRs that are known."""
    thresholds = frs_thresholds(frs)
    if not thresholds:
        raise KeyError(f"FRS {frs!r} has {CALIBRATE_HINT}")
    for t in thresholds:
        if abs(t.fmr - fmr) <= 1e-12 * max(1.0, fmr):
            return t
    known = ", ".join(f"{t.fmr:g}" for t in thresholds)
    raise KeyError(f"FRS {frs!r} has no threshold for FMR {fmr:g} (known: {known})")


class FRSCheckpointError(ModelLoadError):
    """A checkpoint that is missing, unreadable, or whose keys do not match the FRS's architecture."""


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
    # BN counters absent from a checkpoint are filled in, as torch's BatchNorm does for old state_dicts
    # (they are unused in eval); every weight and running statistic must be there.
    state = {k: v for k, v in expected.items() if k.endswith("num_batches_tracked") and k not in state} | state
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


def hub_checkpoint(checkpoint: str) -> tuple[str, str] | None:
    """(repo id, file) when `checkpoint` names a file in a hub repo as `owner/name:path/in/repo`, else None."""
    repo, sep, file = str(checkpoint).partition(":")
    if not sep or not file or repo.count("/") != 1 or repo.startswith(("/", ".", "~")) or "\\" in repo:
        return None
    return None if Path(checkpoint).expanduser().exists() else (repo, file)


_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


class TorchFRSAnalyzer:
    """Detection + 5-point alignment + one of the FRS in FRS_SPECS (FLUXSynID's three, the generators' ID embedders)."""

    dim = 512
    # What it needs (see core/config/requirements.py): a GPU when one is visible (device="auto"), else the CPU.
    requirements = BackendRequirements(device="any")

    @classmethod
    def required_models(cls, options: Mapping[str, Any]) -> list[ModelNeed]:
        """The detector's model pack (a local path) and the FRS checkpoint: a local path or a hub repo's file."""
        needs = (
            [local_model(options["detector_model_dir"], "detector_model_dir")]
            if options.get("detector_model_dir")
            else []
        )
        hub = hub_checkpoint(options["checkpoint"]) if options.get("checkpoint") else None
        if hub is not None:
            needs.append(ModelNeed(hub[0], options.get("revision"), (hub[1],), license_of(hub[0]), part="checkpoint"))
        elif options.get("checkpoint"):
            needs.append(local_model(options["checkpoint"], "checkpoint"))
        return needs

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
        revision: str | None = None,
        cache_dir: str | None = None,
        local_files_only: bool = False,
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
        self.revision = revision  # of a hub checkpoint (`owner/name:file`)
        self.cache_dir = cache_dir
        self.local_files_only = bool(local_files_only)
        self.model_id = f"frs:{frs}/{Path(self.checkpoint).stem}"
        self.thresholds = frs_thresholds(frs)
        self._model = None
        self._detector = None
        self._dlib = None
        self._device = None
        self._dtype = None
        self._lock = threading.Lock()

    def checkpoint_path(self) -> Path:
        """The checkpoint file: the local path, or a hub file from the cache (`synid models download` fetches it)."""
        hub = hub_checkpoint(self.checkpoint)
        if hub is None:
            return Path(self.checkpoint).expanduser()
        from huggingface_hub import hf_hub_download

        try:
            return Path(
                hf_hub_download(
                    hub[0],
                    hub[1],
                    revision=self.revision,
                    cache_dir=self.cache_dir,
                    local_files_only=self.local_files_only,
                )
            )
        except Exception as exc:  # not found, offline: every fetch failure
            raise FRSCheckpointError(
                f"{self.frs} checkpoint {hub[1]!r} of {hub[0]!r} could not be fetched: {type(exc).__name__}: {exc}. "
                "Fetch it first with `synid models download PROFILE`."
            ) from exc

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
            model = load_frs_checkpoint(self.frs, self.checkpoint_path(), units=self.units, channels=self.channels)
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
