"""Dagster resources: dataset settings and the backends a resource profile names.

Every backend loads its model lazily, once per process (a module-level cache), so the code location loads
in about a second and a run that never embeds a face never imports dlib.
"""

from __future__ import annotations

import threading
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from synid_assets.core.store import DatasetLayout

_MODEL_CACHE: dict[tuple, Any] = {}
_MODEL_LOCK = threading.Lock()


def _cached(key: tuple, factory) -> Any:
    with _MODEL_LOCK:
        if key not in _MODEL_CACHE:
            _MODEL_CACHE[key] = factory()
        return _MODEL_CACHE[key]


class DatasetResource(dg.ConfigurableResource):
    """Where the dataset lives, its seed, batch size, live images per identity, and quality gates."""

    home: str
    attributes_dir: str
    seed: int = 0
    batch_size: int = 64
    live_per_identity: int = 2
    min_document_detection_rate: float = 0.95
    min_live_detection_rate: float = 0.85
    min_live_consistency_rate: float = 0.85
    frequency_p_value: float = 1e-4

    def layout(self) -> DatasetLayout:
        return DatasetLayout(self.home)


class LanceDBResource(dg.ConfigurableResource):
    """The embedded LanceDB database of face embeddings (a directory; object storage URIs work too)."""

    uri: str

    def store(self):
        from synid_assets.core.vectorstore import EmbeddingStore

        return EmbeddingStore(self.uri)


class PromptWriterResource(dg.ConfigurableResource):
    backend: str = "template"
    trigger: str = ""

    def writer(self):
        if self.backend == "template":
            from synid_assets.core.prompts import TemplatePromptWriter

            return TemplatePromptWriter(trigger=self.trigger)
        raise dg.Failure(f"prompt_writer backend {self.backend!r} is not available (known: template)")


class DocumentGeneratorResource(dg.ConfigurableResource):
    backend: str = "procedural"
    size: int = 256

    def generator(self):
        if self.backend == "procedural":
            from synid_assets.core.procedural import ProceduralDocumentGenerator

            return _cached(("document", self.backend, self.size), lambda: ProceduralDocumentGenerator(self.size))
        raise dg.Failure(f"document_generator backend {self.backend!r} is not available (known: procedural)")


class LiveGeneratorResource(dg.ConfigurableResource):
    backend: str = "procedural"
    size: int = 256

    def generator(self):
        if self.backend == "procedural":
            from synid_assets.core.procedural import ProceduralLiveGenerator

            return _cached(("live", self.backend, self.size), lambda: ProceduralLiveGenerator(self.size))
        raise dg.Failure(f"live_generator backend {self.backend!r} is not available (known: procedural)")


class ThresholdConfig(dg.Config):
    fmr: float
    value: float
    source: str


class FaceAnalyzerResource(dg.ConfigurableResource):
    """Detection, alignment and embedding, plus the embedder's thresholds per FMR (each with its source)."""

    backend: str = "dlib"
    model_dir: str | None = None
    upsample: int = 1
    fmr: float = 1e-3
    thresholds: list[ThresholdConfig] = []
    _analyzer: Any = PrivateAttr(default=None)

    def analyzer(self):
        if self._analyzer is None:
            self._analyzer = _cached(("faces", self.backend, self.model_dir, self.upsample), self._build)
        return self._analyzer

    def _build(self):
        if self.backend != "dlib":
            raise dg.Failure(f"face_analyzer backend {self.backend!r} is not available (known: dlib)")
        from synid_assets.core.faces import DlibFaceAnalyzer, FaceModelError

        analyzer = DlibFaceAnalyzer(model_dir=self.model_dir, upsample=self.upsample)
        try:
            analyzer.load()
        except FaceModelError as exc:
            raise dg.Failure(description=str(exc)) from None
        return analyzer

    @property
    def model_id(self) -> str:
        from synid_assets.core.faces import DlibFaceAnalyzer

        return DlibFaceAnalyzer.model_id if self.backend == "dlib" else self.backend

    def operating_threshold(self):
        """The threshold at the profile's FMR, used by the filter and the live consistency check."""
        from synid_assets.core.faces import Threshold
        from synid_assets.core.interfaces import EmbedderThresholds

        table = EmbedderThresholds(
            self.model_id, tuple(Threshold(fmr=t.fmr, value=t.value, source=t.source) for t in self.thresholds)
        )
        try:
            return table.at(self.fmr)
        except KeyError as exc:
            raise dg.Failure(description=f"{exc.args[0]}: add it to the resource profile") from None


def resources_from_profile(profile: dict[str, Any], home: str, attributes_dir: str) -> dict[str, Any]:
    """Instantiate every resource the assets need from a loaded profile."""
    from synid_assets.core.store import DatasetLayout

    dataset, checks, faces = profile["dataset"], profile["checks"], profile["face_analyzer"]
    return {
        "dataset": DatasetResource(
            home=home,
            attributes_dir=attributes_dir,
            seed=int(dataset["seed"]),
            batch_size=int(dataset["batch_size"]),
            live_per_identity=int(dataset["live_per_identity"]),
            min_document_detection_rate=float(checks["min_document_detection_rate"]),
            min_live_detection_rate=float(checks["min_live_detection_rate"]),
            min_live_consistency_rate=float(checks["min_live_consistency_rate"]),
            frequency_p_value=float(checks["frequency_p_value"]),
        ),
        "lancedb": LanceDBResource(uri=str(DatasetLayout(home).lancedb_uri)),
        "prompt_writer": PromptWriterResource(
            backend=profile["prompt_writer"]["backend"], trigger=profile["prompt_writer"].get("trigger", "")
        ),
        "document_generator": DocumentGeneratorResource(
            backend=profile["document_generator"]["backend"], size=int(profile["document_generator"]["size"])
        ),
        "live_generator": LiveGeneratorResource(
            backend=profile["live_generator"]["backend"], size=int(profile["live_generator"]["size"])
        ),
        "face_analyzer": FaceAnalyzerResource(
            backend=faces["backend"],
            model_dir=faces.get("model_dir"),
            upsample=int(faces.get("upsample", 1)),
            fmr=float(faces["fmr"]),
            thresholds=[
                ThresholdConfig(fmr=float(t["fmr"]), value=float(t["value"]), source=str(t["source"]))
                for t in faces["thresholds"]
            ],
        ),
    }
