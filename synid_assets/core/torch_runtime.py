"""Small runtime facts shared by the torch backends: which device, which noise device, which hub commit."""

from __future__ import annotations

import re
from pathlib import Path

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; anything else is kept as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def noise_device(resolved: str | None, configured: str) -> str:
    """Device type of per-image noise generators: CPU and CUDA generators give different noise for a seed."""
    return (resolved or resolve_device(configured)).split(":")[0]


def snapshot_commit(model_dir: Path) -> str | None:
    """The commit of a Hugging Face cache snapshot dir (`.../snapshots/<40 hex>`), None for other dirs."""
    model_dir = Path(model_dir)
    return model_dir.name if model_dir.parent.name == "snapshots" and _COMMIT.match(model_dir.name) else None


def looks_like_path(model_id: str) -> bool:
    """Hub ids are 'name' or 'owner/name'; anything else (absolute, ./, ~, deeper paths) is a local directory."""
    return model_id.startswith(("/", ".", "~")) or model_id.count("/") > 1 or "\\" in model_id


def diffusers_model_dir(
    pipeline_class: type, label: str, model_id: str, revision: str | None, cache_dir: str | None,
    local_files_only: bool, hint: str,
) -> Path:
    """A local diffusers pipeline directory: the given one, or the hub snapshot (downloaded when allowed).

    Every way of not finding it raises ModelLoadError naming the model, with `hint` on how to fetch it.
    """
    from synid_assets.core.interfaces import ModelLoadError

    local = Path(model_id).expanduser()
    if local.is_dir():
        if not (local / "model_index.json").is_file():
            raise ModelLoadError(
                f"{label} model directory {str(local)!r} has no model_index.json: it is not a diffusers pipeline "
                f"directory. {hint}"
            )
        return local.resolve()
    if looks_like_path(model_id) or local.exists():
        raise ModelLoadError(f"{label} model directory {model_id!r} does not exist. {hint}")
    try:
        folder = pipeline_class.download(
            model_id, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
        )
    except Exception as error:  # hub errors (gated, not found, offline, no token) are all load failures here
        where = "in the local Hugging Face cache" if local_files_only else "on the Hugging Face hub"
        raise ModelLoadError(
            f"{label} model {model_id!r} (revision {revision or 'main'}) could not be found {where}: "
            f"{type(error).__name__}: {error}. {hint}"
        ) from error
    return Path(folder)
