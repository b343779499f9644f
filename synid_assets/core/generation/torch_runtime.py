"""Small runtime facts shared by the torch backends: which device, which noise device, which hub commit."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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
    from synid_assets.core.errors import ModelLoadError

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


OFFLOAD_MODES = ("none", "model", "sequential")


def check_offload(offload: str, device: str) -> None:
    """Reject an unknown offload mode, or offload on a CPU device (it moves modules to an accelerator)."""
    if offload not in OFFLOAD_MODES:
        raise ValueError(f"offload must be one of {OFFLOAD_MODES}, not {offload!r}")
    if offload != "none" and device.split(":")[0] == "cpu":
        raise ValueError("offload moves modules between the CPU and an accelerator; it needs device cuda or auto")


def load_pipeline(pipeline_class: type, label: str, model_id: str, model_dir: Path, dtype: Any, hint: str) -> Any:
    """`pipeline_class.from_pretrained(model_dir)`; any failure is a ModelLoadError naming the model and the dir."""
    from synid_assets.core.errors import ModelLoadError

    try:
        return pipeline_class.from_pretrained(model_dir, dtype=dtype)
    except Exception as error:
        raise ModelLoadError(
            f"{label} model {model_id!r} could not be loaded from {str(model_dir)!r}: "
            f"{type(error).__name__}: {error}. {hint}"
        ) from error


def load_lora(
    pipe: Any, source: str, adapter_name: str, failure: str, hint: str, weight_name: str | None = None,
    cache_dir: str | None = None, local_files_only: bool = False,
) -> None:  # fmt: skip
    """`pipe.load_lora_weights` from a hub id or local dir; a failure is a ModelLoadError that starts with `failure`."""
    from synid_assets.core.errors import ModelLoadError

    kwargs: dict[str, Any] = {"weight_name": weight_name} if weight_name else {}
    if cache_dir:
        kwargs["cache_dir"] = cache_dir
    if local_files_only:
        kwargs["local_files_only"] = True
    try:
        pipe.load_lora_weights(source, adapter_name=adapter_name, **kwargs)
    except Exception as error:
        raise ModelLoadError(f"{failure}: {type(error).__name__}: {error}. {hint}") from error


def place_pipeline(pipe: Any, offload: str, device: str) -> None:
    """Put a diffusers pipeline on `device`, whole or (offload) one model or one layer at a time."""
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
