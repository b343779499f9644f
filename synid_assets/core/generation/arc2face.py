"""The Arc2Face live generator: new photos of an identity from the ArcFace embedding of its document face.

Arc2Face (Paraperas Papantoniou et al., ECCV 2024; github.com/foivospar/Arc2Face, huggingface.co/FoivosPar/Arc2Face)
is Stable Diffusion 1.5 with a fine-tuned UNet (`arc2face/`) and a fine-tuned CLIP text encoder (`encoder/`) that are
conditioned on a face-recognition embedding instead of text. The conditioning, as Arc2Face defines it:

1. tokenize the fixed prompt "photo of a id person" (padded to the tokenizer's 77 tokens);
2. look up the token embeddings and replace the one at the position of the token "id" with the L2-normalized 512-d
   ArcFace vector, zero-padded to the text width (768 for SD1.5);
3. run the CLIP text transformer (position embeddings, causal self-attention, final layer norm) on those token
   embeddings; its last hidden state is the UNet's `prompt_embeds`.

Step 3 here runs the encoder's own forward with a hook on its input-embedding layer that does step 2, so the same
code path (causal mask, positions, final norm) is used as for ordinary text, whatever the transformers version.
The negative conditioning for classifier-free guidance is the empty prompt through the plain text path, which is
what diffusers' StableDiffusionPipeline does when Arc2Face's demo passes only `prompt_embeds`.

Sampling follows Arc2Face's README: DPMSolverMultistepScheduler (from SD1.5's scheduler config), 25 steps, guidance
3.0; or, with the LCM-LoRA for SD1.5 ("latent-consistency/lcm-lora-sdv1-5"), LCMScheduler, 2-4 steps and guidance
1.0 (the README: "disable guidance_scale by using a value of 1.0, as LCM is very sensitive to it"; its demo uses 3).

Each image's noise comes from its own `torch.Generator(device).manual_seed(request.seed)`, so an image depends only
on its own embedding and seed, not on what else is in its batch (up to floating-point rounding of batched kernels).
torch and diffusers are imported only when the model is loaded, so importing this module is cheap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synid_assets.core.config.models import license_of
from synid_assets.core.config.requirements import LORA_FILES, BackendRequirements, ModelNeed
from synid_assets.core.errors import ModelLoadError
from synid_assets.core.generation.arc2face_conditioning import (
    ARCFACE_DIM,
    ID_PROMPT,
    ID_TOKEN,
    normalize_embedding,
    replace_id_token,
)
from synid_assets.core.generation.regeneration import check_params_match
from synid_assets.core.generation.torch_runtime import (
    load_lora,
    looks_like_path,
    noise_device,
    resolve_device,
    snapshot_commit,
)
from synid_assets.core.generation.types import GeneratedImage, LiveRequest

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

DTYPES = ("float16", "bfloat16", "float32")
SCHEDULERS = {"dpm": "DPMSolverMultistepScheduler", "lcm": "LCMScheduler"}
# Arc2Face weights: MIT (the licence on huggingface.co/FoivosPar/Arc2Face and of github.com/foivospar/Arc2Face). They
# are fine-tuned from Stable Diffusion v1.5 (CreativeML OpenRAIL-M, which also covers the SD1.5 VAE used here) on a
# restored WebFace42M, whose own terms limit it to non-commercial research.
LICENSE = (
    "Arc2Face weights: MIT (model card huggingface.co/FoivosPar/Arc2Face); base Stable Diffusion v1.5 VAE/tokenizer: "
    "CreativeML OpenRAIL-M; trained on WebFace42M (research-only terms): see the model card"
)
NEEDS_EMBEDDING = (
    "Arc2Face needs a 512-d ArcFace embedding of the document face; set the profile's face analyzer to insightface"
)
# Settings that must match between a generator and the params of an image it is asked to regenerate.
_MODEL_FIELDS = ("model_id", "base_model_id", "lcm_lora", "dtype", "scheduler")
_ARC2FACE_FILES = ["arc2face/*.json", "arc2face/*.safetensors", "encoder/*.json", "encoder/*.bin",
                   "encoder/*.safetensors"]
_BASE_FILES = ["vae/config.json", "vae/diffusion_pytorch_model.safetensors", "tokenizer/*", "scheduler/*"]


def _fetch_hint(model_id: str) -> str:
    return (
        f"Fetch it first with `synid models download PROFILE` (the profile naming {model_id!r}), or set it to a local "
        "directory in the model's layout (Arc2Face: arc2face/ and encoder/; SD1.5 base: vae/, tokenizer/, scheduler/)."
    )


class Arc2FaceLiveGenerator:
    """Live images with Arc2Face: the identity comes from the document face's ArcFace embedding, nothing else."""

    name = "arc2face"
    version = "1"

    # What it needs (see core/config/requirements.py): a GPU when one is visible (device="auto"), else the CPU.
    requirements = BackendRequirements(device="any")

    @classmethod
    def required_models(cls, options: Mapping[str, Any]) -> list[ModelNeed]:
        """Arc2Face's UNet and encoder (arcface.onnx: its ID embedder), SD1.5's VAE and tokenizer, the LCM LoRA."""
        model_id, base = options["model_id"], options["base_model_id"]
        needs = [
            ModelNeed(model_id, options["revision"], ("arc2face/*", "encoder/*", "arcface.onnx"), license_of(model_id)),
            ModelNeed(base, options["base_revision"], ("vae/*", "tokenizer/*", "scheduler/*", "model_index.json"),
                      license_of(base), part="base"),
        ]
        if options["lcm_lora"]:
            lcm = options["lcm_lora"]
            needs.append(ModelNeed(lcm, None, LORA_FILES, license_of(lcm), part="lcm_lora"))
        return needs

    def __init__(
        self,
        model_id: str = "FoivosPar/Arc2Face",
        base_model_id: str = "stable-diffusion-v1-5/stable-diffusion-v1-5",
        revision: str | None = None,
        base_revision: str | None = None,
        width: int = 512,
        height: int = 512,
        steps: int = 25,
        guidance: float = 3.0,
        lcm_lora: str | None = None,
        lcm_steps: int = 4,
        dtype: str = "float16",
        device: str = "auto",
        batch_size: int = 4,
        cache_dir: str | None = None,
        local_files_only: bool = False,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {dtype!r}")
        if width % 8 or height % 8 or width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive multiples of 8, not {width}x{height}")
        if steps < 1 or lcm_steps < 1 or batch_size < 1:
            raise ValueError("steps, lcm_steps and batch_size must be at least 1")
        if guidance <= 0:
            raise ValueError(f"guidance must be positive, not {guidance}")
        self.model_id = model_id
        self.base_model_id = base_model_id
        self.revision = revision
        self.base_revision = base_revision
        self.width = int(width)
        self.height = int(height)
        self.base_steps = int(steps)
        self.base_guidance = float(guidance)
        self.lcm_lora = lcm_lora
        self.lcm_steps = int(lcm_steps)
        self.dtype = dtype
        self.device = device
        self.batch_size = int(batch_size)
        self.cache_dir = cache_dir
        self.local_files_only = bool(local_files_only)
        self._pipe: Any = None
        self._device: str | None = None
        self._id_token_id: int | None = None
        self._input_ids: Any = None
        self._negative: Any = None
        self._resolved: dict[str, str | None] = {"revision": None, "base_revision": None}
        self._versions: dict[str, str] = {}

    # ------------------------------------------------------------------ settings and params

    @property
    def scheduler(self) -> str:
        return SCHEDULERS["lcm" if self.lcm_lora else "dpm"]

    @property
    def steps(self) -> int:
        """Sampling steps actually used: lcm_steps with the LCM-LoRA, else steps."""
        return self.lcm_steps if self.lcm_lora else self.base_steps

    @property
    def guidance(self) -> float:
        """Guidance actually used: 1.0 (no classifier-free guidance) with the LCM-LoRA, else guidance."""
        return 1.0 if self.lcm_lora else self.base_guidance

    @property
    def noise_device(self) -> str:
        """The device type of the per-image noise generators: CPU and CUDA generators give different noise."""
        return noise_device(self._device, self.device)

    @property
    def settings(self) -> dict[str, Any]:
        """Every setting that changes an image's content (execution options such as batch_size are left out)."""
        return {
            "model_id": self.model_id,
            "base_model_id": self.base_model_id,
            "revision": self.revision,
            "base_revision": self.base_revision,
            "width": self.width,
            "height": self.height,
            "steps": self.steps,
            "guidance": self.guidance,
            "scheduler": self.scheduler,
            "lcm_lora": self.lcm_lora,
            "dtype": self.dtype,
            "prompt": ID_PROMPT,
            "noise_device": self.noise_device,
        }

    def _params(self, seed: int, embedding: list[float], source: dict[str, Any], width: int, height: int) -> dict:
        return {
            "generator": self.name,
            "version": self.version,
            "model_id": self.model_id,
            "base_model_id": self.base_model_id,
            "revision": self._resolved["revision"],
            "requested_revision": self.revision,
            "base_revision": self._resolved["base_revision"],
            "requested_base_revision": self.base_revision,
            "license": LICENSE,
            "seed": int(seed),
            "steps": self.steps,
            "guidance": self.guidance,
            "width": int(width),
            "height": int(height),
            "dtype": self.dtype,
            "scheduler": self.scheduler,
            "lcm_lora": self.lcm_lora,
            "prompt": ID_PROMPT,
            "embedding_source": source,
            "embedding": embedding,
            "noise_device": self.noise_device,
            "diffusers_version": self._versions.get("diffusers"),
            "torch_version": self._versions.get("torch"),
            "execution": {"device": self._device, "batch_size": self.batch_size},
        }

    # ------------------------------------------------------------------ loading

    @property
    def loaded(self) -> bool:
        return self._pipe is not None

    def _resolve(self, model_id: str, revision: str | None, patterns: list[str], needed: tuple[str, ...]) -> Path:
        """A local directory of the model: the given one, or a hub snapshot of the needed files (fetched if allowed)."""
        local = Path(model_id).expanduser()
        if local.is_dir():
            missing = [sub for sub in needed if not (local / sub).is_dir()]
            if missing:
                raise ModelLoadError(
                    f"model directory {str(local)!r} has no {', '.join(missing)} folder. {_fetch_hint(model_id)}"
                )
            return local.resolve()
        if looks_like_path(model_id) or local.exists():
            raise ModelLoadError(f"model directory {model_id!r} does not exist. {_fetch_hint(model_id)}")
        from huggingface_hub import snapshot_download

        try:
            folder = snapshot_download(
                model_id,
                revision=revision,
                allow_patterns=patterns,
                cache_dir=self.cache_dir,
                local_files_only=self.local_files_only,
            )
        except Exception as error:  # not found, offline, gated: all load failures here
            where = "in the local Hugging Face cache" if self.local_files_only else "on the Hugging Face hub"
            raise ModelLoadError(
                f"model {model_id!r} (revision {revision or 'main'}) could not be found {where}: "
                f"{type(error).__name__}: {error}. {_fetch_hint(model_id)}"
            ) from error
        return Path(folder)

    def load(self) -> None:
        """Load the pipeline once (no-op when loaded)."""
        if self._pipe is not None:
            return
        import diffusers
        import torch
        from diffusers import (
            AutoencoderKL,
            DPMSolverMultistepScheduler,
            LCMScheduler,
            StableDiffusionPipeline,
            UNet2DConditionModel,
        )
        from transformers import CLIPTextModel, CLIPTokenizer

        device = resolve_device(self.device)
        torch_dtype = getattr(torch, self.dtype)
        arc_dir = self._resolve(self.model_id, self.revision, _ARC2FACE_FILES, ("arc2face", "encoder"))
        base_dir = self._resolve(self.base_model_id, self.base_revision, _BASE_FILES, ("vae", "tokenizer", "scheduler"))
        try:
            unet = UNet2DConditionModel.from_pretrained(arc_dir, subfolder="arc2face", dtype=torch_dtype)
            encoder = CLIPTextModel.from_pretrained(arc_dir, subfolder="encoder", dtype=torch_dtype)
        except Exception as error:
            raise ModelLoadError(
                f"Arc2Face model {self.model_id!r} could not be loaded from {str(arc_dir)!r}: "
                f"{type(error).__name__}: {error}. {_fetch_hint(self.model_id)}"
            ) from error
        try:
            vae = AutoencoderKL.from_pretrained(base_dir, subfolder="vae", dtype=torch_dtype)
            tokenizer = CLIPTokenizer.from_pretrained(base_dir, subfolder="tokenizer")
            scheduler_config = DPMSolverMultistepScheduler.load_config(base_dir, subfolder="scheduler")
        except Exception as error:
            raise ModelLoadError(
                f"base model {self.base_model_id!r} could not be loaded from {str(base_dir)!r}: "
                f"{type(error).__name__}: {error}. {_fetch_hint(self.base_model_id)}"
            ) from error
        width = encoder.config.hidden_size
        if width < ARCFACE_DIM or unet.config.cross_attention_dim != width:
            raise ModelLoadError(
                f"Arc2Face model {self.model_id!r}: text width {width} and UNet cross_attention_dim "
                f"{unet.config.cross_attention_dim} must be equal and at least {ARCFACE_DIM}"
            )
        id_ids = tokenizer.encode(ID_TOKEN, add_special_tokens=False)
        if len(id_ids) != 1:
            raise ModelLoadError(f"tokenizer of {self.base_model_id!r} does not hold {ID_TOKEN!r} as one token")
        scheduler_cls = LCMScheduler if self.lcm_lora else DPMSolverMultistepScheduler
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler_cls.from_config(scheduler_config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        if self.lcm_lora:
            load_lora(
                pipe, self.lcm_lora, "lcm", f"LCM-LoRA {self.lcm_lora!r} could not be loaded into the Arc2Face UNet",
                _fetch_hint(self.lcm_lora), cache_dir=self.cache_dir, local_files_only=self.local_files_only,
            )  # fmt: skip
            pipe.fuse_lora(lora_scale=1.0)  # merged into the weights: no per-step LoRA cost
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe
        self._device = device
        self._id_token_id = int(id_ids[0])
        self._input_ids = tokenizer(
            ID_PROMPT,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)
        empty_ids = tokenizer(
            "", padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(device)
        with torch.inference_mode():
            self._negative = encoder(empty_ids)[0]
        self._resolved = {
            "revision": snapshot_commit(arc_dir),
            "base_revision": snapshot_commit(base_dir),
        }
        self._versions = {"diffusers": diffusers.__version__, "torch": torch.__version__}

    def unload(self) -> None:
        self._pipe = None
        self._device = None
        self._negative = None

    # ------------------------------------------------------------------ conditioning

    def id_prompt_embeds(self, arcface_vectors: np.ndarray) -> torch.Tensor:
        """Arc2Face's prompt embeddings [n, 77, width] for n ArcFace vectors [n, 512] (normalized here)."""
        import numpy as np
        import torch

        self.load()
        vectors = np.asarray(arcface_vectors, dtype=np.float64)
        if vectors.ndim == 1:
            vectors = vectors[None]
        if vectors.ndim != 2 or vectors.shape[1] != ARCFACE_DIM:
            raise ValueError(f"ArcFace vectors must be [n, {ARCFACE_DIM}], not {vectors.shape}")
        rows = np.stack([normalize_embedding(v) for v in vectors])
        encoder = self._pipe.text_encoder
        ids = self._input_ids.repeat(len(rows), 1)
        tensor = torch.from_numpy(rows).to(self._device)
        token_id = self._id_token_id

        def hook(_module, args, output):  # the token-embedding lookup, with the id token replaced
            return replace_id_token(output, args[0], token_id, tensor)

        handle = encoder.get_input_embeddings().register_forward_hook(hook)
        try:
            with torch.inference_mode():
                return encoder(ids)[0]
        finally:
            handle.remove()

    # ------------------------------------------------------------------ generation

    @staticmethod
    def _embedding_of(request: LiveRequest) -> list[float]:
        vector = request.document_embedding if isinstance(request, LiveRequest) else request.identity_vector
        size = None if vector is None else len(vector)
        if size != ARCFACE_DIM:
            got = "no embedding" if vector is None else f"a {size}-d embedding"
            raise ValueError(f"identity {request.identity.identity_id}: {NEEDS_EMBEDDING} (got {got})")
        try:
            normalize_embedding(vector)
        except ValueError as error:
            raise ValueError(f"identity {request.identity.identity_id}: {error}") from error
        return [float(x) for x in vector]

    def _run(self, embeddings: Sequence[Sequence[float]], seeds: Sequence[int], width: int, height: int):
        import numpy as np
        import torch

        prompt_embeds = self.id_prompt_embeds(np.asarray(embeddings, dtype=np.float64))
        kwargs: dict[str, Any] = {}
        if self.guidance > 1.0:
            kwargs["negative_prompt_embeds"] = self._negative.repeat(len(seeds), 1, 1)
        generators = [torch.Generator(self._device).manual_seed(int(seed)) for seed in seeds]
        with torch.inference_mode():
            output = self._pipe(
                prompt_embeds=prompt_embeds,
                generator=generators,
                num_inference_steps=self.steps,
                guidance_scale=self.guidance,
                width=int(width),
                height=int(height),
                output_type="pil",
                **kwargs,
            )
        return [image.convert("RGB") for image in output.images]

    def generate(self, requests: Sequence[LiveRequest]) -> list[GeneratedImage]:
        """One live image per request, in request order, batch_size images per denoising call."""
        if not requests:
            return []
        embeddings = [self._embedding_of(request) for request in requests]  # fail before loading anything
        self.load()
        out: list[GeneratedImage] = []
        for start in range(0, len(requests), self.batch_size):
            chunk = list(range(start, min(start + self.batch_size, len(requests))))
            images = self._run(
                [embeddings[i] for i in chunk], [requests[i].seed for i in chunk], self.width, self.height
            )
            for i, image in zip(chunk, images, strict=True):
                request = requests[i]
                params = self._params(request.seed, embeddings[i], _source(request), *image.size)
                params["identity_seed"] = int(request.identity.seed)
                if isinstance(request, LiveRequest):
                    params["live_index"] = int(request.live_index)
                out.append(GeneratedImage(image=image, params=params))
        return out

    def regenerate(self, params: Mapping[str, Any]) -> Image.Image:
        """Re-make one image from its recorded params (embedding, seed, size); the model fields must match."""
        check_params_match(self, params, (*_MODEL_FIELDS, "steps", "guidance", "noise_device"))
        embedding = params.get("embedding")
        if embedding is None or len(embedding) != ARCFACE_DIM:
            raise ValueError(f"params hold no 512-d embedding: {NEEDS_EMBEDDING}")
        self.load()
        for key in ("revision", "base_revision"):
            if params.get(key) and self._resolved[key] and params[key] != self._resolved[key]:
                raise ValueError(f"params were made with {key} {params[key]}, this model is {self._resolved[key]}")
        return self._run([embedding], [int(params["seed"])], int(params["width"]), int(params["height"]))[0]

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **overrides: Any) -> Arc2FaceLiveGenerator:
        """A generator configured like the one that made params (execution options from overrides)."""
        lcm = params.get("lcm_lora")
        kwargs: dict[str, Any] = {
            "model_id": params["model_id"],
            "base_model_id": params["base_model_id"],
            "revision": params.get("revision") or params.get("requested_revision"),
            "base_revision": params.get("base_revision") or params.get("requested_base_revision"),
            "width": params["width"],
            "height": params["height"],
            "lcm_lora": lcm,
            "dtype": params.get("dtype", "float16"),
        }
        if lcm:
            kwargs["lcm_steps"] = params["steps"]
        else:
            kwargs["steps"] = params["steps"]
            kwargs["guidance"] = params["guidance"]
        if "noise_device" in params and "device" not in overrides:
            kwargs["device"] = params["noise_device"]
        kwargs.update(overrides)
        return cls(**kwargs)


class Arc2FaceDocumentGenerator(Arc2FaceLiveGenerator):
    """Documents with Arc2Face (identity_source: embeddings): each identity's sampled 512-d vector, rendered."""

    vector_space = "FoivosPar/Arc2Face:arcface.onnx"  # its ID embedder: the space identity vectors are sampled in
    vector_dim = ARCFACE_DIM


def _source(request: LiveRequest) -> dict[str, Any]:
    """Where the embedding came from: the request's document image (path and, when readable, its sha256)."""
    if not isinstance(request, LiveRequest):  # a document: the identity's vector from its identity_vectors table
        return {"identity_id": request.identity.identity_id, "identity_vector": "identity_vectors"}
    path = Path(request.document_path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return {"identity_id": request.identity.identity_id, "document_path": str(path), "document_sha256": digest}
