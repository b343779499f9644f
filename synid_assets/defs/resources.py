"""Dagster resources: dataset settings and the backends a resource profile names.

Every backend loads its model lazily, once per process (a module-level cache), so the code location loads
in about a second and a run that never embeds a face never imports dlib.
"""

from __future__ import annotations

import gc
import json
import sys
import threading
from typing import TYPE_CHECKING, Any, ClassVar

import dagster as dg
from pydantic import PrivateAttr

from synid_assets.core.config import registry
from synid_assets.core.dataset.layout import DatasetLayout, is_remote_home
from synid_assets.core.errors import BackendError

if TYPE_CHECKING:
    from synid_assets.core.dataset.remote_home import RemoteHome

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
    min_good_live: int = 1  # good (detected, above threshold) live images an accepted identity needs
    min_document_detection_rate: float = 0.95
    min_live_detection_rate: float = 0.85
    min_live_consistency_rate: float = 0.85
    frequency_p_value: float = 1e-4
    filter_mode: str = "strict"
    filter_target_fmr: float | None = None
    leak_gallery: str | None = None  # .npy of real-face embeddings, or '<lancedb dir>::<table>'
    export_formats: list[str] = ["imagefolder"]  # what dataset_export writes (profile `export:` section)
    export_crop: str = "aligned"  # 'aligned' 112x112 ArcFace crops or 'full' images
    identity_source: str = "attributes"  # or 'embeddings': documents render identity_vectors (profile dataset section)
    identity_vectors: dict[str, Any] = {}  # the profile's identity_vectors section: method, max_similarity, centres
    _remote: Any = PrivateAttr(default=None)

    def layout(self) -> DatasetLayout:
        """The dataset's files: SYNID_HOME itself, or the local mirror of an s3:// home (see remote())."""
        remote = self.remote()
        return DatasetLayout(remote.local if remote is not None else self.home)

    def remote(self) -> RemoteHome | None:
        """The RemoteHome of an s3:// home (pull before reading, push after writing), None for a local home."""
        if not is_remote_home(self.home):
            return None
        if self._remote is None:
            from synid_assets.core.dataset.remote_home import RemoteHome

            self._remote = RemoteHome(self.home)
        return self._remote


class LanceDBResource(dg.ConfigurableResource):
    """The LanceDB database of face embeddings: a directory, or `<s3 home>/lancedb` opened on S3 directly."""

    uri: str

    def store(self):
        from synid_assets.core.dataset.vectorstore import EmbeddingStore

        return EmbeddingStore(self.uri)


class BackendResource(dg.ConfigurableResource):
    """A backend named by the profile, built with its options and loaded lazily on first use.

    Backends whose class declares the CPU as their device (embedded ones) stay loaded for the life of the process
    (a module-level cache); the others may hold a GPU: they are held by the resource and released after the step
    that used them, so the next step's model has the memory. `keep_loaded` in the profile overrides either way.
    """

    backend: str
    options: dict[str, Any] = {}
    keep_loaded: bool | None = None  # None: as the backend class declares (CPU backends kept, others released)
    _instance: Any = PrivateAttr(default=None)
    kind: ClassVar[str] = ""

    def _keep(self) -> bool:
        if self.keep_loaded is not None:
            return self.keep_loaded
        return self.backend_class().requirements.stays_loaded

    def get(self) -> Any:
        if self._keep():
            key = (self.kind, self.backend, json.dumps(self.options, sort_keys=True, default=str))
            return _cached(key, self._build)
        if self._instance is None:
            self._instance = self._build()
        return self._instance

    def _build(self) -> Any:
        try:
            instance = registry.create_backend(self.kind, self.backend, dict(self.options))
            if hasattr(instance, "load"):
                instance.load()
        except BackendError as exc:  # unknown backend or option, missing model (named in the message)
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        return instance

    def backend_class(self) -> type:
        try:
            return registry.backend_class(self.kind, self.backend)
        except BackendError as exc:  # unknown backend, missing package or declaration (named in the message)
            raise dg.Failure(description=str(exc), allow_retries=False) from None

    def release(self) -> None:
        """Drop a GPU backend's model and give its memory back."""
        if self._instance is None:
            return
        instance, self._instance = self._instance, None
        if hasattr(instance, "release"):
            instance.release()
        del instance
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.release()


class PromptWriterResource(BackendResource):
    kind: ClassVar[str] = "prompt_writer"


class DocumentGeneratorResource(BackendResource):
    kind: ClassVar[str] = "document_generator"


class LiveGeneratorEntry(dg.Config):
    backend: str
    count: int | None = None  # live images per identity; None: the dataset's live_per_identity
    options: dict[str, Any] = {}
    keep_loaded: bool | None = None


