"""The Vec2Face generator: 112x112 aligned faces rendered from an identity vector in ArcFace (R100, Glint360K) space.

Vec2Face (Wu et al., ICLR 2025; github.com/HaiyuWu/Vec2Face, huggingface.co/BooBooWu/Vec2Face) is an fMAE: a
ViT-B/16 encoder and decoder over a 7x7 grid of rows expanded from the vector, and a convolutional image decoder
(network in `vec2face_model.py`). Matched against HaiyuWu/Vec2Face @ 9d9fa8c50bab4562560ff78f4cbb8a738701d616:
the released checkpoint `weights/vec2face_generator.pth` holds the generator under `model_vec2face`, in the key
layout of `vec2face_vit_base_patch16` (loaded here with strict key and shape checking).

Variation, as published in `image_generation.py`:
- each live image perturbs the identity vector with Gaussian noise of sigma 0.3, 0.5 or 0.7 (for 40%, 40% and 20% of
  images; upstream deals the shares out per batch, here each image draws its sigma with those probabilities from its
  own seed, so an image never depends on its batch), and the result is rescaled to the vector's own norm;
- the random row mask stays on at inference: a ratio from a normal of mean 0.15 and sd 0.25 truncated to
  [0.1, 1.0] (upstream draws one per batch; here one per image), ceil(49 x ratio) rows replaced by the projected
  vector, of which the ceil(49 x 0.1) = 5 with the smallest noise are also dropped from the encoder.
Documents (identity_source: embeddings) render the identity vector itself: no sigma noise, the same row mask.

Every draw comes from numpy's PCG64 seeded with the request's seed, so images regenerate from their params on any
device (up to floating-point rounding of the network). Identity vectors arrive as unit vectors; Vec2Face was trained
on raw ArcFace features, and the identity vectors of Vec2Face #18 are un-normalised standard normal draws whose norm
is about sqrt(512), so each vector is rescaled to `vector_norm` (default sqrt(512)) before rendering.
torch is imported only when the model is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synid_assets.core.config.models import license_of
from synid_assets.core.config.requirements import BackendRequirements, ModelNeed, local_model
from synid_assets.core.errors import ModelLoadError
from synid_assets.core.generation.regeneration import check_params_match
from synid_assets.core.generation.torch_runtime import looks_like_path, resolve_device, snapshot_commit
from synid_assets.core.generation.types import DocumentRequest, GeneratedImage, LiveRequest

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

VECTOR_DIM = 512
VECTOR_SPACE = "BooBooWu/Vec2Face:weights/arcface-r100-glint360k.pth"  # ArcFace R100 trained on Glint360K
CHECKPOINT_FILE = "weights/vec2face_generator.pth"
IMAGE_SIZE = 112
SIGMAS = (0.3, 0.5, 0.7)
SIGMA_SHARES = (0.4, 0.4, 0.2)
MASK_RATIO_MU, MASK_RATIO_SD, MASK_RATIO_MIN, MASK_RATIO_MAX = 0.15, 0.25, 0.1, 1.0
ROWS = 49
DTYPES = ("float32", "bfloat16", "float16")
LICENSE = (
    "Vec2Face weights: MIT (model card huggingface.co/BooBooWu/Vec2Face and github.com/HaiyuWu/Vec2Face LICENSE); "
    "trained on a WebFace4M subset (research-only terms): see the model card"
)
_MODEL_FIELDS = ("model_id", "checkpoint_file", "dtype", "vector_norm")


# ---------------------------------------------------------------- the published sampling rules


def mask_ratio(
    rng: np.random.Generator, mu: float = MASK_RATIO_MU, sd: float = MASK_RATIO_SD, low: float = MASK_RATIO_MIN,
    high: float = MASK_RATIO_MAX,
) -> float:
    """One mask ratio: normal(mu, sd) truncated to [low, high] (default the published 0.15, 0.25, [0.1, 1.0]), by
    inverting the CDF (one draw, no loop)."""
    from scipy.special import ndtr, ndtri

    cdf_low, cdf_high = ndtr((low - mu) / sd), ndtr((high - mu) / sd)
    value = mu + sd * float(ndtri(cdf_low + (cdf_high - cdf_low) * rng.random()))
    return min(max(value, low), high)


def row_masks(ratio: float, rng: np.random.Generator, minimum: float = MASK_RATIO_MIN) -> tuple[np.ndarray, np.ndarray]:
    """(dropped, masked) boolean rows [49]: the ceil(49 x minimum) and ceil(49 x ratio) rows with the smallest uniform
    noise; dropped is within masked."""
    import numpy as np

    order = np.argsort(rng.random(ROWS), kind="stable")
    dropped, masked = np.zeros(ROWS, bool), np.zeros(ROWS, bool)
    dropped[order[: math.ceil(ROWS * minimum)]] = True
    masked[order[: math.ceil(ROWS * ratio)]] = True
    return dropped, masked


def perturb(vector: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """vector + N(0, sigma^2) per component, rescaled to the vector's own norm."""
    import numpy as np

    moved = vector + rng.normal(0.0, sigma, vector.shape)
    return moved / np.linalg.norm(moved) * np.linalg.norm(vector)


