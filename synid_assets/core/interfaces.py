"""The backend interfaces every generator and analyzer implements.

The embedded CPU defaults (template prompts, procedural renderer, dlib) implement them here; GPU backends
(transformers LLMs, FLUX, Arc2Face, InsightFace) implement the same protocols, so assets never change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from synid_assets.core.faces import FaceAnalysis, Threshold


@dataclass(frozen=True)
class IdentityRecord:
    """One sampled identity: what every generator receives."""

    identity_id: str
    batch_id: str
    index: int
    seed: int
    attributes: Mapping[str, str]
    subject: str  # "man" / "woman" / "non-binary person" / "person"


@dataclass
class PromptResult:
    prompt: str
    writer: str
    writer_version: str
    raw_output: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    fallback: bool = False  # True when a model writer failed validation and the template wrote it


@dataclass(frozen=True)
class DocumentRequest:
    identity: IdentityRecord
    prompt: str
    seed: int


@dataclass(frozen=True)
class LiveRequest:
    identity: IdentityRecord
    prompt: str
    live_index: int
    seed: int
    document_path: str
    document_embedding: Sequence[float] | None = None


@dataclass
class GeneratedImage:
    image: Image.Image
    params: dict[str, Any]  # everything needed to regenerate the image, JSON-serializable


@runtime_checkable
class PromptWriter(Protocol):
    name: str
    version: str

    def write(self, identities: Sequence[IdentityRecord]) -> list[PromptResult]: ...


@runtime_checkable
class DocumentGenerator(Protocol):
    name: str
    version: str

    def generate(self, requests: Sequence[DocumentRequest]) -> list[GeneratedImage]: ...


@runtime_checkable
class LiveGenerator(Protocol):
    name: str
    version: str

    def generate(self, requests: Sequence[LiveRequest]) -> list[GeneratedImage]: ...


@runtime_checkable
class FaceAnalyzer(Protocol):
    model_id: str
    dim: int

    def analyze_many(self, images: Sequence[np.ndarray]) -> list[FaceAnalysis]: ...


@dataclass(frozen=True)
class EmbedderThresholds:
    """An embedder's decision thresholds per false match rate, each with its stated source."""

    model_id: str
    thresholds: tuple[Threshold, ...]

    def at(self, fmr: float) -> Threshold:
        for threshold in self.thresholds:
            if abs(threshold.fmr - fmr) <= 1e-12 * max(1.0, fmr):
                return threshold
        known = ", ".join(f"{t.fmr:g}" for t in self.thresholds) or "none"
        raise KeyError(f"embedder {self.model_id!r} has no threshold for FMR {fmr:g} (known: {known})")


class BackendError(RuntimeError):
    """A backend that cannot be built: unknown name, bad option, missing dependency."""


class ModelLoadError(BackendError):
    """A model that cannot be loaded; the message names the model (repo id or dir) and how to fetch it."""
