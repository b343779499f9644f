"""Model management: what a profile needs, checking a real Hugging Face cache layout, tokens never shown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from synid_assets.core.config.models import check_models, profile_models
from synid_assets.core.config.profiles import load_profile


def fake_hub_snapshot(cache: Path, repo_id: str, files: dict[str, str], commit: str = "0" * 40) -> Path:
    """The on-disk layout huggingface_hub itself writes: models--org--name/{refs/main, snapshots/<commit>/...}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    for name, text in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_text(text)
    return snapshot


def test_profiles_name_every_model_with_licence() -> None:
    refs = {r.role: r for r in profile_models(load_profile("flux-80gb"))}
    assert refs["prompt_writer"].repo_id == "Qwen/Qwen2.5-7B-Instruct"
    assert refs["document_generator"].repo_id == "black-forest-labs/FLUX.1-dev"
    assert "Non-Commercial" in refs["document_generator"].license
    # Only the diffusers folders, not the 23 GB single-file checkpoint at the repo root.
    assert "transformer/*" in refs["document_generator"].allow_patterns
    assert refs["document_generator.lora"].allow_patterns == ("cfd-lora.safetensors",)
    assert profile_models(load_profile("local")) == []


def test_check_finds_models_in_the_cache(tmp_path: Path) -> None:
    snapshot = fake_hub_snapshot(tmp_path, "Qwen/Qwen2.5-7B-Instruct", {"config.json": "{}"})
    results = {ref.role: (present, where) for ref, present, where in
               check_models(profile_models(load_profile("flux-24gb")), str(tmp_path))}
    assert results["prompt_writer"] == (True, str(snapshot))
    assert results["document_generator"][0] is False


def synid(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synid_assets.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_cli_check_and_download_never_show_the_token(tmp_path: Path) -> None:
    secret = "hf_SECRETtoken1234567890"
    env = {"HF_TOKEN": secret, "HF_HUB_OFFLINE": "1"}
    checked = synid("models", "check", "flux-80gb", "--cache-dir", str(tmp_path), env=env)
    assert checked.returncode == 1
    assert "MISSING" in checked.stdout and "synid models download flux-80gb" in checked.stderr
    downloaded = synid("models", "download", "flux-80gb", "--cache-dir", str(tmp_path), env=env)
    assert downloaded.returncode == 1
    assert "HF_TOKEN" in downloaded.stderr
    for output in (checked.stdout, checked.stderr, downloaded.stdout, downloaded.stderr):
        assert secret not in output
    assert synid("models", "check", "local", env=env).returncode == 0
