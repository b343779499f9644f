"""InsightFace model packs through the insightface library: SCRFD + 5 keypoints, norm_crop alignment, ArcFace ONNX.

Mirrors `DlibFaceAnalyzer` (model_id, dim, load(), analyze(), analyze_many()). insightface, onnx and onnxruntime
are imported in `load()`, so importing this module is cheap. What insightface does:

- `insightface.model_zoo.get_model` routes each .onnx file to its class and opens its onnxruntime session (with
  the providers given, else insightface's default: CoreML, CUDA or CPU, with the CUDA libraries preloaded).
- `SCRFD.detect`: letterbox into det_size x det_size (cv2.resize), (x - 127.5) / 128, decode the 3- or 5-stride
  score/box/keypoint outputs, threshold and NMS at IoU 0.4. It takes OpenCV's BGR frames (its blobFromImage swaps
  them back to RGB for the network), so RGB images are flipped before the call.
- `face_align.norm_crop`: the similarity (skimage) onto the 112x112 ArcFace template, cv2.warpAffine.
- `ArcFaceONNX.get_feat`: BGR crops -> RGB, (x - 127.5) / 127.5 (raw pixels for mxnet-converted graphs that
  normalize inside), one onnxruntime run per batch.

What stays here, because insightface does not do it: finding the detector and the recognizer in a pack folder by
their graph signature (get_model only takes the alphabetically last .onnx of a folder), one-line errors naming
the missing or wrong file, the largest face of several, results for images without a face, cutting the
recognizer's input into batches (and padding them for graphs with a fixed batch size), L2-normalizing embeddings.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synid_assets.core.analysis.types import FaceAnalysis, Threshold, as_rgb_uint8, embed_detected, no_face
from synid_assets.core.config.requirements import BackendRequirements, ModelNeed, local_model
from synid_assets.core.errors import ModelLoadError
from synid_assets.core.filtering.similarity import unit_rows

# insightface publishes no per-FMR cosine thresholds for its ArcFace packs (antelopev2/glintr100,
# buffalo_l/w600k_r50, Arc2Face's arcface.onnx), only benchmark TAR@FAR tables. So no numbers are given here:
# a profile using these embedders must supply calibrated thresholds (e.g. from `synid thresholds calibrate-local`).
THRESHOLDS: dict[str, list[Threshold]] = {}

PACK_HELP = (
    "An insightface model pack is a folder of .onnx files such as ~/.insightface/models/buffalo_l "
    "(det_10g.onnx + w600k_r50.onnx) or ~/.insightface/models/antelopev2 (scrfd_10g_bnkps.onnx + glintr100.onnx); "
    "`pip install insightface` and `insightface.app.FaceAnalysis(name='buffalo_l')` downloads one, or unzip the "
    "pack from the insightface model zoo release into that folder."
)

NMS_IOU = 0.4  # insightface's SCRFD default


@dataclass
class OnnxModelInfo:
    path: Path
    inputs: list[tuple[str, list[int | str | None]]]
    outputs: list[tuple[str, list[int | str | None]]]

    @property
    def role(self) -> str | None:
        if len(self.inputs) != 1:
            return None
        in_shape = self.inputs[0][1]
        if len(self.outputs) in (6, 9, 10, 15) and len(in_shape) == 4:
            return "detector"
        if len(self.outputs) == 1 and len(in_shape) == 4 and in_shape[1:] == [3, 112, 112]:
            out_shape = self.outputs[0][1]
            if out_shape and out_shape[-1] == 512:
                return "recognizer"
        return None

    @property
    def has_keypoints(self) -> bool:
        return len(self.outputs) in (9, 15)


def _dims(value_info) -> list[int | str | None]:
    dims: list[int | str | None] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def inspect_onnx(path: str | Path) -> OnnxModelInfo:
    """Read an ONNX model's graph inputs (weights excluded) and outputs, to tell a detector from a recognizer."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several unrelated types
        raise ModelLoadError(f"cannot read ONNX model {path}: {exc}. {PACK_HELP}") from exc
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [(vi.name, _dims(vi)) for vi in graph.input if vi.name not in initializers]
    outputs = [(vi.name, _dims(vi)) for vi in graph.output]
    return OnnxModelInfo(path=path, inputs=inputs, outputs=outputs)


def _pack_dir(model_dir: str | Path) -> Path:
    base = Path(model_dir).expanduser()
    if not base.is_dir():
        raise ModelLoadError(f"insightface model pack folder not found: {base}. {PACK_HELP}")
    return base


def _named_model(base: Path, name: str, what: str) -> Path:
    path = Path(name).expanduser()
    if not path.is_absolute():
        path = base / name
    if path.suffix != ".onnx" and not path.is_file():
        path = path.with_name(path.name + ".onnx")
    if not path.is_file():
        present = sorted(p.name for p in base.glob("*.onnx"))
        listing = present or "no .onnx files"
        raise ModelLoadError(f"{what} model file missing: {path} (in {base}: {listing}). {PACK_HELP}")
    return path


