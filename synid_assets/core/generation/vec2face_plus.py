"""The Vec2Face+ generator: Vec2Face with LoRA pose control and AttrOP, 112x112 aligned faces from an ArcFace vector.

Vec2Face+ (Wu et al., arXiv 2507.17192; github.com/HaiyuWu/Vec2Face_plus, huggingface.co/BooBooWu/Vec2Face_plus):
- documents (identity_source: embeddings) render the identity vector itself with `vec2face_plus/main_model.pth`
  (Vec2Face's fMAE in its released layout, Vec2Face's inference mask) and a frontal yaw target (0);
- live images vary the vector as Vec2Face does (sigma 0.3 / 0.5 / 0.7 on 40 / 40 / 20 %, renormalised) and render
  it with `vec2face_plus/pose_model.pth`: the LoRA generator (r = 8, alpha = 32 on the ViT attention) with the pose
  token of a landmark image drawn for the image's target yaw (`vec2face_plus_model.py`), mask ratio from
  normal(0.85, 0.05) truncated to [0.8, 0.9] as `pose_control.py` generates;
- AttrOP (`attrop.py`) then optimises each image's vector against ArcFace R100 (identity, gated at 1 - cos > 0.3 to
  the identity's vector), MagFace R100 (feature norm, target 24) and 6DRepNet (yaw), at most 30 renders; an image
  that still fails is kept with `generation_status: "attrop_failed"` in its params, never retried further.

Target yaws: live image k takes `yaws[k % len(yaws)]`, unless the identity's sampled attributes hold the class
`yaw_attribute` (default `head_yaw`; values in degrees, several separated by `|`, cycled the same way). The
estimators (ArcFace, MagFace, 6DRepNet) are the files of BooBooWu/Vec2Face that Vec2Face+'s download script fetches.
Every random draw comes from the request's seed (numpy PCG64); params record the optimised vector, so an image
regenerates with one forward pass. torch is imported only when the models are loaded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synid_assets.core.config.models import license_of
from synid_assets.core.config.requirements import BackendRequirements, ModelNeed, local_model
from synid_assets.core.generation.torch_runtime import looks_like_path, resolve_device, snapshot_commit
from synid_assets.core.generation.types import DocumentRequest, GeneratedImage, LiveRequest
from synid_assets.core.generation.vec2face import (
    SIGMA_SHARES,
    SIGMAS,
    VECTOR_DIM,
    VECTOR_SPACE,
    Vec2FaceLiveGenerator,
    checkpoint_file_path,
    mask_ratio,
    perturb,
    row_masks,
)

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

MODEL_REPO = "BooBooWu/Vec2Face_plus"
ESTIMATOR_REPO = "BooBooWu/Vec2Face"
MAIN_FILE = "vec2face_plus/main_model.pth"
POSE_FILE = "vec2face_plus/pose_model.pth"
ARCFACE_FILE = "weights/arcface-r100-glint360k.pth"
MAGFACE_FILE = "weights/magface-r100-glint360k.pth"
HEAD_POSE_FILE = "weights/6DRepNet_300W_LP_AFLW2000.pth"
POSE_MASK = {"mu": 0.85, "sd": 0.05, "low": 0.8, "high": 0.9}  # pose_control.py's defaults
DEFAULT_YAWS = (0.0, 30.0, -30.0, 60.0, -60.0)
LICENSE = (
    "Vec2Face+ weights: no licence stated in github.com/HaiyuWu/Vec2Face_plus (see the model card of "
    "huggingface.co/BooBooWu/Vec2Face_plus); trained on a WebFace4M subset (research-only terms); estimators from "
    "BooBooWu/Vec2Face (MIT model card)"
)
_MODEL_FIELDS = ("model_id", "main_checkpoint", "pose_checkpoint", "dtype", "vector_norm", "lora_alpha")


def draw_plus(vector: np.ndarray, seed: int, vary: bool, pose: bool) -> dict[str, Any]:
    """Sigma (live images), the input vector, the mask ratio and rows: Vec2Face's draws, with pose_control's mask
    distribution for pose-conditioned renders."""
    import numpy as np

    rng = np.random.default_rng(int(seed))
    sigma = None
    if vary:
        sigma = SIGMAS[int(rng.choice(len(SIGMAS), p=SIGMA_SHARES))]
        vector = perturb(vector, sigma, rng)
    if pose:
        ratio = mask_ratio(rng, **POSE_MASK)
        dropped, masked = row_masks(ratio, rng, minimum=POSE_MASK["low"])
    else:
        ratio = mask_ratio(rng)
        dropped, masked = row_masks(ratio, rng)
    return {"sigma": sigma, "vector": vector, "mask_ratio": ratio, "dropped": dropped, "masked": masked}


def target_yaw(request: LiveRequest | DocumentRequest, yaws: Sequence[float], yaw_attribute: str) -> tuple[float, str]:
    """(yaw in degrees, where it came from) of one request: documents 0; live images cycle the identity's attribute
    values, else the configured list, by live index."""
    if not isinstance(request, LiveRequest):
        return 0.0, "document"
    value = request.identity.attributes.get(yaw_attribute) if yaw_attribute else None
    choices, source = list(yaws), "yaws"
    if value is not None:
        try:
            choices, source = [float(v) for v in str(value).split("|")], f"attribute:{yaw_attribute}"
        except ValueError:
            raise ValueError(
                f"identity {request.identity.identity_id}: attribute {yaw_attribute}={value!r} is not a yaw in "
                "degrees (a number, or numbers separated by '|')"
            ) from None
    return choices[int(request.live_index) % len(choices)], source


class Vec2FacePlusLiveGenerator(Vec2FaceLiveGenerator):
    """Live images with Vec2Face+: varied vectors rendered with the landmark pose token, refined by AttrOP."""

    name = "vec2face_plus"
    version = "1"
    varies = True
    vector_space = VECTOR_SPACE
    requirements = BackendRequirements(device="any")
    model_fields = _MODEL_FIELDS  # what regenerate() must match

    @classmethod
    def required_models(cls, options: Mapping[str, Any]) -> list[ModelNeed]:
        """The generator files of BooBooWu/Vec2Face_plus and, with AttrOP, the estimators of BooBooWu/Vec2Face."""
        parts = [("model_id", "revision", ("main_checkpoint", "pose_checkpoint"), "")]
        if options["attrop"]:
            parts.append(("estimators_id", "estimators_revision", ("arcface_file", "magface_file", "head_pose_file"),
                          "estimators"))
        needs = []
        for source_key, revision_key, file_keys, part in parts:
            source = options[source_key]
            if looks_like_path(source) or Path(source).expanduser().exists():
                needs.append(local_model(source, part))
            else:
                files = tuple(options[key] for key in file_keys)
                needs.append(ModelNeed(source, options[revision_key], files, license_of(source), part=part))
        return needs

    def __init__(
        self,
        model_id: str = MODEL_REPO,
        revision: str | None = None,
        main_checkpoint: str = MAIN_FILE,
        pose_checkpoint: str = POSE_FILE,
        estimators_id: str = ESTIMATOR_REPO,
        estimators_revision: str | None = None,
        arcface_file: str = ARCFACE_FILE,
        magface_file: str = MAGFACE_FILE,
        head_pose_file: str = HEAD_POSE_FILE,
        yaws: Sequence[float] = DEFAULT_YAWS,
        yaw_attribute: str = "head_yaw",
        attrop: bool = True,
        attrop_max_tries: int = 30,
        attrop_learning_rate: float = 0.1,
        identity_margin: float = 0.3,
        quality_target: float = 24.0,
        quality_tolerance: float = 1.0,
        yaw_tolerance: float = 5.0,
        lora_alpha: float = 32.0,
        vector_norm: float = math.sqrt(VECTOR_DIM),
        num_heads: int = 12,
        decoder_num_heads: int = 16,
        fr_units: Sequence[int] | None = None,
        fr_channels: Sequence[int] | None = None,
        dtype: str = "float32",
        device: str = "auto",
        batch_size: int = 64,
        cache_dir: str | None = None,
        local_files_only: bool = False,
    ) -> None:
        super().__init__(model_id, revision, pose_checkpoint, vector_norm, num_heads, decoder_num_heads, dtype, device,
                         batch_size, cache_dir, local_files_only)
        from synid_assets.core.generation.attrop import AttrOPSettings

        if not yaws or not all(math.isfinite(float(y)) and abs(float(y)) <= 90 for y in yaws):
            raise ValueError(f"yaws must be a non-empty list of degrees in [-90, 90], not {yaws!r}")
        self.main_checkpoint, self.pose_checkpoint = main_checkpoint, pose_checkpoint
        self.estimators_id, self.estimators_revision = estimators_id, estimators_revision
        self.arcface_file, self.magface_file, self.head_pose_file = arcface_file, magface_file, head_pose_file
        self.yaws = [float(y) for y in yaws]
        self.yaw_attribute = yaw_attribute
        self.attrop = bool(attrop)
        self.attrop_settings = AttrOPSettings(
            float(attrop_learning_rate), float(identity_margin), float(quality_target), float(quality_tolerance),
            float(yaw_tolerance), int(attrop_max_tries))
        self.lora_alpha = float(lora_alpha)
        self.fr_units = tuple(fr_units) if fr_units is not None else None  # reduced test models only
        self.fr_channels = tuple(fr_channels) if fr_channels is not None else None
        self._models: dict[str, Any] = {}

    @property
    def settings(self) -> dict[str, Any]:
        """Every setting that changes an image (the reuse key of finished images; execution options left out)."""
        return {"model_id": self.model_id, "revision": self.revision, "main_checkpoint": self.main_checkpoint,
                "pose_checkpoint": self.pose_checkpoint, "estimators_id": self.estimators_id,
                "estimators_revision": self.estimators_revision, "yaws": self.yaws, "yaw_attribute": self.yaw_attribute,
                "attrop": asdict(self.attrop_settings) if self.attrop else None, "lora_alpha": self.lora_alpha,
                "vector_norm": self.vector_norm, "dtype": self.dtype}

    # ------------------------------------------------------------------ loading

    def _file(self, source: str, file: str, revision: str | None) -> Path:
        return checkpoint_file_path(source, file, revision, self.cache_dir, self.local_files_only, "Vec2Face+")

    def load(self) -> None:
        """Load the two generators and (with AttrOP) the three estimators once."""
        if self._model is not None:
            return
        import torch

        from synid_assets.core.generation.vec2face import load_vec2face_checkpoint
        from synid_assets.core.generation.vec2face_plus_model import load_pose_checkpoint

        device = resolve_device(self.device)
        main_path = self._file(self.model_id, self.main_checkpoint, self.revision)
        main = load_vec2face_checkpoint(main_path, self.num_heads, self.decoder_num_heads, device, self.dtype)
        pose_path = self._file(self.model_id, self.pose_checkpoint, self.revision)
        generator, pose_model = load_pose_checkpoint(pose_path, self.num_heads, self.decoder_num_heads,
                                                     self.lora_alpha, device, self.dtype)
        models: dict[str, Any] = {"main": main.requires_grad_(False), "pose": generator, "pose_cond": pose_model}
        if self.attrop:
            models.update(self._load_estimators(device))
        self._models, self._model, self._device = models, main, device
        self._resolved_revision = snapshot_commit(main_path.parents[len(Path(self.main_checkpoint).parts) - 1])
        self._torch_version = torch.__version__

    def _load_estimators(self, device: str) -> dict[str, Any]:
        from synid_assets.core.analysis.frs import FRSCheckpointError, load_frs_checkpoint
        from synid_assets.core.analysis.head_pose import load_head_pose_checkpoint, yaw_degrees

        loaded = {}
        for key, file in (("identity", self.arcface_file), ("quality", self.magface_file)):
            path = self._file(self.estimators_id, file, self.estimators_revision)
            try:  # MagFace R100 is in the same insightface iresnet100 layout (Vec2Face loads both with iresnet("100"))
                model = load_frs_checkpoint("arcface-r100-glint360k", path, units=self.fr_units,
                                            channels=self.fr_channels)
            except FRSCheckpointError as error:
                raise FRSCheckpointError(f"Vec2Face+ {key} estimator {file}: {error}") from error
            loaded[key] = model.to(device).requires_grad_(False)
        head_pose = load_head_pose_checkpoint(self._file(self.estimators_id, self.head_pose_file,
                                                         self.estimators_revision), device)
        loaded["yaw"] = lambda images: yaw_degrees(head_pose, images)
        loaded["head_pose"] = head_pose
        return loaded

    def unload(self) -> None:
        super().unload()
        self._models = {}

    # ------------------------------------------------------------------ generation

    def _render(self, draws: list[dict], vectors: Any, indices: Sequence[int]) -> Any:
        """Images in [-1, 1] of draws[indices] from vectors [k, 512] (the main model, or the pose model with their
        landmark tokens)."""
        import numpy as np
        import torch

        from synid_assets.core.generation.vec2face_plus_model import landmark_tensor, render_pose

        dtype = getattr(torch, self.dtype)
        rows = [draws[i] for i in indices]
        dropped = torch.from_numpy(np.stack([d["dropped"] for d in rows])).to(self._device)
        masked = torch.from_numpy(np.stack([d["masked"] for d in rows])).to(self._device)
        vectors = vectors.to(self._device, dtype)
        if not self.varies:
            return self._models["main"](vectors, dropped, masked)
        landmarks = landmark_tensor([d["yaw"] for d in rows]).to(self._device)
        return render_pose(self._models["pose"], self._models["pose_cond"], vectors, dropped, masked, landmarks)

    def render_requests(
        self, vectors: Sequence[Sequence[float]], seeds: Sequence[int], yaws: Sequence[float],
        fixed: Sequence[Sequence[float] | None] | None = None,
    ) -> tuple[list[Image.Image], list[dict]]:
        """One image per (vector, seed, yaw); `fixed` gives vectors AttrOP already found (regeneration)."""
        import numpy as np
        import torch
        from PIL import Image

        from synid_assets.core.generation.attrop import run_attrop

        self.load()
        draws = []
        for vector, seed, yaw in zip(vectors, seeds, yaws, strict=True):
            unit = np.asarray(vector, dtype=np.float64)
            scaled = unit / np.linalg.norm(unit) * self.vector_norm
            draw = draw_plus(scaled, seed, self.varies, pose=self.varies)
            draws.append(draw | {"class_vector": scaled, "yaw": float(yaw)})
        images, records = [], []
        for start in range(0, len(draws), self.batch_size):
            chunk = list(range(start, min(start + self.batch_size, len(draws))))
            start_vectors = [draws[i]["vector"] if fixed is None or fixed[i] is None
                             else np.asarray(fixed[i], np.float64) for i in chunk]
            batch = torch.from_numpy(np.stack(start_vectors)).float().to(self._device)
            if self.attrop and fixed is None:
                classes = torch.from_numpy(np.stack([draws[i]["class_vector"] for i in chunk])).float()
                result = run_attrop(lambda v, rows, c=chunk: self._render(draws, v, [c[r] for r in rows]), batch,
                                    classes.to(self._device), [draws[i]["yaw"] for i in chunk], self._models,
                                    self.attrop_settings)
                out = result.images
                for k in range(len(chunk)):
                    records.append({"status": result.statuses[k], "tries": result.tries[k],
                                    "max_tries": self.attrop_settings.max_tries, **result.last[k],
                                    "vector": [float(x) for x in result.vectors[k].cpu().numpy()]})
            else:
                with torch.inference_mode():
                    out = self._render(draws, batch, chunk).float().clamp(-1.0, 1.0)
                records.extend({} for _ in chunk)
            pixels = ((out.detach().float().permute(0, 2, 3, 1).cpu().numpy() + 1.0) / 2.0 * 255.0)
            images.extend(Image.fromarray(p, "RGB") for p in pixels.clip(0, 255).astype(np.uint8))
        drawn = [{"sigma": d["sigma"], "mask_ratio": d["mask_ratio"], "attrop": r}
                 for d, r in zip(draws, records, strict=True)]
        return images, drawn

    def generate(self, requests: Sequence[LiveRequest | DocumentRequest]) -> list[GeneratedImage]:
        """One 112x112 image per request, in request order."""
        if not requests:
            return []
        vectors = [self._vector_of(request) for request in requests]  # fail before loading anything
        yaws = [target_yaw(request, self.yaws, self.yaw_attribute) for request in requests]
        images, drawn = self.render_requests([v for v, _ in vectors], [r.seed for r in requests],
                                             [y for y, _ in yaws])
        out = []
        for request, (vector, source), (yaw, yaw_source), image, draw in zip(
            requests, vectors, yaws, images, drawn, strict=True
        ):
            params = self._params(request.seed, vector, source, draw, request.identity.identity_id)
            params["identity_seed"] = int(request.identity.seed)
            params |= {"target_yaw": yaw, "yaw_source": yaw_source, "pose_control": self.varies,
                       "attrop": draw["attrop"] or None}
            failed = bool(draw["attrop"]) and draw["attrop"]["status"] == "failed"
            params["generation_status"] = "attrop_failed" if failed else "ok"
            if isinstance(request, LiveRequest):
                params["live_index"] = int(request.live_index)
            out.append(GeneratedImage(image=image, params=params))
        return out

    def _params(self, seed: int, vector: list[float], source: str, drawn: dict, identity_id: str) -> dict[str, Any]:
        params = super()._params(seed, vector, source, drawn, identity_id)
        del params["checkpoint_file"]
        params |= {"license": LICENSE, "main_checkpoint": self.main_checkpoint,
                   "pose_checkpoint": self.pose_checkpoint, "lora_alpha": self.lora_alpha,
                   "estimators_id": self.estimators_id if self.attrop else None,
                   "attrop_settings": asdict(self.attrop_settings) if self.attrop else None}
        return params

    def regenerate(self, params: Mapping[str, Any]) -> Image.Image:
        """Re-make one image from its recorded params: the vector AttrOP found (no search again), its seed's mask
        and the recorded yaw; the model fields must match."""
        vector = self.recorded_vector(params)
        found = (params.get("attrop") or {}).get("vector")
        return self.render_requests([vector], [int(params["seed"])], [float(params.get("target_yaw", 0.0))],
                                    fixed=[found])[0][0]

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **overrides: Any) -> Vec2FacePlusLiveGenerator:
        """A generator configured like the one that made params (execution options from overrides)."""
        kwargs: dict[str, Any] = {
            "model_id": params["model_id"],
            "revision": params.get("revision") or params.get("requested_revision"),
            "main_checkpoint": params.get("main_checkpoint", MAIN_FILE),
            "pose_checkpoint": params.get("pose_checkpoint", POSE_FILE),
            "vector_norm": params.get("vector_norm", math.sqrt(VECTOR_DIM)),
            "lora_alpha": params.get("lora_alpha", 32.0),
            "dtype": params.get("dtype", "float32"),
            "attrop": False,  # regeneration renders the recorded vector: no estimators needed
        }
        kwargs.update(overrides)
        return cls(**kwargs)


class Vec2FacePlusDocumentGenerator(Vec2FacePlusLiveGenerator):
    """Documents with Vec2Face+ (identity_source: embeddings): the identity's vector, main model, frontal AttrOP."""

    varies = False
    vector_dim = VECTOR_DIM
