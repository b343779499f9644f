"""The embedded CPU image backends: procedural documents and live variations (no weights)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from synid_assets.core.config.requirements import BackendRequirements, ModelNeed
from synid_assets.core.generation.types import DocumentRequest, GeneratedImage, LiveRequest

if TYPE_CHECKING:
    from PIL import Image


class ProceduralDocumentGenerator:
    """Passport-like renders of an identity; geometry comes from the identity seed."""

    name = "procedural"
    # What it needs (see core/config/requirements.py): the CPU, no model.
    requirements = BackendRequirements(device="cpu")

    @classmethod
    def required_models(cls, options: Mapping[str, Any]) -> list[ModelNeed]:
        return []

    def __init__(self, size: int = 256) -> None:
        from synid_assets.core.generation import render

        self.size = size
        self.version = render.RENDERER_VERSION
        self.settings = {"size": size}

    def generate(self, requests: Sequence[DocumentRequest]) -> list[GeneratedImage]:
        from synid_assets.core.generation import render

        out = []
        for request in requests:
            identity = request.identity
            image = render.render_document(identity.attributes, identity.seed, self.size)
            params = {
                "generator": self.name,
                "version": self.version,
                "identity_seed": identity.seed,
                "seed": request.seed,
                "size": self.size,
                "attributes": dict(identity.attributes),
            }
            out.append(GeneratedImage(image=image, params=params))
        return out

    def regenerate(self, params: Mapping[str, Any]) -> Image.Image:
        """Re-render a document from its recorded parameters."""
        from synid_assets.core.generation import render

        return render.render_document(params["attributes"], int(params["identity_seed"]), int(params["size"]))


class ProceduralLiveGenerator:
    """Live captures of the same identity: pose, expression, lighting, background, blur and noise."""

    name = "procedural"
    # What it needs (see core/config/requirements.py): the CPU, no model.
    requirements = BackendRequirements(device="cpu")

    @classmethod
    def required_models(cls, options: Mapping[str, Any]) -> list[ModelNeed]:
        return []

    def __init__(self, size: int = 256) -> None:
        from synid_assets.core.generation import render

        self.size = size
        self.version = render.RENDERER_VERSION
        self.settings = {"size": size}

    def generate(self, requests: Sequence[LiveRequest]) -> list[GeneratedImage]:
        from synid_assets.core.generation import render

        out = []
        for request in requests:
            identity = request.identity
            variation = render.draw_live_variation(request.seed)
            image = render.render_live(identity.attributes, identity.seed, variation, self.size)
            params = {
                "generator": self.name,
                "version": self.version,
                "identity_seed": identity.seed,
                "seed": request.seed,
                "live_index": request.live_index,
                "size": self.size,
                "attributes": dict(identity.attributes),
                "variation": variation,
            }
            out.append(GeneratedImage(image=image, params=params))
        return out

    def regenerate(self, params: Mapping[str, Any]) -> Image.Image:
        """Re-render a live image from its recorded parameters (the variation is stored whole)."""
        from synid_assets.core.generation import render

        return render.render_live(
            params["attributes"], int(params["identity_seed"]), params["variation"], int(params["size"])
        )
