"""What a backend declares on its own class: the device it runs on and the models it loads, with their licences.

Every backend class carries

    requirements = BackendRequirements(device="cpu" | "cuda" | "any")

    @classmethod
    def required_models(cls, options: Mapping[str, Any]) -> list[ModelNeed]: ...

Its options are its `__init__` parameters (the registry reads them from the signature); `required_models` gets
them with the `__init__` defaults filled in, so a default model id is written once, in the signature. The registry,
`synid models` and the Dagster resources read only these declarations: no list of backend names anywhere else.

This module is imported by every backend module, so it stays free of heavy imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

# cpu: runs embedded on the CPU, cheap to hold, so it stays loaded for the life of the process.
# cuda: needs a GPU. any: a GPU when one is visible, else the CPU.
# Backends that may hold a GPU are released after each step, so the next step's model has the memory.
Device = Literal["cpu", "cuda", "any"]
DEVICES: tuple[str, ...] = ("cpu", "cuda", "any")

# Hub layouts several backends load; only the files their loaders read, never a repo's whole tree.
# The diffusers-format folders of a FLUX repo: the root of FLUX.1-dev also holds a 23 GB single-file checkpoint.
FLUX_DIFFUSERS_FILES: tuple[str, ...] = (
    "model_index.json",
    "scheduler/*",
    "text_encoder/*",
    "text_encoder_2/*",
    "tokenizer/*",
    "tokenizer_2/*",
    "transformer/*",
    "vae/*",
)
CAUSAL_LM_FILES: tuple[str, ...] = ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja")
LORA_FILES: tuple[str, ...] = ("*.safetensors",)
# Local model packs and checkpoints are not on the hub in a standard layout: their source states the licence.
LOCAL_MODEL_LICENSE = "see the model's source"


@dataclass(frozen=True)
class ModelNeed:
    """One model a backend loads: a hub repo id or a local path, the files it reads and the model's licence."""

    source: str  # a Hugging Face repo id, or a local file or directory
    revision: str | None
    files: tuple[str, ...] | None  # hub allow-patterns; None: the whole repo or path
    license: str
    part: str = ""  # which of the backend's models: "" the main one, else e.g. "lora", "base"; appended to the role


@dataclass(frozen=True)
class BackendRequirements:
    """The device a backend runs on; declared on the backend class as `requirements`."""

    device: Device

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"backend device must be one of {DEVICES}, not {self.device!r}")

    @property
    def stays_loaded(self) -> bool:
        """Embedded CPU backends are kept for the life of the process; the others are released after each step."""
        return self.device == "cpu"


@runtime_checkable
class DeclaresRequirements(Protocol):
    """What the registry asks of every backend class, besides its kind's protocol."""

    requirements: BackendRequirements

    @classmethod
    def required_models(cls, options: Mapping[str, Any]) -> list[ModelNeed]: ...


def local_model(path: str, part: str) -> ModelNeed:
    """A model a backend reads from a local path the profile gives (a model pack, a checkpoint)."""
    return ModelNeed(str(Path(path).expanduser()), None, None, LOCAL_MODEL_LICENSE, part=part)
