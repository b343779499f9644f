"""Model management: which models a resource profile needs, fetching them, and checking they are there.

Tokens come only from the HF_TOKEN environment variable (huggingface_hub's own login store also works);
they are never printed, logged or written anywhere by SynID.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Licences of the default models, recorded in the manifest and stated in the README.
KNOWN_LICENSES: dict[str, str] = {
    "black-forest-labs/FLUX.1-dev": "FLUX.1 [dev] Non-Commercial License",
    "black-forest-labs/FLUX.1-schnell": "Apache-2.0",
    "black-forest-labs/FLUX.1-Kontext-dev": "FLUX.1 [dev] Non-Commercial License",
    "Qwen/Qwen2.5-7B-Instruct": "Apache-2.0",
    "Qwen/Qwen2.5-32B-Instruct": "Apache-2.0",
    "Raul2718/CFD-FLUX.1-dev-LoRA": "see model card (trained on the Chicago Face Database)",
    "FoivosPar/Arc2Face": "MIT (model card); trained on CC-BY-NC-SA-4.0 data",
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "CreativeML OpenRAIL-M",
    "latent-consistency/lcm-lora-sdv1-5": "see model card",
}

# Only the diffusers-format folders of a FLUX repo: the root also holds a 23 GB single-file checkpoint.
_DIFFUSERS_PATTERNS = [
    "model_index.json",
    "scheduler/*",
    "text_encoder/*",
    "text_encoder_2/*",
    "tokenizer/*",
    "tokenizer_2/*",
    "transformer/*",
    "vae/*",
]
_CAUSAL_LM_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja"]


@dataclass(frozen=True)
class ModelRef:
    role: str  # which profile section uses it
    repo_id: str  # a Hugging Face repo id, or a local directory
    revision: str | None
    allow_patterns: tuple[str, ...] | None
    license: str

    @property
    def is_local(self) -> bool:
        path = Path(self.repo_id).expanduser()
        return path.is_absolute() or path.exists() or self.repo_id.startswith((".", "~"))


# Model families recognised in any id or directory name (fine-tunes, local copies), checked in order.
_FAMILY_LICENSES = (
    ("flux.1-schnell", "Apache-2.0"),
    ("flux.1-kontext-dev", "FLUX.1 [dev] Non-Commercial License"),
    ("flux.1-dev", "FLUX.1 [dev] Non-Commercial License"),
)


def license_of(repo_id: str) -> str:
    """The licence of a model by hub id, else by the model family its id or directory name contains."""
    if repo_id in KNOWN_LICENSES:
        return KNOWN_LICENSES[repo_id]
    key = repo_id.lower()
    return next((text for family, text in _FAMILY_LICENSES if family in key), "see model card")


def profile_models(profile: dict[str, Any]) -> list[ModelRef]:
    """Every downloadable model a profile names, per backend."""
    refs: list[ModelRef] = []
    writer = profile["prompt_writer"]
    if writer["backend"] == "llm":
        model = writer.get("model_id", "Qwen/Qwen2.5-7B-Instruct")
        refs.append(
            ModelRef("prompt_writer", model, writer.get("revision"), tuple(_CAUSAL_LM_PATTERNS), license_of(model))
        )
    documents = profile["document_generator"]
    if documents["backend"] == "flux":
        model = documents.get("model_id", "black-forest-labs/FLUX.1-dev")
        patterns = tuple(_DIFFUSERS_PATTERNS)
        refs.append(ModelRef("document_generator", model, documents.get("revision"), patterns, license_of(model)))
        if documents.get("lora"):
            weight = documents.get("lora_weight_name")
            refs.append(
                ModelRef(
                    "document_generator.lora",
                    documents["lora"],
                    documents.get("lora_revision"),
                    (weight,) if weight else ("*.safetensors",),
                    license_of(documents["lora"]),
                )
            )
    for number, entry in enumerate(_live_entries(profile["live_generator"])):
        role = f"live_generator[{number}]"
        if entry["backend"] == "arc2face":
            model = entry.get("model_id", "FoivosPar/Arc2Face")
            patterns = ("arc2face/*", "encoder/*", "arcface.onnx")  # arcface.onnx: its ID embedder
            refs.append(ModelRef(role, model, entry.get("revision"), patterns, license_of(model)))
            base = entry.get("base_model_id", "stable-diffusion-v1-5/stable-diffusion-v1-5")
            patterns = ("vae/*", "tokenizer/*", "scheduler/*", "model_index.json")
            refs.append(ModelRef(f"{role}.base", base, entry.get("base_revision"), patterns, license_of(base)))
            if entry.get("lcm_lora"):
                lcm = entry["lcm_lora"]
                refs.append(ModelRef(f"{role}.lcm_lora", lcm, None, ("*.safetensors",), license_of(lcm)))
        elif entry["backend"] == "kontext":
            model = entry.get("model_id", "black-forest-labs/FLUX.1-Kontext-dev")
            patterns = tuple(_DIFFUSERS_PATTERNS)
            refs.append(ModelRef(role, model, entry.get("revision"), patterns, license_of(model)))
    faces = profile["face_analyzer"]
    for key in ("model_dir", "detector_model_dir", "checkpoint"):
        if faces.get(key) and faces["backend"] != "dlib":
            # InsightFace packs and FRS checkpoints are not on the hub in a standard layout: local paths.
            path = str(Path(faces[key]).expanduser())
            refs.append(ModelRef(f"face_analyzer.{key}", path, None, None, "see the model's source"))
    return refs


def _live_entries(section: dict[str, Any]) -> list[dict[str, Any]]:
    return list(section.get("generators") or [section])


def _token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def check_models(refs: list[ModelRef], cache_dir: str | None = None) -> list[tuple[ModelRef, bool, str]]:
    """(model, present, where or why not) for each model, without any network access."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    results = []
    for ref in refs:
        if ref.is_local:
            path = Path(ref.repo_id).expanduser()
            ok = path.is_file() or (path.is_dir() and any(path.iterdir()))
            results.append((ref, ok, str(path) if ok else f"local path {path} is missing or empty"))
            continue
        try:
            path = snapshot_download(
                ref.repo_id,
                revision=ref.revision,
                cache_dir=cache_dir,
                allow_patterns=list(ref.allow_patterns) if ref.allow_patterns else None,
                local_files_only=True,
            )
            results.append((ref, True, path))
        except (LocalEntryNotFoundError, FileNotFoundError, OSError) as exc:
            results.append((ref, False, f"not in the cache ({type(exc).__name__})"))
    return results


def download_models(refs: list[ModelRef], cache_dir: str | None = None) -> list[tuple[ModelRef, str]]:
    """Fetch each hub model (only the files its backend loads) into the Hugging Face cache or cache_dir."""
    from huggingface_hub import snapshot_download

    done = []
    for ref in refs:
        if ref.is_local:
            done.append((ref, str(Path(ref.repo_id).expanduser())))
            continue
        path = snapshot_download(
            ref.repo_id,
            revision=ref.revision,
            cache_dir=cache_dir,
            allow_patterns=list(ref.allow_patterns) if ref.allow_patterns else None,
            token=_token(),
        )
        done.append((ref, path))
    return done
