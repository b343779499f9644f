"""The FLUX.1 Kontext live generator: instruction edits of the document image that keep the person's identity.

diffusers' FluxKontextPipeline edits an input image by an instruction. Each live image's instruction is composed
from five configurable lists (expression, head pose, scene, lighting, camera), one option of each drawn from the
live request's seed (`rng_for(seed, "kontext")`), followed by an explicit identity clause ("Keep the same person,
same identity, same facial features."), as BFL's Kontext prompting guide advises for edits of people.

Size: Kontext is trained on a fixed set of resolutions (diffusers' PREFERRED_KONTEXT_RESOLUTIONS, about one
megapixel). Without width/height the output takes the preferred resolution closest to the document's aspect ratio
(what the pipeline itself would pick); with them, the output has exactly that size. In both cases the document is
resized here (Lanczos) to the output size and given to the pipeline at that size, so every image is made at a
recorded size from a recorded file (path and sha256 in its params).

Each image's noise comes from its own `torch.Generator(device).manual_seed(request.seed)`. torch and diffusers are
imported only when the model is loaded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synid_assets.core.analysis.images import read_image
from synid_assets.core.config.models import license_of
from synid_assets.core.config.requirements import FLUX_DIFFUSERS_FILES, BackendRequirements, ModelNeed
from synid_assets.core.dataset.seeds import rng_for
from synid_assets.core.generation.regeneration import check_params_match
from synid_assets.core.generation.torch_runtime import (
    check_offload,
    diffusers_model_dir,
    load_pipeline,
    noise_device,
    place_pipeline,
    resolve_device,
    snapshot_commit,
)
from synid_assets.core.generation.types import GeneratedImage, LiveRequest

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

DTYPES = ("bfloat16", "float16", "float32")
CATEGORIES = ("expression", "pose", "scene", "lighting", "camera")
IDENTITY_CLAUSE = "Keep the same person, same identity, same facial features."
# Each option completes "Show this person ...".
DEFAULT_LISTS: dict[str, tuple[str, ...]] = {
    "expression": ("smiling", "with an open mouth", "with raised eyebrows", "with eyes closed"),
    "pose": (
        "with the head turned to the left",
        "with the head turned to the right",
        "with the head tilted",
        "looking up",
        "looking down",
    ),
    "scene": ("indoors", "outdoors", "in an airport", "in an office"),
    "lighting": ("in harsh side light", "in dim light"),
    "camera": ("as a webcam capture", "as a phone photo", "with motion blur"),
}
_MODEL_FIELDS = ("model_id", "dtype")


def _fetch_hint(model_id: str) -> str:
    return (
        f"Fetch it first with `synid models download PROFILE` (the profile naming {model_id!r}); FLUX.1-Kontext-dev is "
        "gated: accept its license on huggingface.co and set HF_TOKEN. Or set model_id to a local diffusers directory."
    )


def compose_instruction(rng: np.random.Generator, lists: Mapping[str, Sequence[str]]) -> tuple[str, dict]:
    """An edit instruction and its choices: one option per category (in CATEGORIES order), then the identity clause.

    A category missing from lists or with an empty list is left out (its choice is None). The draws are one
    `rng.integers(len(options))` per non-empty category, in CATEGORIES order, so the same rng state gives the
    same instruction.
    """
    choices: dict[str, str | None] = {}
    for category in CATEGORIES:
        options = list(lists.get(category) or ())
        choices[category] = options[int(rng.integers(len(options)))] if options else None
    parts = [choice for choice in choices.values() if choice]
    edit = f"Show this person {', '.join(parts)}. " if parts else ""
    return edit + IDENTITY_CLAUSE, choices


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class KontextLiveGenerator:
    """Live images as FLUX.1 Kontext edits of the identity's document image."""

    name = "kontext"
    version = "1"

    # What it needs (see core/config/requirements.py): a GPU when one is visible (device="auto"), else the CPU.
    requirements = BackendRequirements(device="any")

    @classmethod
    def required_models(cls, options: Mapping[str, Any]) -> list[ModelNeed]:
        """FLUX.1 Kontext's diffusers folders."""
        model_id = options["model_id"]
        return [ModelNeed(model_id, options["revision"], FLUX_DIFFUSERS_FILES, license_of(model_id))]

    def __init__(
        self,
        model_id: str = "black-forest-labs/FLUX.1-Kontext-dev",
        revision: str | None = None,
        steps: int = 28,
        guidance: float = 2.5,
        width: int | None = None,
        height: int | None = None,
        dtype: str = "bfloat16",
        device: str = "auto",
        batch_size: int = 1,
        offload: str = "none",
        expressions: list[str] | None = None,
        poses: list[str] | None = None,
        scenes: list[str] | None = None,
        lighting: list[str] | None = None,
        cameras: list[str] | None = None,
        cache_dir: str | None = None,
        local_files_only: bool = False,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {dtype!r}")
        check_offload(offload, device)
        if (width is None) != (height is None):
            raise ValueError("give both width and height, or neither (the document's aspect ratio picks the size)")
        if width is not None and (width % 16 or height % 16 or width <= 0 or height <= 0):
            raise ValueError(f"width and height must be positive multiples of 16, not {width}x{height}")
        if steps < 1 or batch_size < 1:
            raise ValueError("steps and batch_size must be at least 1")
        self.model_id = model_id
        self.revision = revision
        self.steps = int(steps)
        self.guidance = float(guidance)
        self.width = None if width is None else int(width)
        self.height = None if height is None else int(height)
        self.dtype = dtype
        self.device = device
        self.batch_size = int(batch_size)
        self.offload = offload
        given = {"expression": expressions, "pose": poses, "scene": scenes, "lighting": lighting, "camera": cameras}
        self.lists: dict[str, list[str]] = {
            category: list(DEFAULT_LISTS[category] if options is None else options)
            for category, options in given.items()
        }
        self.cache_dir = cache_dir
        self.local_files_only = bool(local_files_only)
        self._pipe: Any = None
        self._device: str | None = None
        self._resolved_revision: str | None = None
        self._versions: dict[str, str] = {}

    # ------------------------------------------------------------------ settings and params

    @property
    def noise_device(self) -> str:
        return noise_device(self._device, self.device)

    @property
    def settings(self) -> dict[str, Any]:
        """Every setting that changes an image's content (execution options are left out)."""
        return {
            "model_id": self.model_id,
            "revision": self.revision,
            "steps": self.steps,
            "guidance": self.guidance,
            "width": self.width,
            "height": self.height,
            "dtype": self.dtype,
            "lists": {category: list(options) for category, options in self.lists.items()},
            "noise_device": self.noise_device,
        }

    def instruction_for(self, seed: int) -> tuple[str, dict]:
        """The instruction and choices of the live image with this seed."""
        return compose_instruction(rng_for(seed, "kontext"), self.lists)

    def output_size(self, document_size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) of the output for a document of this size."""
        if self.width is not None and self.height is not None:
            return self.width, self.height
        from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS

        aspect = document_size[0] / document_size[1]
        _, width, height = min((abs(aspect - w / h), w, h) for w, h in PREFERRED_KONTEXT_RESOLUTIONS)
        return width, height

    # ------------------------------------------------------------------ loading

    @property
    def loaded(self) -> bool:
        return self._pipe is not None

    def _resolve_model_dir(self) -> Path:
        """A local diffusers directory of the model: the given one, or the hub snapshot (downloaded if allowed)."""
        from diffusers import FluxKontextPipeline

        return diffusers_model_dir(
            FluxKontextPipeline, "Kontext", self.model_id, self.revision, self.cache_dir, self.local_files_only,
            _fetch_hint(self.model_id),
        )

    def load(self) -> None:
        if self._pipe is not None:
            return
        import diffusers
        import torch
        from diffusers import FluxKontextPipeline

        device = resolve_device(self.device)
        model_dir = self._resolve_model_dir()
        pipe = load_pipeline(
            FluxKontextPipeline, "Kontext", self.model_id, model_dir, getattr(torch, self.dtype),
            _fetch_hint(self.model_id),
        )  # fmt: skip
        place_pipeline(pipe, self.offload, device)
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe
        self._device = device
        self._resolved_revision = snapshot_commit(model_dir)
        self._versions = {"diffusers": diffusers.__version__, "torch": torch.__version__}

    def unload(self) -> None:
        self._pipe = None
        self._device = None

    # ------------------------------------------------------------------ generation

    def _run(
        self,
        documents: Sequence[Image.Image],
        instructions: Sequence[str],
        seeds: Sequence[int],
        size: tuple[int, int],
        steps: int,
        guidance: float,
    ) -> list[Image.Image]:
        import torch
        from PIL import Image

        width, height = size
        conditions = [doc.convert("RGB").resize((width, height), Image.Resampling.LANCZOS) for doc in documents]
        generators = [torch.Generator(self._device).manual_seed(int(seed)) for seed in seeds]
        with torch.inference_mode():
            output = self._pipe(
                image=conditions,
                prompt=list(instructions),
                generator=generators,
                guidance_scale=float(guidance),
                num_inference_steps=int(steps),
                width=width,
                height=height,
                max_area=width * height,  # the pipeline rescales width x height to max_area: keep them
                _auto_resize=False,  # the document is already at the output size
                output_type="pil",
            )
        return [image.convert("RGB") for image in output.images]

    def _params(self, seed: int, instruction: str, choices: dict, path: Path, digest: str, size: tuple) -> dict:
        return {
            "generator": self.name,
            "version": self.version,
            "model_id": self.model_id,
            "revision": self._resolved_revision,
            "requested_revision": self.revision,
            "license": license_of(self.model_id),
            "seed": int(seed),
            "steps": self.steps,
            "guidance": self.guidance,
            "width": int(size[0]),
            "height": int(size[1]),
            "dtype": self.dtype,
            "scheduler": type(self._pipe.scheduler).__name__,
            "instruction": instruction,
            "choices": choices,
            "document_path": str(path),
            "document_sha256": digest,
            "noise_device": self.noise_device,
            "diffusers_version": self._versions["diffusers"],
            "torch_version": self._versions["torch"],
            "execution": {"device": self._device, "batch_size": self.batch_size, "offload": self.offload},
        }

    def generate(self, requests: Sequence[LiveRequest]) -> list[GeneratedImage]:
        """One live image per request, in request order; requests of the same output size share pipeline calls."""
        if not requests:
            return []
        documents, digests = [], []
        for request in requests:
            path = Path(request.document_path)
            if not path.is_file():
                raise FileNotFoundError(f"identity {request.identity.identity_id}: document image {path} is missing")
            documents.append(read_image(path))  # upright RGB; an oversized file is one ImageReadError line
            digests.append(_sha256(path))
        self.load()
        drawn = [self.instruction_for(request.seed) for request in requests]
        sizes = [self.output_size(doc.size) for doc in documents]
        groups: dict[tuple[int, int], list[int]] = {}
        for index, size in enumerate(sizes):
            groups.setdefault(size, []).append(index)
        out: list[GeneratedImage | None] = [None] * len(requests)
        for size, indices in groups.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                images = self._run(
                    [documents[i] for i in chunk],
                    [drawn[i][0] for i in chunk],
                    [requests[i].seed for i in chunk],
                    size,
                    self.steps,
                    self.guidance,
                )
                for i, image in zip(chunk, images, strict=True):
                    request = requests[i]
                    params = self._params(request.seed, *drawn[i], Path(request.document_path), digests[i], image.size)
                    params["identity_seed"] = int(request.identity.seed)
                    params["live_index"] = int(request.live_index)
                    out[i] = GeneratedImage(image=image, params=params)
        return [item for item in out if item is not None]

    def regenerate(self, params: Mapping[str, Any]) -> Image.Image:
        """Re-make one image from its params: the recorded instruction, seed and size, on the same document file."""
        check_params_match(self, params, (*_MODEL_FIELDS, "noise_device"))
        path = Path(params["document_path"])
        if not path.is_file():
            raise FileNotFoundError(f"document image {path} is missing")
        if params.get("document_sha256") and _sha256(path) != params["document_sha256"]:
            raise ValueError(f"document image {path} changed since the live image was made (sha256 differs)")
        self.load()
        if params.get("revision") and self._resolved_revision and params["revision"] != self._resolved_revision:
            raise ValueError(f"params were made with revision {params['revision']}, this is {self._resolved_revision}")
        document = read_image(path)
        size = (int(params["width"]), int(params["height"]))
        steps = int(params.get("steps", self.steps))  # the recorded sampling settings, not this generator's
        guidance = float(params.get("guidance", self.guidance))
        return self._run([document], [params["instruction"]], [int(params["seed"])], size, steps, guidance)[0]

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **overrides: Any) -> KontextLiveGenerator:
        kwargs: dict[str, Any] = {
            "model_id": params["model_id"],
            "revision": params.get("revision") or params.get("requested_revision"),
            "steps": params["steps"],
            "guidance": params["guidance"],
            "width": params["width"],
            "height": params["height"],
            "dtype": params.get("dtype", "bfloat16"),
        }
        if "noise_device" in params and "device" not in overrides:
            kwargs["device"] = params["noise_device"]
        kwargs.update(overrides)
        return cls(**kwargs)
