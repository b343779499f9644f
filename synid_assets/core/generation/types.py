"""What every generator receives and returns: identities, prompts, image requests, and the backend protocols.

The embedded CPU defaults (template prompts, procedural renderer) and the GPU backends (transformers LLMs,
FLUX, Kontext, Arc2Face) implement the same protocols, so assets never change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from PIL import Image


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
    identity_vector: Sequence[float] | None = None  # identity_source: embeddings: the vector to render


@dataclass(frozen=True)
class LiveRequest:
    identity: IdentityRecord
    prompt: str
    live_index: int
    seed: int
    document_path: str
    document_embedding: Sequence[float] | None = None
    # The sampled identity vector (identity_source: embeddings), given to generators conditioned in its space.
    identity_vector: Sequence[float] | None = None


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
