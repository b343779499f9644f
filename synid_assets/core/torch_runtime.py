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
