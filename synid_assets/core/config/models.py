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
    "BooBooWu/Vec2Face": "MIT (model card); trained on a WebFace4M subset (research-only terms)",
    "BooBooWu/Vec2Face_plus": "no licence stated (github.com/HaiyuWu/Vec2Face_plus has no LICENSE; see the model "
    "card); trained on a WebFace4M subset (research-only terms)",
    "fdbtrs/IDiff-Face": "CC BY-NC-SA 4.0 (non-commercial; github.com/fdbtrs/IDiff-Face LICENSE)",
    "Tencent/TFace": "UIFace: Apache-2.0 (github.com/Tencent/TFace License.txt; the weights state no other terms); "
                     "trained on CASIA-WebFace (research use)",
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "CreativeML OpenRAIL-M",
    "latent-consistency/lcm-lora-sdv1-5": "see model card",
}

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
    """Every model a profile's backends load, as each backend class declares them, in profile order."""
    from synid_assets.core.config.registry import backend_class, profile_sections, resolved_options, section_options

    refs: list[ModelRef] = []
    for role, kind, section in profile_sections(profile):
        cls = backend_class(kind, section["backend"])
        for need in cls.required_models(resolved_options(cls, section_options(kind, section))):
            part_role = f"{role}.{need.part}" if need.part else role
            refs.append(ModelRef(part_role, need.source, need.revision, need.files, need.license))
    return refs


def missing_local_files(ref: ModelRef) -> list[str]:
    """The files a local model directory must hold (its `allow_patterns`, globs allowed) that it does not."""
    root = Path(ref.repo_id).expanduser()
    if not ref.is_local or not ref.allow_patterns:
        return []
    return [pattern for pattern in ref.allow_patterns if not (root.is_dir() and any(root.glob(pattern)))]


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
            missing = missing_local_files(ref)
            if ok and missing:
                results.append((ref, False, f"{path} lacks {', '.join(missing)} (fetch by hand: see the profile)"))
                continue
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
        if ref.is_local:  # local models (e.g. Google-Drive-only weights) are fetched by hand: say what is missing
            missing = missing_local_files(ref)
            where = str(Path(ref.repo_id).expanduser())
            done.append((ref, f"{where} (MISSING, fetch by hand: {', '.join(missing)})" if missing else where))
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
