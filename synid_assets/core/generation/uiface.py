"""The UIFace generator: 112x112 faces from an identity vector in ElasticFace (R100) space, with two-stage sampling.

UIFace (Lin et al., ICLR 2025; github.com/Tencent/TFace, `generation/uiface/`, Apache-2.0) is IDiff-Face's latent
diffusion model trained on CASIA-WebFace with a learned empty context (`uiface_model.py`), sampled in two stages
with attention injection (`uiface_sampling.py`): DDIM 50 steps, each sample starting on the empty context and
switching to its identity when its cross-attention map settles (change < 0.006) or at t < 500 at the latest, then
classifier-free guidance with s = 1. Matched at Tencent/TFace @ 171ec1434aca0972e111663ac646c9c1e3e44b5b.

Weights are on Google Drive only (the UIFace README), so `model_id` is a local directory holding:
- `checkpoint_file` (default `checkpoints/uiface.ckpt`): the diffusion checkpoint from UIFace's Drive folder, in
  either of upstream's layouts (the DDP model `model_<step>.ckpt`, keys `module.eps_model.*`, which the sampling
  config's `use_non_ema: True` points at, or `ema_averaged_model_<step>.ckpt`, keys `eps_model.*`); the Drive file
  name is not given in the repository, so save it under this name or set `checkpoint_file`;
- `decoder_file` (default `autoencoder/first_stage_decoder_state_dict.pt`): the CompVis FFHQ-256 VQ decoder from the
  link both the UIFace and IDiff-Face READMEs give (the same file as IDiff-Face's).
Each image's initial latent comes from its own torch.Generator seeded with the request's seed (on the CPU), and DDIM
with eta 0 draws nothing else, while the switch is decided per sample: an image never depends on its batch. As
upstream's `sample.py`, the decoded 128x128 image is resized bilinearly to 112x112 and treated as aligned (no
detector); the profile's face analyzer still detects it for embedding and filtering.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synid_assets.core.config.models import license_of
from synid_assets.core.config.requirements import BackendRequirements, ModelNeed
from synid_assets.core.errors import ModelLoadError
from synid_assets.core.generation.idiff_face import (
    DECODER_FILE,
    DTYPES,
    VECTOR_DIM,
    VECTOR_SPACE,
    IDiffFaceLiveGenerator,
    T,
    checked_unet,
    load_idiff_face_decoder,
    make_scheduler,
    read_state,
)
from synid_assets.core.generation.torch_runtime import resolve_device
from synid_assets.core.generation.types import DocumentRequest, GeneratedImage, LiveRequest
from synid_assets.core.generation.uiface_sampling import GUIDANCE_SCALE, STAGE_TWO_BELOW, SWITCH_THRESHOLD

if TYPE_CHECKING:
    import torch
    from PIL import Image

REPOSITORY = "Tencent/TFace"
UPSTREAM_COMMIT = "171ec1434aca0972e111663ac646c9c1e3e44b5b"
CHECKPOINT_FILE = "checkpoints/uiface.ckpt"
GENERATED_SIZE, IMAGE_SIZE = 128, 112
LICENSE = license_of(REPOSITORY)
_MODEL_FIELDS = ("model_id", "checkpoint_file", "decoder_file", "steps", "guidance_scale", "switch_threshold",
                 "stage_two_below", "dtype")


def load_uiface_unet(path: str | Path) -> torch.nn.Module:
    """The UIFaceUNet of a UIFace checkpoint (either upstream layout), strictly checked against the released keys."""
    from synid_assets.core.generation.uiface_model import UIFaceUNet, unet_state_of_checkpoint

    path = Path(path).expanduser()
    state = read_state(path, "checkpoint", "UIFace")
    unet_state = unet_state_of_checkpoint(state)
    if "image_proj.weight" not in unet_state or "context_emb.weight" not in unet_state:
        raise ModelLoadError(f"UIFace checkpoint {str(path)!r} holds no conditional UNet (keys 'eps_model.*')")
    if "empty_context_embedding" not in unet_state:
        raise ModelLoadError(f"UIFace checkpoint {str(path)!r} has no learned empty context "
                             "('empty_context_embedding'): an IDiff-Face checkpoint? use the idiff_face backend")
    return checked_unet(UIFaceUNet, state, unet_state, path, "UIFace")


class UIFaceLiveGenerator(IDiffFaceLiveGenerator):
    """Live images with UIFace: two-stage samples of the identity's ElasticFace vector (each from its seed)."""

    name = "uiface"
    display_name = "UIFace"
    version = "1"
    model_fields = _MODEL_FIELDS
    vector_space = VECTOR_SPACE  # ElasticFace R100 features, as IDiff-Face's (upstream normalises its contexts)
    requirements = BackendRequirements(device="any")

    @classmethod
    def required_models(cls, options: Mapping[str, Any]) -> list[ModelNeed]:
        """The local model directory and the two files it must hold (Google Drive only: fetched by hand)."""
        files = (str(options.get("checkpoint_file", CHECKPOINT_FILE)), str(options.get("decoder_file", DECODER_FILE)))
        return [ModelNeed(str(options["model_id"]), None, files, LICENSE)]

    def __init__(
        self,
        model_id: str = "~/models/uiface",
        checkpoint_file: str = CHECKPOINT_FILE,
        decoder_file: str = DECODER_FILE,
        steps: int = 50,
        guidance_scale: float = GUIDANCE_SCALE,
        switch_threshold: float = SWITCH_THRESHOLD,
        stage_two_below: int = STAGE_TWO_BELOW,
        dtype: str = "float32",
        device: str = "auto",
        batch_size: int = 64,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {dtype!r}")
        if not 1 <= int(steps) <= T or batch_size < 1:
            raise ValueError(f"steps must be in 1..{T} and batch_size at least 1")
        if switch_threshold < 0 or not 0 <= stage_two_below <= T:
            raise ValueError(f"switch_threshold must be >= 0 and stage_two_below in 0..{T}")
        super().__init__(model_id, checkpoint_file, decoder_file, "ddim", int(steps), dtype, device, batch_size)
        self.guidance_scale = float(guidance_scale)
        self.switch_threshold = float(switch_threshold)
        self.stage_two_below = int(stage_two_below)
        self.last_traces: list = []  # the SamplingTrace of each batch of the last render (switch steps, maps)

    def load(self) -> None:
        """Load the UNet and the VQ decoder once (no-op when loaded)."""
        if self._unet is not None:
            return
        import torch

        root = Path(self.model_id).expanduser()
        if not root.is_dir():
            raise ModelLoadError(f"UIFace model directory {str(root)!r} does not exist (download {self.checkpoint_file}"
                                 f" and {self.decoder_file} from the links in github.com/{REPOSITORY}/tree/master/"
                                 f"generation/uiface; licence {LICENSE})")
        device = resolve_device(self.device)
        dtype = getattr(torch, self.dtype)
        unet = load_uiface_unet(root / self.checkpoint_file)
        decoder = load_idiff_face_decoder(root / self.decoder_file, "UIFace")
        self._unet, self._decoder = unet.to(device, dtype), decoder.to(device, dtype)
        self._device = device
        self._torch_version = torch.__version__

    def render(self, vectors: Sequence[Sequence[float]], seeds: Sequence[int]) -> list[Image.Image]:
        """One 112x112 image per (vector, seed)."""
        import numpy as np
        import torch
        import torch.nn.functional as F
        from PIL import Image

        from synid_assets.core.generation.uiface_sampling import SamplingTrace, sample_two_stage

        self.load()
        dtype = getattr(torch, self.dtype)
        latent = GENERATED_SIZE // 2 ** (len(self._decoder.decoder.up) - 1)
        images: list[Image.Image] = []
        self.last_traces = []
        for start in range(0, len(vectors), self.batch_size):
            generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds[start:start + self.batch_size]]
            context = torch.tensor(np.asarray(vectors[start:start + self.batch_size]), dtype=dtype, device=self._device)
            x = torch.stack([torch.randn((3, latent, latent), generator=g) for g in generators]).to(self._device)
            trace = SamplingTrace()
            x = sample_two_stage(self._unet, make_scheduler("ddim", self.steps), x, context, self.guidance_scale,
                                 self.switch_threshold, self.stage_two_below, trace)
            self.last_traces.append(trace)
            with torch.inference_mode():
                out = (self._decoder(x.to(dtype)).float().clamp(-1, 1) + 1) / 2
            # As upstream's sample.py: bilinear to 112, then save_image's x * 255 + 0.5, clamped, truncated.
            out = F.interpolate(out, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
            pixels = (out * 255 + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            images.extend(Image.fromarray(p, "RGB") for p in pixels)
        return images

    def _params(self, seed: int, vector: list[float], source: str, identity_id: str) -> dict[str, Any]:
        params = super()._params(seed, vector, source, identity_id)
        params.pop("scheduler")  # always DDIM, recorded under "sampling"
        params.update({
            "repository": REPOSITORY,
            "upstream_commit": UPSTREAM_COMMIT,
            "license": LICENSE,
            "sampling": "two-stage DDIM (diffusers DDIMScheduler, eta 0)",
            "guidance_scale": self.guidance_scale,
            "switch_threshold": self.switch_threshold,
            "stage_two_below": self.stage_two_below,
            "width": IMAGE_SIZE,
            "height": IMAGE_SIZE,
            "aligned": True,  # as upstream: 128 px resized bilinearly to 112, no detector
        })
        return params

    def generate(self, requests: Sequence[LiveRequest | DocumentRequest]) -> list[GeneratedImage]:
        """One 112x112 image per request, in request order, each recording the step its identity came in."""
        out = super().generate(requests)
        starts = [s for trace in self.last_traces for s in trace.identity_from]
        for image, start in zip(out, starts, strict=True):
            image.params["identity_from_step"] = int(start)  # the first timestep that used the identity context
        return out


class UIFaceDocumentGenerator(UIFaceLiveGenerator):
    """Documents with UIFace (identity_source: embeddings): one two-stage sample of each identity's sampled vector."""

    vector_dim = VECTOR_DIM  # with the inherited vector_space: documents render identity vectors
