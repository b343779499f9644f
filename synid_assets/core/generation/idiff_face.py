"""The IDiff-Face generator: 128x128 faces from an identity vector in ElasticFace-Arc (R100) space.

IDiff-Face (Boutros et al., ICCV 2023; github.com/fdbtrs/IDiff-Face, CC BY-NC-SA 4.0) is a latent DDPM: a 216M-param
UNet with cross-attention on the projected 512-d identity context, on the 3x32x32 latent of the CompVis FFHQ-256 LDM
VQ autoencoder (networks in `idiff_face_model.py`, matched at fdbtrs/IDiff-Face @ 8b39369). The schedule is the
published one (T = 1000, linear betas 1e-4 to 0.02, epsilon prediction); sampling runs through diffusers'
DDPMScheduler (`scheduler: ddpm`, 1000 ancestral steps with sigma_t^2 = beta_t, as upstream's `sample`) or
DDIMScheduler (`scheduler: ddim`, eta 0, `steps` default 50). No classifier-free guidance, as published.

Weights are on Google Drive only (the repository's README), so `model_id` is a local directory holding upstream's
files: `checkpoints/ema_averaged_model.ckpt` (the EMA DDPM's state dict: `eps_model.*` plus its schedule buffers) of
a trained model folder, and `autoencoder/first_stage_decoder_state_dict.pt` (the VQDecoderInterface state dict).
Each image's initial latent and DDPM noise come from its own torch.Generator seeded with the request's seed (on the
CPU), so an image never depends on its batch. Outputs are 128x128 and not aligned: the profile's face analyzer
detects and aligns them to 112x112 (upstream silently resized failures; here a failed detection is recorded).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synid_assets.core.config.models import license_of
from synid_assets.core.config.requirements import BackendRequirements, ModelNeed
from synid_assets.core.errors import ModelLoadError
from synid_assets.core.generation.torch_runtime import resolve_device
from synid_assets.core.generation.types import DocumentRequest, GeneratedImage, LiveRequest

if TYPE_CHECKING:
    import torch
    from PIL import Image

VECTOR_DIM = 512
VECTOR_SPACE = "fdbtrs/ElasticFace:295672backbone.pth"  # ElasticFace-Arc R100 (upstream's contexts)
REPOSITORY = "fdbtrs/IDiff-Face"
CHECKPOINT_FILE = "checkpoints/ema_averaged_model.ckpt"
DECODER_FILE = "autoencoder/first_stage_decoder_state_dict.pt"
IMAGE_SIZE = 128
T, BETA_START, BETA_END = 1000, 1e-4, 0.02
SCHEDULERS = ("ddim", "ddpm")
DTYPES = ("float32", "bfloat16", "float16")
LICENSE = license_of(REPOSITORY)
_MODEL_FIELDS = ("model_id", "checkpoint_file", "decoder_file", "scheduler", "steps", "dtype")


def read_state(path: Path, what: str, model: str = "IDiff-Face") -> dict:
    """A checkpoint's state dict (weights only); a missing or unreadable file is named in one line."""
    import torch

    if not path.is_file():
        raise ModelLoadError(f"{model} {what} {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = f"{type(error).__name__}: {error}".splitlines()[0]
        raise ModelLoadError(f"{model} {what} {str(path)!r} could not be read: {reason}") from error
    if not isinstance(state, dict):
        raise ModelLoadError(f"{model} {what} {str(path)!r} holds no state dict")
    return state


def strict_load(module: torch.nn.Module, state: dict, path: Path, what: str, model: str = "IDiff-Face") -> None:
    """Load with strict key and shape checking; a mismatch is one line naming the file."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:300]
        raise ModelLoadError(f"{model} {what} {str(path)!r} does not match the released layout: {detail}") from error


def load_idiff_face_unet(path: str | Path) -> torch.nn.Module:
    """The UNet of an EMA checkpoint (`ema_averaged_model.ckpt`: the DDPM's state dict, UNet under `eps_model.`)."""
    from synid_assets.core.generation.idiff_face_model import ConditionalUNet

    path = Path(path).expanduser()
    state = read_state(path, "checkpoint")
    unet_state = {k[len("eps_model."):]: v for k, v in state.items() if k.startswith("eps_model.")}
    if "image_proj.weight" not in unet_state or "context_emb.weight" not in unet_state:
        raise ModelLoadError(f"IDiff-Face checkpoint {str(path)!r} holds no conditional UNet (keys 'eps_model.*')")
    return checked_unet(ConditionalUNet, state, unet_state, path, "IDiff-Face")


def checked_unet(model_class: type, state: dict, unet_state: dict, path: Path, model: str) -> torch.nn.Module:
    """`model_class` built from a checkpoint's UNet keys and loaded strictly, once the checkpoint's DDPM schedule
    buffer (when it has one) is the published T = 1000 linear betas; every mismatch is one line naming the file."""
    from synid_assets.core.generation.idiff_face_model import unet_config_from_state_dict

    betas = next((v for k, v in state.items() if k.split(".")[-1] == "betas"), None)
    if betas is not None and (len(betas) != T or abs(float(betas[0]) - BETA_START) > 1e-9
                              or abs(float(betas[-1]) - BETA_END) > 1e-9):
        raise ModelLoadError(f"{model} checkpoint {str(path)!r} was trained with another schedule "
                             f"({len(betas)} betas from {float(betas[0]):g} to {float(betas[-1]):g})")
    try:
        unet = model_class(unet_config_from_state_dict(unet_state))
    except (KeyError, ValueError, ZeroDivisionError, IndexError) as error:
        raise ModelLoadError(f"{model} checkpoint {str(path)!r} does not match the released layout: "
                             f"{type(error).__name__}: {error}") from error
    strict_load(unet, unet_state, path, "checkpoint", model)
    return unet.eval()


def load_idiff_face_decoder(path: str | Path, model: str = "IDiff-Face") -> torch.nn.Module:
    """The VQ decoder of `first_stage_decoder_state_dict.pt` (quantize, post_quant_conv, decoder)."""
    from synid_assets.core.generation.idiff_face_model import VQDecoderInterface, decoder_config_from_state_dict

    path = Path(path).expanduser()
    state = read_state(path, "decoder", model)
    if "quantize.embedding.weight" not in state or "decoder.conv_out.weight" not in state:
        raise ModelLoadError(f"{model} decoder {str(path)!r} holds no VQ decoder (keys 'decoder.*', 'quantize.*')")
    try:
        decoder = VQDecoderInterface(decoder_config_from_state_dict(state))
    except (KeyError, ValueError, ZeroDivisionError, IndexError) as error:
        raise ModelLoadError(f"{model} decoder {str(path)!r} does not match the released layout: "
                             f"{type(error).__name__}: {error}") from error
    strict_load(decoder, state, path, "decoder", model)
    return decoder.eval()


def make_scheduler(name: str, steps: int):
    """diffusers' scheduler for the published schedule; DDPM keeps upstream's sigma_t^2 = beta_t."""
    from diffusers import DDIMScheduler, DDPMScheduler

    common = {"num_train_timesteps": T, "beta_start": BETA_START, "beta_end": BETA_END, "beta_schedule": "linear",
              "prediction_type": "epsilon", "clip_sample": False}
    if name == "ddpm":
        scheduler = DDPMScheduler(variance_type="fixed_large", **common)
    else:
        scheduler = DDIMScheduler(set_alpha_to_one=True, steps_offset=0, **common)
    scheduler.set_timesteps(steps)
    return scheduler


class IDiffFaceLiveGenerator:
    """Live images with IDiff-Face: new noise samples of the identity's ElasticFace vector (each from its seed)."""

    name = "idiff_face"
    display_name = "IDiff-Face"
    version = "1"
    model_fields = _MODEL_FIELDS  # what regenerate() must match and from_params() copies
    vector_space = VECTOR_SPACE  # on the embeddings route live requests carry the identity's sampled vector
    requirements = BackendRequirements(device="any")

    @classmethod
    def required_models(cls, options: Mapping[str, Any]) -> list[ModelNeed]:
        """The trained-model directory (Google Drive only: fetched by hand), under IDiff-Face's licence."""
        files = (str(options.get("checkpoint_file", CHECKPOINT_FILE)), str(options.get("decoder_file", DECODER_FILE)))
        return [ModelNeed(str(options["model_id"]), None, files, LICENSE)]  # a local dir, as the profile writes it

    def __init__(
        self,
        model_id: str = "~/models/idiff-face",
        checkpoint_file: str = CHECKPOINT_FILE,
        decoder_file: str = DECODER_FILE,
        scheduler: str = "ddim",
        steps: int | None = None,
        dtype: str = "float32",
        device: str = "auto",
        batch_size: int = 64,
    ) -> None:
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, not {scheduler!r}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {dtype!r}")
        steps = int(steps if steps is not None else (T if scheduler == "ddpm" else 50))
        if not 1 <= steps <= T or batch_size < 1:
            raise ValueError(f"steps must be in 1..{T} and batch_size at least 1")
        self.model_id = model_id
        self.checkpoint_file = checkpoint_file
        self.decoder_file = decoder_file
        self.scheduler = scheduler
        self.steps = steps
        self.dtype = dtype
        self.device = device
        self.batch_size = int(batch_size)
        self._unet: Any = None
        self._decoder: Any = None
        self._device: str | None = None
        self._torch_version: str | None = None

    @property
    def loaded(self) -> bool:
        return self._unet is not None

    def load(self) -> None:
        """Load the UNet and the VQ decoder once (no-op when loaded)."""
        if self._unet is not None:
            return
        import torch

        root = Path(self.model_id).expanduser()
        if not root.is_dir():
            raise ModelLoadError(f"IDiff-Face model directory {str(root)!r} does not exist (download it from the "
                                 f"links in github.com/{REPOSITORY}; licence {LICENSE})")
        device = resolve_device(self.device)
        dtype = getattr(torch, self.dtype)
        unet = load_idiff_face_unet(root / self.checkpoint_file)
        decoder = load_idiff_face_decoder(root / self.decoder_file)
        self._unet, self._decoder = unet.to(device, dtype), decoder.to(device, dtype)
        self._device = device
        self._torch_version = torch.__version__

    def unload(self) -> None:
        self._unet = self._decoder = None
        self._device = None

    def _vector_of(self, request: LiveRequest | DocumentRequest) -> tuple[list[float], str]:
        import numpy as np

        vector, source = getattr(request, "identity_vector", None), "identity_vectors"
        if vector is None and isinstance(request, LiveRequest):
            vector, source = request.document_embedding, "document_embedding"
        size = None if vector is None else len(vector)
        norm = 0.0 if size != VECTOR_DIM else float(np.linalg.norm(np.asarray(vector, dtype=np.float64)))
        if size != VECTOR_DIM or not math.isfinite(norm) or norm == 0.0:
            got = "no vector" if vector is None else f"a {size}-d vector of norm {norm:g}"
            raise ValueError(f"identity {request.identity.identity_id}: {self.display_name} needs a finite non-zero "
                             f"{VECTOR_DIM}-d vector in {VECTOR_SPACE} (got {got})")
        return [float(x) / norm for x in vector], source  # upstream's contexts are unit ElasticFace features

    def render(self, vectors: Sequence[Sequence[float]], seeds: Sequence[int]) -> list[Image.Image]:
        """One 128x128 image per (vector, seed)."""
        import numpy as np
        import torch
        from PIL import Image

        self.load()
        dtype = getattr(torch, self.dtype)
        latent = IMAGE_SIZE // 2 ** (len(self._decoder.decoder.up) - 1)
        images: list[Image.Image] = []
        for start in range(0, len(vectors), self.batch_size):
            chunk_seeds = seeds[start:start + self.batch_size]
            generators = [torch.Generator("cpu").manual_seed(int(s)) for s in chunk_seeds]
            context = torch.tensor(np.asarray(vectors[start:start + self.batch_size]), dtype=dtype, device=self._device)
            scheduler = make_scheduler(self.scheduler, self.steps)
            x = torch.stack([torch.randn((3, latent, latent), generator=g) for g in generators]).to(self._device)
            with torch.inference_mode():
                for t in scheduler.timesteps:
                    steps = torch.full((len(x),), int(t), device=self._device, dtype=torch.long)
                    eps = self._unet(x.to(dtype), steps, context).float()
                    # DDPM's noise: one draw per image from its own generator (diffusers draws each on the CPU).
                    extra = {"generator": generators} if self.scheduler == "ddpm" else {"eta": 0.0}
                    x = scheduler.step(eps, t, x, **extra).prev_sample
                out = self._decoder(x.to(dtype)).float().clamp(-1, 1)
            # As upstream's save_image: (x + 1) / 2 * 255 + 0.5, clamped, truncated.
            pixels = ((out + 1) / 2 * 255 + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            images.extend(Image.fromarray(p, "RGB") for p in pixels)
        return images

    def _params(self, seed: int, vector: list[float], source: str, identity_id: str) -> dict[str, Any]:
        return {
            "generator": self.name,
            "version": self.version,
            "model_id": self.model_id,
            "repository": REPOSITORY,
            "upstream_commit": "8b3936935710dc78519933f905b14bd60ff9cb26",
            "checkpoint_file": self.checkpoint_file,
            "decoder_file": self.decoder_file,
            "license": LICENSE,
            "seed": int(seed),
            "vector": vector,
            "vector_source": {"identity_id": identity_id, "source": source},
            "vector_space": VECTOR_SPACE,
            "scheduler": self.scheduler,
            "steps": self.steps,
            "schedule": {"T": T, "beta_start": BETA_START, "beta_end": BETA_END, "beta_schedule": "linear",
                         "prediction_type": "epsilon"},
            "width": IMAGE_SIZE,
            "height": IMAGE_SIZE,
            "aligned": False,  # the face analyzer detects and aligns it to 112x112
            "dtype": self.dtype,
            "torch_version": self._torch_version,
            "execution": {"device": self._device, "batch_size": self.batch_size},
        }

    def generate(self, requests: Sequence[LiveRequest | DocumentRequest]) -> list[GeneratedImage]:
        """One 128x128 image per request, in request order."""
        if not requests:
            return []
        vectors = [self._vector_of(request) for request in requests]  # fail before loading anything
        images = self.render([v for v, _ in vectors], [r.seed for r in requests])
        out = []
        for request, (vector, source), image in zip(requests, vectors, images, strict=True):
            params = self._params(request.seed, vector, source, request.identity.identity_id)
            params["identity_seed"] = int(request.identity.seed)
            if isinstance(request, LiveRequest):
                params["live_index"] = int(request.live_index)
            out.append(GeneratedImage(image=image, params=params))
        return out

    def regenerate(self, params: Mapping[str, Any]) -> Image.Image:
        """Re-make one image from its recorded params (vector, seed); the model fields must match."""
        if params.get("generator", self.name) != self.name:
            raise ValueError(f"params were made by generator {params.get('generator')!r}, not {self.name!r}")
        mismatched = [f for f in self.model_fields if f in params and params[f] != getattr(self, f)]
        if mismatched:
            detail = ", ".join(f"{f}: recorded {params.get(f)!r}" for f in mismatched)
            raise ValueError(f"params do not match this generator ({detail}); use from_params(params)")
        vector = params.get("vector")
        if vector is None or len(vector) != VECTOR_DIM:
            raise ValueError(f"params hold no {VECTOR_DIM}-d vector")
        return self.render([vector], [int(params["seed"])])[0]

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **overrides: Any) -> IDiffFaceLiveGenerator:
        """A generator configured like the one that made params (execution options from overrides)."""
        kwargs: dict[str, Any] = {f: params[f] for f in cls.model_fields if f in params}
        kwargs.update(overrides)
        return cls(**kwargs)


class IDiffFaceDocumentGenerator(IDiffFaceLiveGenerator):
    """Documents with IDiff-Face (identity_source: embeddings): one sample of each identity's sampled vector."""

    vector_dim = VECTOR_DIM  # with the inherited vector_space: documents render identity vectors
