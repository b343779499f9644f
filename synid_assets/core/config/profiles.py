"""Resource profiles: one YAML file per profile in resources/, naming each backend and its settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_PROFILE = "local"
IDENTITY_SOURCES = ("attributes", "embeddings")

# The sections every profile has, and their defaults; a profile overrides any key.
DEFAULTS: dict[str, dict[str, Any]] = {
    "dataset": {"seed": 0, "batch_size": 64, "live_per_identity": 2, "min_good_live": 1,
                "identity_source": "attributes"},  # or 'embeddings': documents render sampled identity vectors
    "prompt_writer": {"backend": "template", "trigger": ""},
    "document_generator": {"backend": "procedural", "size": 256},
    "live_generator": {"backend": "procedural", "size": 256},
    "face_analyzer": {"backend": "dlib", "model_dir": None, "upsample": 1, "fmr": 1e-3, "thresholds": []},
    "filter": {"mode": "strict", "target_fmr": None, "leak_gallery": None},
    "export": {"formats": ["imagefolder"], "crop": "aligned"},  # what dataset_export writes
    # The `embeddings` route's sampler (core/identity_vectors/): gaussian, pca (needs centres) or repulsion.
    "identity_vectors": {"method": "gaussian", "max_similarity": 0.3, "centres": None, "max_attempts": 1000},
    "checks": {
        "min_document_detection_rate": 0.95,
        "min_live_detection_rate": 0.85,
        "min_live_consistency_rate": 0.85,
        "frequency_p_value": 1e-4,
    },
}


class ProfileError(ValueError):
    """A resource profile that is missing or malformed; the message names the file and the problem."""


def resources_dir() -> Path:
    return Path(os.environ.get("SYNID_RESOURCES_DIR") or REPO_ROOT / "resources").resolve()


def default_attributes_dir() -> Path:
    return Path(os.environ.get("SYNID_ATTRIBUTES") or REPO_ROOT / "attributes").resolve()


def profile_path(name_or_path: str | None = None) -> Path:
    """A profile name in resources/ ('local') or a path to a YAML file."""
    chosen = name_or_path or os.environ.get("SYNID_PROFILE") or DEFAULT_PROFILE
    candidate = Path(chosen)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate.resolve()
    if not chosen.replace("-", "").replace("_", "").isalnum():
        raise ProfileError(f"invalid profile name {chosen!r}")
    return resources_dir() / f"{chosen}.yaml"


def load_profile(name_or_path: str | None = None) -> dict[str, Any]:
    import yaml

    path = profile_path(name_or_path)
    if not path.is_file():
        available = sorted(p.stem for p in resources_dir().glob("*.yaml"))
        raise ProfileError(f"{path}: profile not found (available in {resources_dir()}: {available})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: not a valid YAML file: {exc}") from exc
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: a profile is a mapping of sections, got {type(raw).__name__}")
    unknown = set(raw) - set(DEFAULTS) - {"name", "description"}
    if unknown:
        raise ProfileError(f"{path}: unknown sections {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    profile: dict[str, Any] = {"name": raw.get("name", path.stem), "description": raw.get("description", "")}
    for section, defaults in DEFAULTS.items():
        given = raw.get(section) or {}
        if not isinstance(given, dict):
            raise ProfileError(f"{path}: section {section!r} must be a mapping")
        if "backend" in defaults and given.get("backend", defaults["backend"]) != defaults["backend"]:
            # Another backend: the embedded backend's options (e.g. size) do not apply to it.
            defaults = {k: v for k, v in defaults.items() if k in ("fmr", "thresholds")}
        profile[section] = {**defaults, **given}
    for i, entry in enumerate(profile["face_analyzer"]["thresholds"]):
        if not (isinstance(entry, dict) and {"fmr", "value", "source"} <= set(entry)):
            raise ProfileError(f"{path}: face_analyzer.thresholds[{i}] needs fmr, value and source")
    if profile["dataset"]["identity_source"] not in IDENTITY_SOURCES:
        raise ProfileError(f"{path}: dataset.identity_source must be one of {list(IDENTITY_SOURCES)}")
    profile["path"] = str(path)
    return profile
