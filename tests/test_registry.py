"""The backend registry: every entry imports and declares its device and models; a new backend is one line."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from synid_assets.core.analysis.types import FaceAnalyzer
from synid_assets.core.config.models import ModelRef, profile_models
from synid_assets.core.config.profiles import load_profile
from synid_assets.core.config.registry import (
    REGISTRY,
    backend_class,
    backend_options,
    create_backend,
    resolved_options,
)
from synid_assets.core.config.requirements import DEVICES, BackendRequirements, DeclaresRequirements, ModelNeed
from synid_assets.core.errors import BackendError
from synid_assets.core.generation.types import (
    DocumentGenerator,
    GeneratedImage,
    IdentityRecord,
    LiveGenerator,
    LiveRequest,
    PromptWriter,
)
from synid_assets.defs import resources

PROTOCOLS: dict[str, type] = {
    "prompt_writer": PromptWriter,
    "document_generator": DocumentGenerator,
    "live_generator": LiveGenerator,
    "face_analyzer": FaceAnalyzer,
}
# Options without a default (nothing is loaded by __init__, so the paths need not exist).
REQUIRED_OPTIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("face_analyzer", "insightface"): {"model_dir": "/models/antelopev2"},
    ("face_analyzer", "frs"): {"frs": "adaface", "checkpoint": "/models/adaface_ir101_webface12m.ckpt"},
}
ENTRIES = [(kind, name) for kind, names in REGISTRY.items() for name in names]
SYNID = Path(__file__).resolve().parents[1] / "synid_assets"


def test_registry_kinds_are_the_protocol_kinds() -> None:
    assert set(REGISTRY) == set(PROTOCOLS)


@pytest.mark.parametrize(("kind", "name"), ENTRIES)
def test_every_entry_imports_declares_and_implements_its_kind(kind: str, name: str) -> None:
    cls = backend_class(kind, name)
    assert isinstance(cls, DeclaresRequirements)
    assert isinstance(cls.requirements, BackendRequirements) and cls.requirements.device in DEVICES
    required = {n for n, p in backend_options(cls).items() if p.default is inspect.Parameter.empty}
    given = REQUIRED_OPTIONS.get((kind, name), {})
    assert required == set(given), f"{kind} {name}: give its required options {sorted(required)} in REQUIRED_OPTIONS"
    backend = create_backend(kind, name, given)  # builds, loads nothing
    assert isinstance(backend, cls)
    for member in protocol_members(PROTOCOLS[kind]):  # looked up statically: a property must not load a model
        assert callable(inspect.getattr_static(backend, member)) or member not in vars(PROTOCOLS[kind]), member


def protocol_members(protocol: type) -> list[str]:
    """A protocol's attributes and methods (what isinstance checks, without calling properties)."""
    methods = [name for name, value in vars(protocol).items() if not name.startswith("_") and callable(value)]
    return [*protocol.__annotations__, *methods]


