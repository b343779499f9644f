"""The FLUX document generator: FLUXSynID's passport-style document images from prompts with diffusers' FluxPipeline.

Document framing (neck up, grey clothing, white background) comes from the prompt, as in FLUXSynID. Each identity's
guidance is drawn uniformly from [guidance_min, guidance_max] from the identity seed and rounded to 0.1 (FLUXSynID's
semantics); each image's initial noise comes from its own `torch.Generator(device).manual_seed(request.seed)`, so an
image depends only on its own prompt, seed and guidance, not on what else is in its batch (up to floating-point
rounding of batched kernels on GPUs).

torch and diffusers are imported only when the model is loaded, so importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synid_assets.core.config.models import license_of
from synid_assets.core.config.requirements import FLUX_DIFFUSERS_FILES, LORA_FILES, BackendRequirements, ModelNeed
from synid_assets.core.dataset.seeds import rng_for
from synid_assets.core.errors import ModelLoadError
from synid_assets.core.generation.regeneration import check_generator, check_params_match
from synid_assets.core.generation.torch_runtime import (
    check_offload,
    diffusers_model_dir,
    load_lora,
    load_pipeline,
    noise_device,
    place_pipeline,
    resolve_device,
    snapshot_commit,
)
from synid_assets.core.generation.types import DocumentRequest, GeneratedImage

if TYPE_CHECKING:
    from PIL import Image

DTYPES = ("bfloat16", "float16", "float32")
STORAGE_DTYPES = ("float8_e4m3fn", "float8_e5m2", "bfloat16", "float16")

# Settings that must match between a generator and the params of an image it is asked to regenerate.
_MODEL_FIELDS = (
    "model_id",
    "lora",
    "lora_weight_name",
    "lora_scale",
    "dtype",
    "transformer_storage_dtype",
    "max_sequence_length",
)


def _fetch_hint(model_id: str) -> str:
    return (
        f"Fetch it first with `synid models download PROFILE` (the profile naming {model_id!r}); gated models such "
        "as FLUX.1-dev need their license accepted on huggingface.co and HF_TOKEN set. Or set model_id to a local "
        "diffusers directory of the model."
    )


class FluxDocumentGenerator:
    """Document images with FLUX (FLUX.1-dev by default, optionally with a LoRA), batched across identities."""

    name = "flux"
    version = "1"

    # What it needs (see core/config/requirements.py): a GPU when one is visible (device="auto"), else the CPU.
    requirements = BackendRequirements(device="any")

    @classmethod
    def required_models(cls, options: Mapping[str, Any]) -> list[ModelNeed]:
        """FLUX's diffusers folders, and the LoRA's weight file (its safetensors files when none is named)."""
        model_id, lora = options["model_id"], options["lora"]
        needs = [ModelNeed(model_id, options["revision"], FLUX_DIFFUSERS_FILES, license_of(model_id))]
        if lora:
            weight = options["lora_weight_name"]
            needs.append(ModelNeed(lora, None, (weight,) if weight else LORA_FILES, license_of(lora), part="lora"))
        return needs

    def __init__(
        self,
        model_id: str = "black-forest-labs/FLUX.1-dev",
        revision: str | None = None,
        lora: str | None = None,
        lora_weight_name: str | None = None,
        lora_scale: float = 1.0,
        width: int = 1024,
        height: int = 1024,
        steps: int = 20,
        guidance_min: float = 1.7,
        guidance_max: float = 2.5,
        dtype: str = "bfloat16",
        device: str = "auto",
        batch_size: int = 1,
        offload: str = "none",
        transformer_storage_dtype: str | None = None,
        compile: bool = False,
        attention_backend: str | None = None,
        max_sequence_length: int = 512,
        cache_dir: str | None = None,
        local_files_only: bool = False,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {dtype!r}")
        if transformer_storage_dtype is not None and transformer_storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"transformer_storage_dtype must be one of {STORAGE_DTYPES} or None")
        check_offload(offload, device)
        if width % 16 or height % 16 or width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive multiples of 16, not {width}x{height}")
        if steps < 1 or batch_size < 1:
            raise ValueError("steps and batch_size must be at least 1")
        if not guidance_min <= guidance_max:
            raise ValueError(f"guidance_min {guidance_min} exceeds guidance_max {guidance_max}")
        if not 1 <= max_sequence_length <= 512:
            raise ValueError("max_sequence_length must be in 1..512 (FLUX's T5 limit)")
        self.model_id = model_id
        self.revision = revision
        self.lora = lora
        self.lora_weight_name = lora_weight_name
        self.lora_scale = float(lora_scale)
        self.width = int(width)
        self.height = int(height)
        self.steps = int(steps)
        self.guidance_min = float(guidance_min)
        self.guidance_max = float(guidance_max)
        self.dtype = dtype
        self.device = device
        self.batch_size = int(batch_size)
        self.offload = offload
        self.transformer_storage_dtype = transformer_storage_dtype
        self.compile = bool(compile)
        self.attention_backend = attention_backend
        self.max_sequence_length = int(max_sequence_length)
        self.cache_dir = cache_dir
        self.local_files_only = bool(local_files_only)
        self._pipe: Any = None
        self._device: str | None = None  # resolved at load
        self._resolved_revision: str | None = None
        self._versions: dict[str, str] = {}

    # ------------------------------------------------------------------ settings and params

    @property
    def noise_device(self) -> str:
        """The device type of the per-image noise generators: CPU and CUDA generators give different noise."""
        return noise_device(self._device, self.device)

    @property
    def settings(self) -> dict[str, Any]:
        """Every setting that changes an image's content (a cache key of finished images).

        Execution options (batch_size, offload, compile, attention_backend, cache_dir, local_files_only) are left
        out: they change how the same computation runs, at most in floating-point rounding on accelerators.
        """
        return {
            "model_id": self.model_id,
            "revision": self.revision,
            "lora": self.lora,
            "lora_weight_name": self.lora_weight_name,
            "lora_scale": self.lora_scale,
            "width": self.width,
            "height": self.height,
            "steps": self.steps,
            "guidance_min": self.guidance_min,
            "guidance_max": self.guidance_max,
            "dtype": self.dtype,
            "transformer_storage_dtype": self.transformer_storage_dtype,
            "max_sequence_length": self.max_sequence_length,
            "noise_device": self.noise_device,
        }

    def guidance_for(self, identity_seed: int) -> float:
        """The identity's guidance: uniform in [guidance_min, guidance_max], rounded to 0.1 (as FLUXSynID does)."""
        value = rng_for(identity_seed, "guidance").uniform(self.guidance_min, self.guidance_max)
        return round(float(value), 1)

    def _params(self, prompt: str, seed: int, guidance: float, steps: int, width: int, height: int) -> dict:
        return {
            "generator": self.name,
            "version": self.version,
            "model_id": self.model_id,
            "revision": self._resolved_revision,
            "requested_revision": self.revision,
            "license": license_of(self.model_id),
            "lora": self.lora,
            "lora_weight_name": self.lora_weight_name,
            "lora_scale": self.lora_scale,
            "prompt": prompt,
            "seed": int(seed),
            "steps": int(steps),
            "guidance": float(guidance),
            "width": int(width),
            "height": int(height),
            "dtype": self.dtype,
            "transformer_storage_dtype": self.transformer_storage_dtype,
            "scheduler": type(self._pipe.scheduler).__name__,
            "max_sequence_length": self.max_sequence_length,
            "noise_device": self.noise_device,
            "diffusers_version": self._versions["diffusers"],
            "torch_version": self._versions["torch"],
            # How it ran (not part of the image's identity, kept for provenance).
            "execution": {
                "device": self._device,
                "batch_size": self.batch_size,
                "offload": self.offload,
                "compile": self.compile,
                "attention_backend": self.attention_backend,
            },
        }

    # ------------------------------------------------------------------ loading

    @property
    def loaded(self) -> bool:
        return self._pipe is not None

    def _resolve_model_dir(self) -> Path:
        """A local diffusers directory of the model: the given one, or the hub snapshot (downloaded if allowed)."""
        from diffusers import FluxPipeline

        return diffusers_model_dir(
            FluxPipeline, "FLUX", self.model_id, self.revision, self.cache_dir, self.local_files_only,
            _fetch_hint(self.model_id),
        )

    def load(self) -> None:
        """Load the pipeline once (no-op when loaded): weights, LoRA, offload, layerwise casting, attention, compile."""
        if self._pipe is not None:
            return
        import torch
        from diffusers import FluxPipeline

        resolve_device(self.device)  # a missing accelerator fails before tens of GB of weights are read
        model_dir = self._resolve_model_dir()
        pipe = load_pipeline(
            FluxPipeline, "FLUX", self.model_id, model_dir, getattr(torch, self.dtype), _fetch_hint(self.model_id)
        )
        self.use_pipeline(pipe, resolved_revision=snapshot_commit(model_dir))

    def use_pipeline(self, pipe: Any, resolved_revision: str | None = None) -> None:
        """Set up an already-built FluxPipeline with this generator's LoRA, memory, attention and compile settings.

        `load()` ends here with the pipeline it read; benchmarks pass full-size pipelines built in memory, so what
        they measure is exactly what a profile runs.
        """
        import diffusers
        import torch

        device = resolve_device(self.device)
        torch_dtype = getattr(torch, self.dtype)
        if self.lora:
            failure = (
                f"LoRA {self.lora!r} (weight file {self.lora_weight_name or 'default'}) could not be loaded into "
                f"{self.model_id!r}"
            )
            load_lora(
                pipe, self.lora, "synid", failure, _fetch_hint(self.lora), self.lora_weight_name, self.cache_dir,
                self.local_files_only,
            )  # fmt: skip
            pipe.set_adapters(["synid"], adapter_weights=[self.lora_scale])

        if self.transformer_storage_dtype:
            # Weights stored in a smaller dtype (e.g. float8) and upcast per layer: FLUX.1-dev on 24 GB cards.
            pipe.transformer.enable_layerwise_casting(
                storage_dtype=getattr(torch, self.transformer_storage_dtype), compute_dtype=torch_dtype
            )

        place_pipeline(pipe, self.offload, device)

        if self.attention_backend:
            if not hasattr(pipe.transformer, "set_attention_backend"):
                raise ModelLoadError(f"diffusers {diffusers.__version__} cannot select attention backends")
            try:
                pipe.transformer.set_attention_backend(self.attention_backend)
            except Exception as error:
                raise ModelLoadError(
                    f"attention backend {self.attention_backend!r} is not available here: {error}"
                ) from error

        if self.compile:
            # Regional compilation: the repeated transformer blocks compile once each kind, in seconds not minutes.
            if hasattr(pipe.transformer, "compile_repeated_blocks"):
                pipe.transformer.compile_repeated_blocks(fullgraph=True)
            else:
                pipe.transformer.compile(fullgraph=True)

        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe
        self._device = device
        self._resolved_revision = resolved_revision
        self._versions = {"diffusers": diffusers.__version__, "torch": torch.__version__}

    def unload(self) -> None:
        """Drop the pipeline (frees accelerator memory once nothing else references it)."""
        self._pipe = None
        self._device = None

    # ------------------------------------------------------------------ generation

    def _run(
        self, prompts: Sequence[str], seeds: Sequence[int], guidance: float, steps: int, width: int, height: int
    ) -> list[Image.Image]:
        import torch

        generators = [torch.Generator(self._device).manual_seed(int(seed)) for seed in seeds]
        with torch.inference_mode():
            output = self._pipe(
                prompt=list(prompts),
                generator=generators,
                guidance_scale=float(guidance),
                num_inference_steps=int(steps),
                width=int(width),
                height=int(height),
                max_sequence_length=self.max_sequence_length,
                output_type="pil",
            )
        return [image.convert("RGB") for image in output.images]

    def generate(self, requests: Sequence[DocumentRequest]) -> list[GeneratedImage]:
        """One document image per request, in request order.

        Requests are grouped by guidance (the pipeline takes one guidance value per call) and each group is chunked
        by batch_size, so identities of any batch share denoising calls.
        """
        if not requests:
            return []
        self.load()
        guidances = [self.guidance_for(request.identity.seed) for request in requests]
        groups: dict[float, list[int]] = {}
        for index, guidance in enumerate(guidances):
            groups.setdefault(guidance, []).append(index)
        out: list[GeneratedImage | None] = [None] * len(requests)
        for guidance, indices in groups.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                prompts = [requests[i].prompt for i in chunk]
                seeds = [requests[i].seed for i in chunk]
                images = self._run(prompts, seeds, guidance, self.steps, self.width, self.height)
                for i, image in zip(chunk, images, strict=True):
                    params = self._params(requests[i].prompt, requests[i].seed, guidance, self.steps, *image.size)
                    params["identity_seed"] = int(requests[i].identity.seed)
                    out[i] = GeneratedImage(image=image, params=params)
        return [item for item in out if item is not None]

    def regenerate(self, params: Mapping[str, Any]) -> Image.Image:
        """Re-make one image from its recorded params (prompt, seed, guidance, steps, width, height).

        The model fields of params (model_id, lora, lora_weight_name, lora_scale, dtype, transformer_storage_dtype,
        max_sequence_length, noise device, and the revision when both are known) must match this generator: build
        it with `FluxDocumentGenerator.from_params(params)` to get one that does.
        """
        check_generator(self, params)
        self.load()
        # The resolved revision is known only once loaded; a recorded one that differs makes other weights.
        revision_differs = bool(
            params.get("revision") and self._resolved_revision and params["revision"] != self._resolved_revision
        )
        check_params_match(self, params, (*_MODEL_FIELDS, "noise_device"), ("revision",) if revision_differs else ())
        images = self._run(
            [params["prompt"]],
            [int(params["seed"])],
            float(params["guidance"]),
            int(params.get("steps", self.steps)),
            int(params.get("width", self.width)),
            int(params.get("height", self.height)),
        )
        return images[0]

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **overrides: Any) -> FluxDocumentGenerator:
        """A generator configured like the one that made params (execution options from overrides)."""
        kwargs: dict[str, Any] = {
            "model_id": params["model_id"],
            "revision": params.get("revision") or params.get("requested_revision"),
            "lora": params.get("lora"),
            "lora_weight_name": params.get("lora_weight_name"),
            "lora_scale": params.get("lora_scale", 1.0),
            "width": params["width"],
            "height": params["height"],
            "steps": params["steps"],
            "dtype": params.get("dtype", "bfloat16"),
            "transformer_storage_dtype": params.get("transformer_storage_dtype"),
            "max_sequence_length": params.get("max_sequence_length", 512),
        }
        if "noise_device" in params and "device" not in overrides:
            kwargs["device"] = params["noise_device"]
        kwargs.update(overrides)
        return cls(**kwargs)