def draw_variation(vector: np.ndarray, seed: int, vary: bool) -> dict[str, Any]:
    """Everything one image draws from its seed: sigma (live images only), the input vector, mask ratio and rows."""
    import numpy as np

    rng = np.random.default_rng(int(seed))
    sigma = None
    if vary:
        sigma = SIGMAS[int(rng.choice(len(SIGMAS), p=SIGMA_SHARES))]
        vector = perturb(vector, sigma, rng)
    ratio = mask_ratio(rng)
    dropped, masked = row_masks(ratio, rng)
    return {"sigma": sigma, "vector": vector, "mask_ratio": ratio, "dropped": dropped, "masked": masked}


# ---------------------------------------------------------------- loading


def load_vec2face_checkpoint(
    path: str | Path, num_heads: int = 12, decoder_num_heads: int = 16, device: str = "cpu", dtype: str = "float32"
) -> torch.nn.Module:
    """The generator of a released-layout checkpoint (`{"model_vec2face": state_dict, ...}` or the state_dict)."""
    import torch

    from synid_assets.core.generation.vec2face_model import (
        Vec2FaceGenerator,
        config_from_state_dict,
        read_checkpoint_dict,
    )

    path = Path(path).expanduser()
    raw = read_checkpoint_dict(path, "Vec2Face")
    state = raw.get("model_vec2face", raw)
    if not isinstance(state, dict) or "latent_prior_proj_f.weight" not in state:
        raise ModelLoadError(f"Vec2Face checkpoint {str(path)!r} holds no Vec2Face generator (key 'model_vec2face')")
    try:
        config = config_from_state_dict(state, num_heads, decoder_num_heads)
        model = Vec2FaceGenerator(config)
        model.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError, ValueError) as error:
        message = f"Vec2Face checkpoint {str(path)!r} does not match the Vec2Face layout: {error}"
        raise ModelLoadError(message) from error
    return model.to(device=device, dtype=getattr(torch, dtype)).eval()


def checkpoint_file_path(
    model_id: str, file: str, revision: str | None, cache_dir: str | None, local_files_only: bool, what: str
) -> Path:
    """`file` of a model: model_id itself when it is a file, model_id/file for a directory, else the hub file."""
    local = Path(model_id).expanduser()
    if local.is_file():
        return local
    if local.is_dir():
        return local / file
    if looks_like_path(model_id):
        raise ModelLoadError(f"{what} model {model_id!r} does not exist (a checkpoint file or directory)")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(model_id, file, revision=revision, cache_dir=cache_dir,
                                    local_files_only=local_files_only))
    except Exception as error:  # not found, offline: all load failures here
        raise ModelLoadError(
            f"{what} checkpoint {file!r} of {model_id!r} could not be fetched: {type(error).__name__}: {error}. "
            "Fetch it first with `synid models download PROFILE`."
        ) from error


