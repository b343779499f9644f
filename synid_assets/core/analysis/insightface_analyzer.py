"""InsightFace model packs on onnxruntime: SCRFD detection + 5 keypoints, ArcFace-template alignment, ArcFace ONNX.

Mirrors `DlibFaceAnalyzer` (model_id, dim, load(), analyze(), analyze_many()). onnxruntime and onnx are imported
in `load()`, so importing this module is cheap. The SCRFD pre/post-processing follows insightface's
`python-package/insightface/model_zoo/scrfd.py` and the recognizer's input convention its `arcface_onnx.py`:

- detector input: the image letterboxed (aspect kept, padded right/bottom with black) into det_size x det_size,
  RGB (insightface feeds its BGR frames through `blobFromImage(..., swapRB=True)`, i.e. the network sees RGB),
  (x - 127.5) / 128, NCHW float32.
- detector outputs, in this order: scores for strides 8, 16, 32, then bbox distances for 8, 16, 32, then (in the
  `bnkps` models) keypoint offsets for 8, 16, 32; each (H/s * W/s * 2, C) or with a leading batch axis of 1.
  Anchor centres are (x*s, y*s) repeated for the 2 anchors per location; distances are multiplied by the stride;
  box = (cx - l, cy - t, cx + r, cy + b), keypoint k = (cx + dx_k, cy + dy_k). Score threshold, then NMS at
  IoU 0.4 (insightface's +1 pixel area convention). 5-stride / 1-anchor variants (10 or 15 outputs) also decode.
- resizing uses Pillow's bilinear filter (insightface uses cv2.resize INTER_LINEAR; on downscaling Pillow also
  antialiases, so boxes can differ from insightface's by a fraction of a pixel).
- recognizer input: the aligned 112x112 RGB crop, (x - 127.5) / 127.5, NCHW; models converted from mxnet that
  normalize inside the graph (a Sub and a Mul among the first 8 nodes) get raw 0..255 pixels, as insightface does.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synid_assets.core.analysis.alignment import align_face
from synid_assets.core.analysis.types import FaceAnalysis, Threshold, as_rgb_uint8, no_face
from synid_assets.core.config.requirements import BackendRequirements, ModelNeed, local_model
from synid_assets.core.errors import ModelLoadError

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

NMS_IOU = 0.4
DET_MEAN, DET_STD = 127.5, 128.0
REC_MEAN, REC_STD = 127.5, 127.5


@dataclass
class OnnxModelInfo:
    path: Path
    inputs: list[tuple[str, list[int | str | None]]]
    outputs: list[tuple[str, list[int | str | None]]]
    normalizes_inside: bool  # mxnet-converted recognizer with Sub + Mul at the graph start

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
    """Read an ONNX model's graph inputs (weights excluded), outputs and whether it normalizes its own input."""
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
    find_sub = find_mul = False
    for node in graph.node[:8]:
        if node.name.startswith("Sub") or node.name.startswith("_minus"):
            find_sub = True
        if node.name.startswith("Mul") or node.name.startswith("_mul"):
            find_mul = True
    return OnnxModelInfo(path=path, inputs=inputs, outputs=outputs, normalizes_inside=find_sub and find_mul)


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


def default_providers() -> list[str]:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _session(path: Path, providers: list[str] | None):
    import onnxruntime

    try:
        return onnxruntime.InferenceSession(str(path), providers=providers or default_providers())
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ModelLoadError(f"onnxruntime cannot load {path}: {exc}. {PACK_HELP}") from exc


def _letterbox(img: np.ndarray, width: int, height: int) -> tuple[np.ndarray, float]:
    from PIL import Image

    im_ratio = img.shape[0] / img.shape[1]
    if im_ratio > height / width:
        new_h = height
        new_w = max(1, int(new_h / im_ratio))
    else:
        new_w = width
        new_h = max(1, int(new_w * im_ratio))
    scale = new_h / img.shape[0]
    resized = np.asarray(Image.fromarray(img).resize((new_w, new_h), Image.Resampling.BILINEAR))
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = resized
    return canvas, scale


def nms(dets: np.ndarray, iou: float = NMS_IOU) -> list[int]:
    """Greedy NMS over rows (x1, y1, x2, y2, score); indices kept, best first (insightface's +1 area convention)."""
    x1, y1, x2, y2, scores = (dets[:, i] for i in range(5))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[rest] - inter)
        order = rest[ovr <= iou]
    return keep