def find_detector(model_dir: str | Path, detector: str | None = None) -> OnnxModelInfo:
    """The pack's SCRFD detector (with keypoints): the named file, or the one .onnx file shaped like one."""
    base = _pack_dir(model_dir)
    if detector is not None:
        info = inspect_onnx(_named_model(base, detector, "detector"))
        if info.role != "detector":
            raise ModelLoadError(f"{info.path} does not look like an SCRFD detector (1 input, 6/9/10/15 outputs)")
    else:
        found = [i for i in (inspect_onnx(p) for p in sorted(base.glob("*.onnx"))) if i.role == "detector"]
        if not found:
            raise ModelLoadError(f"no SCRFD detector (.onnx with 1 input and 6/9 outputs) in {base}. {PACK_HELP}")
        with_kps = [i for i in found if i.has_keypoints]
        if len(with_kps) > 1:
            names = [i.path.name for i in with_kps]
            raise ModelLoadError(f"several detectors in {base}: {names}; name one with detector=")
        info = with_kps[0] if with_kps else found[0]
    if not info.has_keypoints:
        raise ModelLoadError(
            f"detector {info.path} outputs no keypoints (6 outputs); 5-point alignment needs the keypoint variant "
            "(e.g. scrfd_10g_bnkps.onnx or det_10g.onnx)"
        )
    return info


def find_recognizer(model_dir: str | Path, recognizer: str | None = None) -> OnnxModelInfo:
    """The pack's ArcFace recognizer ((N,3,112,112) -> (N,512)): the named file or the only such file."""
    base = _pack_dir(model_dir)
    if recognizer is not None:
        info = inspect_onnx(_named_model(base, recognizer, "recognizer"))
        if info.role != "recognizer":
            raise ModelLoadError(f"{info.path} does not look like an ArcFace recognizer ((N,3,112,112) -> (N,512))")
        return info
    found = [i for i in (inspect_onnx(p) for p in sorted(base.glob("*.onnx"))) if i.role == "recognizer"]
    if not found:
        raise ModelLoadError(f"no ArcFace recognizer (.onnx (N,3,112,112) -> (N,512)) in {base}. {PACK_HELP}")
    if len(found) > 1:
        names = [i.path.name for i in found]
        raise ModelLoadError(f"several recognizers in {base}: {names}; name one with recognizer=")
    return found[0]


def zoo_model(path: Path, expected: str, providers: list[str] | None = None, **options: Any) -> Any:
    """insightface's model zoo object (`SCRFD`, `ArcFaceONNX`) for one .onnx file, with its onnxruntime session."""
    try:
        from insightface.model_zoo import get_model
    except ImportError as exc:
        raise ModelLoadError(f"insightface cannot be imported (`pip install insightface`): {exc}") from exc
    try:
        model = get_model(str(path), providers=providers, **options)
    except Exception as exc:  # noqa: BLE001 - onnx and onnxruntime raise their own exception types
        raise ModelLoadError(f"insightface cannot load {path}: {exc}. {PACK_HELP}") from exc
    if type(model).__name__ != expected:
        raise ModelLoadError(f"insightface's model zoo reads {path} as {type(model).__name__}, not as {expected}")
    return model


class SCRFDDetector:
    """insightface's SCRFD on RGB images; `detect(rgb)` -> (boxes Nx5 [x1,y1,x2,y2,score], kps Nx5x2)."""

    def __init__(
        self,
        info: OnnxModelInfo,
        det_size: int = 640,
        det_thresh: float = 0.5,
        providers: list[str] | None = None,
        nms_thresh: float = NMS_IOU,
    ) -> None:
        self.info = info
        # static_shape_sessions=False: one session per model. insightface's default builds a second session of
        # the same graph per input size with the shapes fixed: twice the load time and memory, same outputs.
        self.model = zoo_model(info.path, "SCRFD", providers, static_shape_sessions=False)
        # One scale: without input_size insightface 2.x runs every image at 128x128 and 640x640 and merges them.
        self.model.prepare(
            0, input_size=(int(det_size), int(det_size)), det_thresh=float(det_thresh), nms_thresh=float(nms_thresh)
        )

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) the network sees: det_size, or the size a fixed-shape model was exported with."""
        return tuple(self.model.input_size)

    def detect(self, img_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dets, kps = self.model.detect(np.ascontiguousarray(img_rgb[:, :, ::-1]))  # insightface takes BGR
        return dets, kps

    def detect_and_align(self, img_rgb: np.ndarray, size: int = 112) -> FaceAnalysis:
        """The largest detected face, aligned by insightface's norm_crop; embedding left None."""
        from insightface.utils import face_align

        dets, kps = self.detect(img_rgb)
        if dets.shape[0] == 0:
            return no_face()
        # insightface's detect(max_num=1, metric="max") would pick the same face but drop the face count.
        areas = (dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1])
        best = int(np.argmax(areas))
        h, w = img_rgb.shape[:2]
        x1, y1, x2, y2 = dets[best, :4]
        bbox = (
            int(np.clip(round(float(x1)), 0, w)),
            int(np.clip(round(float(y1)), 0, h)),
            int(np.clip(round(float(x2)), 0, w)),
            int(np.clip(round(float(y2)), 0, h)),
        )
        landmarks = kps[best].astype(np.float64)
        return FaceAnalysis(
            detected=True,
            face_count=int(dets.shape[0]),
            bbox=bbox,
            landmarks=[[float(x), float(y)] for x, y in landmarks],
            embedding=None,
            aligned=face_align.norm_crop(np.ascontiguousarray(img_rgb), landmarks, image_size=size),
            detection_score=float(dets[best, 4]),
        )