class LiveGeneratorResource(dg.ConfigurableResource):
    """One or more live generators, each making its own number of live images per identity."""

    generators: list[LiveGeneratorEntry]
    _built: Any = PrivateAttr(default=None)

    def get(self, live_per_identity: int) -> list[tuple[Any, int]]:
        if self._built is None:
            self._built = [
                LiveBackendResource(backend=e.backend, options=e.options, keep_loaded=e.keep_loaded)
                for e in self.generators
            ]
        return [
            (backend.get(), live_per_identity if entry.count is None else entry.count)
            for backend, entry in zip(self._built, self.generators, strict=True)
        ]

    def release(self) -> None:
        for backend in self._built or []:
            backend.release()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.release()


class LiveBackendResource(BackendResource):
    kind: ClassVar[str] = "live_generator"


class ThresholdConfig(dg.Config):
    fmr: float
    value: float
    source: str


class FaceAnalyzerResource(BackendResource):
    """Detection, alignment and embedding, plus the embedder's thresholds per FMR (each with its source)."""

    kind: ClassVar[str] = "face_analyzer"
    fmr: float = 1e-3
    thresholds: list[ThresholdConfig] = []

    @property
    def model_id(self) -> str:
        declared = getattr(self.backend_class(), "model_id", None)
        if isinstance(declared, str):
            return declared
        return self.get().model_id  # depends on the model pack: ask the loaded backend

    def operating_threshold(self):
        """The threshold at the profile's FMR, used by the filter and the live consistency check."""
        from synid_assets.core.analysis.types import EmbedderThresholds, Threshold

        table = EmbedderThresholds(
            self.model_id, tuple(Threshold(fmr=t.fmr, value=t.value, source=t.source) for t in self.thresholds)
        )
        try:
            return table.at(self.fmr)
        except KeyError as exc:
            raise dg.Failure(description=f"{exc.args[0]}: add it to the resource profile") from None


def live_generator_entries(section: dict[str, Any]) -> list[LiveGeneratorEntry]:
    """A live_generator section is one backend, or `generators:` a list of them, each with its `count`."""
    listed = section.get("generators") or [section]
    return [
        LiveGeneratorEntry(
            backend=entry["backend"],
            count=entry.get("count"),
            options=registry.section_options("live_generator", entry),
            keep_loaded=entry.get("keep_loaded"),
        )
        for entry in listed
    ]


def resources_from_profile(profile: dict[str, Any], home: str, attributes_dir: str) -> dict[str, Any]:
    """Instantiate every resource the assets need from a loaded profile."""
    dataset, checks, faces = profile["dataset"], profile["checks"], profile["face_analyzer"]
    return {
        "dataset": DatasetResource(
            home=home,
            attributes_dir=attributes_dir,
            seed=int(dataset["seed"]),
            batch_size=int(dataset["batch_size"]),
            live_per_identity=int(dataset["live_per_identity"]),
            min_good_live=int(dataset["min_good_live"]),
            min_document_detection_rate=float(checks["min_document_detection_rate"]),
            min_live_detection_rate=float(checks["min_live_detection_rate"]),
            min_live_consistency_rate=float(checks["min_live_consistency_rate"]),
            frequency_p_value=float(checks["frequency_p_value"]),
            filter_mode=str(profile["filter"]["mode"]),
            filter_target_fmr=profile["filter"].get("target_fmr"),
            leak_gallery=profile["filter"].get("leak_gallery"),
            export_formats=list(profile["export"]["formats"]),
            export_crop=str(profile["export"]["crop"]),
            identity_source=str(dataset["identity_source"]),
            # Dagster refuses None values inside a dict config: unset options fall back to the sampler's defaults.
            identity_vectors={k: v for k, v in profile["identity_vectors"].items() if v is not None},
        ),
        "lancedb": LanceDBResource(
            uri=f"{home.rstrip('/')}/lancedb" if is_remote_home(home) else str(DatasetLayout(home).lancedb_uri)
        ),
        "prompt_writer": PromptWriterResource(
            backend=profile["prompt_writer"]["backend"],
            options=registry.section_options("prompt_writer", profile["prompt_writer"]),
            keep_loaded=profile["prompt_writer"].get("keep_loaded"),
        ),
        "document_generator": DocumentGeneratorResource(
            backend=profile["document_generator"]["backend"],
            options=registry.section_options("document_generator", profile["document_generator"]),
            keep_loaded=profile["document_generator"].get("keep_loaded"),
        ),
        "live_generator": LiveGeneratorResource(generators=live_generator_entries(profile["live_generator"])),
        "face_analyzer": FaceAnalyzerResource(
            backend=faces["backend"],
            options=registry.section_options("face_analyzer", faces),
            keep_loaded=faces.get("keep_loaded"),
            fmr=float(faces["fmr"]),
            thresholds=[
                ThresholdConfig(fmr=float(t["fmr"]), value=float(t["value"]), source=str(t["source"]))
                for t in faces["thresholds"]
            ],
        ),
    }