class Vec2FaceLiveGenerator:
    """Live images with Vec2Face: published variations (sigma noise, row mask) of the identity's ArcFace vector."""

    name = "vec2face"
    version = "1"
    varies = True  # live images perturb the vector; documents render it as it is
    # Its ID embedder's space: on the embeddings route live requests carry the identity's sampled vector.
    vector_space = VECTOR_SPACE
    requirements = BackendRequirements(device="any")
    model_fields = _MODEL_FIELDS  # what regenerate() must match

    @classmethod
    def required_models(cls, options: Mapping[str, Any]) -> list[ModelNeed]:
        """The generator checkpoint only (its ID embedder is the face analyzer's business)."""
        model_id = options["model_id"]
        if looks_like_path(model_id) or Path(model_id).expanduser().exists():
            return [local_model(model_id, "")]
        return [ModelNeed(model_id, options["revision"], (options["checkpoint_file"],), license_of(model_id))]

    def __init__(
        self,
        model_id: str = "BooBooWu/Vec2Face",
        revision: str | None = None,
        checkpoint_file: str = CHECKPOINT_FILE,
        vector_norm: float = math.sqrt(VECTOR_DIM),
        num_heads: int = 12,
        decoder_num_heads: int = 16,
        dtype: str = "float32",
        device: str = "auto",
        batch_size: int = 64,
        cache_dir: str | None = None,
        local_files_only: bool = False,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {dtype!r}")
        if batch_size < 1 or vector_norm <= 0:
            raise ValueError("batch_size must be at least 1 and vector_norm positive")
        self.model_id = model_id
        self.revision = revision
        self.checkpoint_file = checkpoint_file
        self.vector_norm = float(vector_norm)
        self.num_heads = int(num_heads)
        self.decoder_num_heads = int(decoder_num_heads)
        self.dtype = dtype
        self.device = device
        self.batch_size = int(batch_size)
        self.cache_dir = cache_dir
        self.local_files_only = bool(local_files_only)
        self._model: Any = None
        self._device: str | None = None
        self._resolved_revision: str | None = None
        self._torch_version: str | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _checkpoint_path(self) -> Path:
        return checkpoint_file_path(self.model_id, self.checkpoint_file, self.revision, self.cache_dir,
                                    self.local_files_only, "Vec2Face")

    def load(self) -> None:
        """Load the generator once (no-op when loaded)."""
        if self._model is not None:
            return
        import torch

        path = self._checkpoint_path()
        device = resolve_device(self.device)
        self._model = load_vec2face_checkpoint(path, self.num_heads, self.decoder_num_heads, device, self.dtype)
        self._device = device
        self._resolved_revision = snapshot_commit(path.parents[len(Path(self.checkpoint_file).parts) - 1])
        self._torch_version = torch.__version__

    def unload(self) -> None:
        self._model = None
        self._device = None

    # ------------------------------------------------------------------ generation

    def _vector_of(self, request: LiveRequest | DocumentRequest) -> tuple[list[float], str]:
        """The vector to render and where it came from: the identity vector when the request has one, else (live
        images after other documents) the document face's embedding."""
        import numpy as np

        vector, source = getattr(request, "identity_vector", None), "identity_vectors"
        if vector is None and isinstance(request, LiveRequest):
            vector, source = request.document_embedding, "document_embedding"
        size = None if vector is None else len(vector)
        norm = 0.0 if size != VECTOR_DIM else float(np.linalg.norm(np.asarray(vector, dtype=np.float64)))
        if size != VECTOR_DIM or not math.isfinite(norm) or norm == 0.0:
            got = "no vector" if vector is None else f"a {size}-d vector of norm {norm:g}"
            raise ValueError(
                f"identity {request.identity.identity_id}: Vec2Face needs a finite non-zero {VECTOR_DIM}-d vector in "
                f"{VECTOR_SPACE} (got {got})"
            )
        return [float(x) for x in vector], source

    def render(self, vectors: Sequence[Sequence[float]], seeds: Sequence[int]) -> tuple[list[Image.Image], list[dict]]:
        """One image per (vector, seed), with what each drew (sigma, mask ratio)."""
        import numpy as np
        import torch
        from PIL import Image

        self.load()
        draws = []
        for vector, seed in zip(vectors, seeds, strict=True):
            unit = np.asarray(vector, dtype=np.float64)
            draws.append(draw_variation(unit / np.linalg.norm(unit) * self.vector_norm, seed, self.varies))
        images = []
        dtype = getattr(torch, self.dtype)
        for start in range(0, len(draws), self.batch_size):
            chunk = draws[start:start + self.batch_size]
            rep = torch.from_numpy(np.stack([d["vector"] for d in chunk])).to(self._device, dtype)
            dropped = torch.from_numpy(np.stack([d["dropped"] for d in chunk])).to(self._device)
            masked = torch.from_numpy(np.stack([d["masked"] for d in chunk])).to(self._device)
            with torch.inference_mode():
                out = self._model(rep, dropped, masked).float().permute(0, 2, 3, 1).cpu().numpy()
            # As published: (x + 1) / 2 * 255, clipped, truncated to uint8.
            pixels = ((out + 1.0) / 2.0 * 255.0).clip(0, 255).astype(np.uint8)
            images.extend(Image.fromarray(p, "RGB") for p in pixels)
        return images, [{"sigma": d["sigma"], "mask_ratio": d["mask_ratio"]} for d in draws]

    def _params(self, seed: int, vector: list[float], source: str, drawn: dict, identity_id: str) -> dict[str, Any]:
        return {
            "generator": self.name,
            "version": self.version,
            "model_id": self.model_id,
            "revision": self._resolved_revision,
            "requested_revision": self.revision,
            "checkpoint_file": self.checkpoint_file,
            "license": LICENSE,
            "seed": int(seed),
            "vector": vector,
            "vector_source": {"identity_id": identity_id, "source": source},
            "vector_space": VECTOR_SPACE,
            "vector_norm": self.vector_norm,
            "varies": self.varies,
            "sigma": drawn["sigma"],
            "mask_ratio": drawn["mask_ratio"],
            "width": IMAGE_SIZE,
            "height": IMAGE_SIZE,
            "aligned": True,
            "dtype": self.dtype,
            "torch_version": self._torch_version,
            "execution": {"device": self._device, "batch_size": self.batch_size},
        }

    def generate(self, requests: Sequence[LiveRequest | DocumentRequest]) -> list[GeneratedImage]:
        """One 112x112 image per request, in request order."""
        if not requests:
            return []
        vectors = [self._vector_of(request) for request in requests]  # fail before loading anything
        images, drawn = self.render([v for v, _ in vectors], [r.seed for r in requests])
        out = []
        for request, (vector, source), image, draw in zip(requests, vectors, images, drawn, strict=True):
            params = self._params(request.seed, vector, source, draw, request.identity.identity_id)
            params["identity_seed"] = int(request.identity.seed)
            if isinstance(request, LiveRequest):
                params["live_index"] = int(request.live_index)
            out.append(GeneratedImage(image=image, params=params))
        return out

    def regenerate(self, params: Mapping[str, Any]) -> Image.Image:
        """Re-make one image from its recorded params (vector, seed); the model fields must match."""
        return self.render([self.recorded_vector(params)], [int(params["seed"])])[0][0]

    def recorded_vector(self, params: Mapping[str, Any]) -> Sequence[float]:
        """The vector of an image's recorded params, once its model fields and revision match this generator's
        (the model is loaded to know its revision)."""
        check_params_match(self, params, (*self.model_fields, "varies"))
        vector = params.get("vector")
        if vector is None or len(vector) != VECTOR_DIM:
            raise ValueError(f"params hold no {VECTOR_DIM}-d vector")
        self.load()
        if params.get("revision") and self._resolved_revision and params["revision"] != self._resolved_revision:
            raise ValueError(f"params were made with revision {params['revision']}, this is {self._resolved_revision}")
        return vector

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **overrides: Any) -> Vec2FaceLiveGenerator:
        """A generator configured like the one that made params (execution options from overrides)."""
        kwargs: dict[str, Any] = {
            "model_id": params["model_id"],
            "revision": params.get("revision") or params.get("requested_revision"),
            "checkpoint_file": params.get("checkpoint_file", CHECKPOINT_FILE),
            "vector_norm": params.get("vector_norm", math.sqrt(VECTOR_DIM)),
            "dtype": params.get("dtype", "float32"),
        }
        kwargs.update(overrides)
        return cls(**kwargs)


class Vec2FaceDocumentGenerator(Vec2FaceLiveGenerator):
    """Documents with Vec2Face (identity_source: embeddings): each identity's sampled vector, rendered as it is."""

    varies = False
    vector_dim = VECTOR_DIM  # with the inherited vector_space: documents render identity vectors