class InsightFaceAnalyzer:
    """SCRFD detection + 5-point ArcFace alignment + an ArcFace ONNX recognizer (512-d, cosine-compared)."""

    dim = 512
    # What it needs (see core/config/requirements.py): onnxruntime takes CUDA when it is there, else the CPU.
    requirements = BackendRequirements(device="any")

    @classmethod
    def required_models(cls, options: Mapping[str, Any]) -> list[ModelNeed]:
        """The model pack: a local directory (InsightFace packs are not on the hub in a standard layout)."""
        return [local_model(options["model_dir"], "model_dir")] if options.get("model_dir") else []

    def __init__(
        self,
        model_dir: str,
        detector: str | None = None,
        recognizer: str | None = None,
        det_size: int = 640,
        det_thresh: float = 0.5,
        providers: list[str] | None = None,
        batch_size: int = 64,
    ) -> None:
        self.model_dir = str(model_dir)
        self.detector_name = detector
        self.recognizer_name = recognizer
        self.det_size = int(det_size)
        self.det_thresh = float(det_thresh)
        self.providers = list(providers) if providers else None
        self.batch_size = max(1, int(batch_size))
        self.pack = Path(self.model_dir).expanduser().name
        self._model_id: str | None = None
        self._detector: SCRFDDetector | None = None
        self._recognizer = None  # insightface.model_zoo.ArcFaceONNX
        self._rec_info: OnnxModelInfo | None = None
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        if self._model_id is None:
            if self.recognizer_name is not None:
                stem = Path(self.recognizer_name).name.removesuffix(".onnx")
            else:
                self._rec_info = find_recognizer(self.model_dir)
                stem = self._rec_info.path.stem
            self._model_id = f"insightface:{self.pack}/{stem}"
        return self._model_id

    def load(self) -> None:
        """Open both models once through insightface's model zoo; later calls are no-ops. ModelLoadError names what
        is missing."""
        if self._recognizer is not None:
            return
        with self._lock:
            if self._recognizer is not None:
                return
            det_info = find_detector(self.model_dir, self.detector_name)
            rec_info = self._rec_info or find_recognizer(self.model_dir, self.recognizer_name)
            self._detector = SCRFDDetector(det_info, self.det_size, self.det_thresh, self.providers)
            recognizer = zoo_model(rec_info.path, "ArcFaceONNX", self.providers)
            self._model_id = f"insightface:{self.pack}/{rec_info.path.stem}"
            self._rec_info = rec_info
            self._recognizer = recognizer

    def detect(self, image: np.ndarray) -> FaceAnalysis:
        """Detection + alignment only (embedding None)."""
        self.load()
        return self._detector.detect_and_align(as_rgb_uint8(image))

    def embed_aligned(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalized float32 embeddings (N, 512) of aligned 112x112 RGB uint8 crops, in batches."""
        self.load()
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        recognizer = self._recognizer
        width, height = recognizer.input_size
        batch_dim = recognizer.input_shape[0]
        fixed = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        step = fixed or self.batch_size
        out = []
        for start in range(0, len(crops), step):
            chunk = []
            for offset, crop in enumerate(crops[start : start + step]):
                crop = np.asarray(crop, dtype=np.float32)
                if crop.shape != (height, width, 3):
                    raise ValueError(f"aligned crop {start + offset} is {crop.shape}, not ({height}, {width}, 3)")
                chunk.append(np.ascontiguousarray(crop[:, :, ::-1]))  # get_feat takes BGR and swaps it to RGB
            n = len(chunk)
            if fixed and n < fixed:  # a graph exported with a fixed batch size gets padded, the padding dropped
                chunk += [np.zeros_like(chunk[0])] * (fixed - n)
            feats = recognizer.get_feat(chunk)
            out.append(np.asarray(feats, dtype=np.float32).reshape(len(chunk), -1)[:n])
        return unit_rows(np.concatenate(out))

    def analyze(self, image: np.ndarray) -> FaceAnalysis:
        """Analyse one RGB uint8 image; no face gives detected=False and embedding=None."""
        return self.analyze_many([image])[0]

    def analyze_many(self, images: Sequence[np.ndarray]) -> list[FaceAnalysis]:
        """Detect + align each image, then embed all aligned crops in batches of batch_size."""
        self.load()
        results = [self._detector.detect_and_align(as_rgb_uint8(img)) for img in images]
        return embed_detected(results, self.embed_aligned)
