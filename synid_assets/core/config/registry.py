"""Backend registry: the name a resource profile gives a backend -> the class that implements it.

Adding a backend is one module (its class declares its device and models: see `requirements.py`) plus one line
here. Classes are imported only when a backend is used, so naming GPU backends costs nothing at import time.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from synid_assets.core.config.requirements import BackendRequirements
from synid_assets.core.errors import BackendError

# kind (a profile section) -> backend name -> "module:Class".
REGISTRY: dict[str, dict[str, str]] = {
    "prompt_writer": {
        "template": "synid_assets.core.generation.template_prompts:TemplatePromptWriter",
        "llm": "synid_assets.core.generation.llm_prompts:LLMPromptWriter",
    },
    "document_generator": {
        "procedural": "synid_assets.core.generation.procedural:ProceduralDocumentGenerator",
        "flux": "synid_assets.core.generation.flux_documents:FluxDocumentGenerator",
        "arc2face": "synid_assets.core.generation.arc2face:Arc2FaceDocumentGenerator",  # renders identity vectors
        "vec2face": "synid_assets.core.generation.vec2face:Vec2FaceDocumentGenerator",  # renders identity vectors
        "vec2face_plus": "synid_assets.core.generation.vec2face_plus:Vec2FacePlusDocumentGenerator",  # + AttrOP
        "idiff_face": "synid_assets.core.generation.idiff_face:IDiffFaceDocumentGenerator",  # CC BY-NC-SA 4.0
        "uiface": "synid_assets.core.generation.uiface:UIFaceDocumentGenerator",  # renders identity vectors
    },
    "live_generator": {
        "procedural": "synid_assets.core.generation.procedural:ProceduralLiveGenerator",
        "arc2face": "synid_assets.core.generation.arc2face:Arc2FaceLiveGenerator",
        "kontext": "synid_assets.core.generation.kontext:KontextLiveGenerator",
        "vec2face": "synid_assets.core.generation.vec2face:Vec2FaceLiveGenerator",
        "vec2face_plus": "synid_assets.core.generation.vec2face_plus:Vec2FacePlusLiveGenerator",  # pose + AttrOP
        "idiff_face": "synid_assets.core.generation.idiff_face:IDiffFaceLiveGenerator",
        "uiface": "synid_assets.core.generation.uiface:UIFaceLiveGenerator",
    },
    "face_analyzer": {
        "dlib": "synid_assets.core.analysis.dlib_analyzer:DlibFaceAnalyzer",
        "insightface": "synid_assets.core.analysis.insightface_analyzer:InsightFaceAnalyzer",
        "frs": "synid_assets.core.analysis.frs:TorchFRSAnalyzer",
    },
}


# Keys of a profile section that configure SynID, not the backend; everything else is a backend option.
_SECTION_SETTINGS: dict[str, tuple[str, ...]] = {
    "live_generator": ("count", "generators"),
    "face_analyzer": ("fmr", "thresholds"),
}


def backend_class(kind: str, backend: str) -> type:
    """The class registered for a backend, checked to carry its declaration (device and models)."""
    known = REGISTRY.get(kind)
    if known is None:
        raise BackendError(f"unknown backend kind {kind!r} (known: {sorted(REGISTRY)})")
    if backend not in known:
        raise BackendError(f"{kind} backend {backend!r} is not available (known: {sorted(known)})")
    module_name, class_name = known[backend].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(f"{kind} backend {backend!r} needs a package that is not installed: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise BackendError(f"{kind} backend {backend!r}: {known[backend]} is not a class")
    if not isinstance(getattr(cls, "requirements", None), BackendRequirements) or not callable(
        getattr(cls, "required_models", None)
    ):
        raise BackendError(
            f"{kind} backend {backend!r}: {known[backend]} declares no `requirements = BackendRequirements(...)` "
            "and `required_models` classmethod (see synid_assets/core/config/requirements.py)"
        )
    return cls


def backend_options(cls: type) -> dict[str, inspect.Parameter]:
    """A backend's options: its __init__ parameters, each with its default (or none: required)."""
    parameters = inspect.signature(cls.__init__).parameters
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {name: p for name, p in parameters.items() if name != "self" and p.kind in kinds}


def resolved_options(cls: type, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options a backend is built with: its __init__ defaults, overridden by the profile's non-null values."""
    declared = backend_options(cls)
    resolved = {name: p.default for name, p in declared.items() if p.default is not inspect.Parameter.empty}
    resolved.update({k: v for k, v in options.items() if k in declared and v is not None})
    return resolved


def section_options(kind: str, section: Mapping[str, Any]) -> dict[str, Any]:
    """A profile section's backend options: everything but the backend name, SynID's own settings and nulls."""
    skip = {"backend", "keep_loaded", *_SECTION_SETTINGS.get(kind, ())}
    return {k: v for k, v in section.items() if k not in skip and v is not None}


def profile_sections(profile: Mapping[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(role, kind, section) for every backend a profile names, in registry order.

    A live_generator section is one backend, or `generators:` a list of them: their roles are numbered.
    """
    sections = []
    for kind in REGISTRY:
        section = profile.get(kind)
        if section is None:
            continue
        listed = section.get("generators") if kind == "live_generator" else None
        if listed:
            sections.extend((f"{kind}[{number}]", kind, entry) for number, entry in enumerate(listed))
        elif kind == "live_generator":
            sections.append((f"{kind}[0]", kind, section))
        else:
            sections.append((kind, kind, section))
    return sections


def create_backend(kind: str, backend: str, options: dict[str, Any]) -> Any:
    """Instantiate a backend with the profile's options; an unknown option is named, not a bare TypeError."""
    cls = backend_class(kind, backend)
    accepted = backend_options(cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise BackendError(f"{kind} backend {backend!r} has no option(s) {unknown} (options: {sorted(accepted)})")
    return cls(**options)