class RecordingOptions(Mapping[str, Any]):
    """Options that remember which keys a declaration read."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values, self.read = values, set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return self.values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


@pytest.mark.parametrize(("kind", "name"), ENTRIES)
def test_declared_models_read_only_init_options_with_init_defaults(kind: str, name: str) -> None:
    cls = backend_class(kind, name)
    options = backend_options(cls)
    given = REQUIRED_OPTIONS.get((kind, name), {})
    # Once with the __init__ defaults, once with every unset option named, so each branch of the declaration runs.
    unset = {n: f"/models/{n}" for n, p in options.items() if p.default is None}
    for profile_options in (given, {**given, **unset}):
        recorded = RecordingOptions(resolved_options(cls, profile_options))
        needs = cls.required_models(recorded)
        assert recorded.read <= set(options), f"{kind} {name} reads options its __init__ lacks"
        for need in needs:
            assert isinstance(need, ModelNeed) and need.source and need.license
            assert need.files is None or (isinstance(need.files, tuple) and all(need.files))
        assert len({need.part for need in needs}) == len(needs), "each model of a backend needs its own part"
    if "model_id" in options and options["model_id"].default is not inspect.Parameter.empty:
        # The default model a backend loads is the one its declaration lists, written once (in the signature).
        assert cls.required_models(resolved_options(cls, given))[0].source == options["model_id"].default


def test_embedded_backends_stay_loaded_and_model_backends_are_released() -> None:
    kept = {(k, n) for k, n in ENTRIES if backend_class(k, n).requirements.stays_loaded}
    assert kept == {
        ("prompt_writer", "template"),
        ("document_generator", "procedural"),
        ("live_generator", "procedural"),
        ("face_analyzer", "dlib"),
    }
    assert resources.PromptWriterResource(backend="template")._keep() is True
    assert resources.DocumentGeneratorResource(backend="flux")._keep() is False
    assert resources.DocumentGeneratorResource(backend="flux", keep_loaded=True)._keep() is True


def test_unknown_backends_options_and_undeclared_classes_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendError, match=r"live_generator backend 'nope' is not available"):
        backend_class("live_generator", "nope")
    with pytest.raises(BackendError, match=r"has no option\(s\) \['colour'\] \(options: \['trigger'\]\)"):
        create_backend("prompt_writer", "template", {"colour": "red"})
    monkeypatch.setitem(REGISTRY["prompt_writer"], "bare", f"{__name__}:UndeclaredPromptWriter")
    with pytest.raises(BackendError, match=r"prompt_writer backend 'bare'.*declares no `requirements"):
        backend_class("prompt_writer", "bare")


def test_only_the_registry_and_the_backends_name_backends() -> None:
    """No if-chain over backend names outside the registry, the backends themselves and the default profile."""
    names = {name for _, name in ENTRIES}
    # core/training/config.py: training presets are named after the papers whose recipes they follow ("vec2face").
    allowed = ("core/config/registry.py", "core/config/profiles.py", "core/generation/", "core/analysis/",
               "random_models/", "core/training/config.py")
    found = []
    for path in sorted(SYNID.rglob("*.py")):
        relative = path.relative_to(SYNID).as_posix()
        if relative.startswith(allowed):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{relative}:{node.lineno} {node.value!r}")
    assert found == []


# ------------------------------------------------- a backend from outside the package, registered with one line


class UndeclaredPromptWriter:
    name = "bare"
    version = "1"

    def write(self, identities: Sequence[Any]) -> list[Any]:
        return []


class GreyLiveGenerator:
    """Flat grey live images; declares one hub model, as a real generator would."""

    name = "grey"
    version = "1"
    requirements = BackendRequirements(device="any")

    @classmethod
    def required_models(cls, options: Mapping[str, Any]) -> list[ModelNeed]:
        return [ModelNeed(options["model_id"], options["revision"], ("*.safetensors",), "Apache-2.0")]

    def __init__(self, model_id: str = "someone/grey-faces", revision: str | None = None, level: int = 128) -> None:
        self.model_id, self.revision, self.level = model_id, revision, level
        self.loaded = False

    def load(self) -> None:
        self.loaded = True

    def release(self) -> None:
        self.loaded = False

    def generate(self, requests: Sequence[LiveRequest]) -> list[GeneratedImage]:
        return [
            GeneratedImage(Image.new("RGB", (16, 16), (self.level,) * 3), {"seed": r.seed, "level": self.level})
            for r in requests
        ]


def test_a_new_backend_is_one_registry_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(REGISTRY["live_generator"], "grey", f"{__name__}:GreyLiveGenerator")  # the one line
    monkeypatch.setattr(resources, "_MODEL_CACHE", {})

    assert backend_class("live_generator", "grey") is GreyLiveGenerator
    built = create_backend("live_generator", "grey", {"level": 7})
    assert isinstance(built, LiveGenerator) and built.level == 7

    profile = load_profile("local")
    profile["live_generator"] = {"generators": [
        {"backend": "procedural", "count": 1},
        {"backend": "grey", "count": 2, "revision": "v2", "level": 90},
    ]}
    assert profile_models(profile) == [
        ModelRef("live_generator[1]", "someone/grey-faces", "v2", ("*.safetensors",), "Apache-2.0")
    ]

    built_resources = resources.resources_from_profile(profile, str(tmp_path / "home"), str(tmp_path / "attributes"))
    live = built_resources["live_generator"]
    (procedural, procedural_count), (grey, grey_count) = live.get(live_per_identity=3)
    assert (procedural_count, grey_count) == (1, 2)
    assert isinstance(grey, GreyLiveGenerator) and grey.loaded and grey.level == 90
    identity = IdentityRecord("id-0", "b0", 0, 5, {"gender": "Female"}, "woman")
    request = LiveRequest(identity, "a photo", live_index=0, seed=5, document_path=str(tmp_path / "doc.png"))
    assert grey.generate([request])[0].image.getpixel((0, 0)) == (90, 90, 90)
    # Declared "any": held by the resource and released after the step; the embedded procedural one stays cached.
    assert [key[:2] for key in resources._MODEL_CACHE] == [("live_generator", "procedural")]
    live.release()
    assert not grey.loaded
