"""Backend registry: the name a resource profile gives a backend -> the class that implements it.

Classes are imported only when a backend is built, so naming GPU backends costs nothing at import time.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from synid_assets.core.errors import BackendError

REGISTRY: dict[str, dict[str, str]] = {
    "prompt_writer": {
        "template": "synid_assets.core.generation.template_prompts:TemplatePromptWriter",
        "llm": "synid_assets.core.generation.llm_prompts:LLMPromptWriter",
    },
    "document_generator": {
        "procedural": "synid_assets.core.generation.procedural:ProceduralDocumentGenerator",
        "flux": "synid_assets.core.generation.flux_documents:FluxDocumentGenerator",
    },
    "live_generator": {
        "procedural": "synid_assets.core.generation.procedural:ProceduralLiveGenerator",
        "arc2face": "synid_assets.core.generation.arc2face:Arc2FaceLiveGenerator",
        "kontext": "synid_assets.core.generation.kontext:KontextLiveGenerator",
    },
    "face_analyzer": {
        "dlib": "synid_assets.core.analysis.dlib_analyzer:DlibFaceAnalyzer",
        "insightface": "synid_assets.core.analysis.insightface_analyzer:InsightFaceAnalyzer",
        "frs": "synid_assets.core.analysis.frs:TorchFRSAnalyzer",
    },
}


def backend_class(kind: str, backend: str) -> type:
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
    return getattr(module, class_name)


def create_backend(kind: str, backend: str, options: dict[str, Any]) -> Any:
    """Instantiate a backend with the profile's options; an unknown option is named, not a bare TypeError."""
    cls = backend_class(kind, backend)
    accepted = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        allowed = sorted(p for p in accepted if p != "self")
        raise BackendError(f"{kind} backend {backend!r} has no option(s) {unknown} (options: {allowed})")
    return cls(**options)