class SCRFDDetector:
    """An SCRFD ONNX detector with 5 keypoints; `detect(rgb)` -> (boxes Nx5 [x1,y1,x2,y2,score], kps Nx5x2)."""

    def __init__(
        self,
        info: OnnxModelInfo,
        det_size: int = 640,
        det_thresh: float = 0.5,
        providers: list[str] | None = None,
        nms_thresh: float = NMS_IOU,
    ) -> None:
        self.info = info
        self.session = _session(info.path, providers)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        in_shape = info.inputs[0][1]
        if isinstance(in_shape[2], int) and isinstance(in_shape[3], int):
            self.input_size = (int(in_shape[3]), int(in_shape[2]))  # (width, height) fixed by the model
        else:
            self.input_size = (int(det_size), int(det_size))
        n_out = len(self.output_names)
        self.fmc = 3 if n_out in (6, 9) else 5
        self.strides = [8, 16, 32] if self.fmc == 3 else [8, 16, 32, 64, 128]
        self.num_anchors = 2 if self.fmc == 3 else 1
        self.use_kps = n_out in (9, 15)
        self.det_thresh = float(det_thresh)
        self.nms_thresh = float(nms_thresh)
        self._centers: dict[tuple[int, int, int], np.ndarray] = {}

    def _anchor_centers(self, height: int, width: int, stride: int) -> np.ndarray:
        key = (height, width, stride)
        if key not in self._centers:
            centers = np.stack(np.mgrid[:height, :width][::-1], axis=-1).astype(np.float32)
            centers = (centers * stride).reshape(-1, 2)
            if self.num_anchors > 1:
                centers = np.repeat(centers, self.num_anchors, axis=0)
            self._centers[key] = centers
        return self._centers[key]

    def detect(self, img_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        width, height = self.input_size
        canvas, scale = _letterbox(img_rgb, width, height)
        blob = ((canvas.astype(np.float32) - DET_MEAN) / DET_STD).transpose(2, 0, 1)[None]
        outs = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(blob)})
        boxes_all, scores_all, kps_all = [], [], []
        for idx, stride in enumerate(self.strides):
            scores = np.asarray(outs[idx]).reshape(-1)
            bbox = np.asarray(outs[idx + self.fmc]).reshape(-1, 4) * stride
            centers = self._anchor_centers(height // stride, width // stride, stride)
            if scores.shape[0] != centers.shape[0]:
                raise ValueError(
                    f"{self.info.path.name}: stride {stride} gives {scores.shape[0]} scores for "
                    f"{centers.shape[0]} anchors at input {width}x{height}"
                )
            pos = np.where(scores >= self.det_thresh)[0]
            if pos.size == 0:
                continue
            c = centers[pos]
            d = bbox[pos]
            boxes_all.append(np.stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1], c[:, 0] + d[:, 2], c[:, 1] + d[:, 3]], 1))
            scores_all.append(scores[pos])
            if self.use_kps:
                k = np.asarray(outs[idx + 2 * self.fmc]).reshape(-1, 10)[pos] * stride
                kps = k.reshape(-1, 5, 2) + c[:, None, :]
                kps_all.append(kps)
        if not scores_all:
            return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        dets = np.hstack([np.vstack(boxes_all) / scale, np.concatenate(scores_all)[:, None]]).astype(np.float32)
        kps = (np.vstack(kps_all) / scale).astype(np.float32)
        order = dets[:, 4].argsort()[::-1]
        dets, kps = dets[order], kps[order]
        keep = nms(dets, self.nms_thresh)
        return dets[keep], kps[keep]

    def detect_and_align(self, img_rgb: np.ndarray, size: int = 112) -> FaceAnalysis:
        """The largest detected face, aligned to the ArcFace template; embedding left None."""
        dets, kps = self.detect(img_rgb)
        if dets.shape[0] == 0:
            return no_face()
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
            aligned=align_face(img_rgb, landmarks, size),
            detection_score=float(dets[best, 4]),
        )


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    vecs = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.where(norms > 0, norms, 1.0)


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
        self._rec_session = None
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
        """Open both ONNX sessions once; later calls are no-ops. ModelLoadError names what is missing."""
        if self._rec_session is not None:
            return
        with self._lock:
            if self._rec_session is not None:
                return
            try:
                import onnxruntime  # noqa: F401
            except ImportError as exc:
                raise ModelLoadError(f"onnxruntime is not installed (`pip install onnxruntime`): {exc}") from exc
            det_info = find_detector(self.model_dir, self.detector_name)
            rec_info = self._rec_info or find_recognizer(self.model_dir, self.recognizer_name)
            self._detector = SCRFDDetector(det_info, self.det_size, self.det_thresh, self.providers)
            session = _session(rec_info.path, self.providers)
            self._model_id = f"insightface:{self.pack}/{rec_info.path.stem}"
            self._rec_info = rec_info
            self._rec_session = session

    def detect(self, image: np.ndarray) -> FaceAnalysis:
        """Detection + alignment only (embedding None)."""
        self.load()
        return self._detector.detect_and_align(as_rgb_uint8(image))

    def embed_aligned(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalized float32 embeddings (N, 512) of aligned 112x112 RGB uint8 crops, in batches."""
        self.load()
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        session = self._rec_session
        inp = session.get_inputs()[0]
        fixed = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
        step = fixed or self.batch_size
        if self._rec_info.normalizes_inside:
            mean, std = 0.0, 1.0
        else:
            mean, std = REC_MEAN, REC_STD
        out = []
        for start in range(0, len(crops), step):
            chunk = np.stack([np.asarray(c, dtype=np.float32) for c in crops[start : start + step]])
            n = chunk.shape[0]
            if fixed and n < fixed:
                chunk = np.concatenate([chunk, np.zeros((fixed - n, *chunk.shape[1:]), np.float32)])
            blob = ((chunk - mean) / std).transpose(0, 3, 1, 2)
            feats = session.run(None, {inp.name: np.ascontiguousarray(blob, dtype=np.float32)})[0]
            out.append(np.asarray(feats, dtype=np.float32).reshape(chunk.shape[0], -1)[:n])
        return l2_normalize(np.concatenate(out))

    def analyze(self, image: np.ndarray) -> FaceAnalysis:
        """Analyse one RGB uint8 image; no face gives detected=False and embedding=None."""
        return self.analyze_many([image])[0]

    def analyze_many(self, images: Sequence[np.ndarray]) -> list[FaceAnalysis]:
        """Detect + align each image, then embed all aligned crops in batches of batch_size."""
        self.load()
        results = [self._detector.detect_and_align(as_rgb_uint8(img)) for img in images]
        owners = [i for i, r in enumerate(results) if r.detected]
        if owners:
            embeddings = self.embed_aligned([results[i].aligned for i in owners])
            for i, emb in zip(owners, embeddings, strict=True):
                results[i].embedding = emb
        return results
