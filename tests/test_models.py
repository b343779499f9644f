"""Model management: what a profile needs, checking a real Hugging Face cache layout, tokens never shown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from synid_assets.core.config.models import ModelRef, check_models, profile_models
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


_QWEN = ("Qwen/Qwen2.5-7B-Instruct", ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja"))
_FLUX_FILES = (
    "model_index.json", "scheduler/*", "text_encoder/*", "text_encoder_2/*", "tokenizer/*", "tokenizer_2/*",
    "transformer/*", "vae/*",
)
_NON_COMMERCIAL = "FLUX.1 [dev] Non-Commercial License"
_FLUX_DOCUMENTS = [
    ModelRef("prompt_writer", _QWEN[0], None, _QWEN[1], "Apache-2.0"),
    ModelRef("document_generator", "black-forest-labs/FLUX.1-dev", None, _FLUX_FILES, _NON_COMMERCIAL),
    ModelRef("document_generator.lora", "Raul2718/CFD-FLUX.1-dev-LoRA", None, ("cfd-lora.safetensors",),
             "see model card (trained on the Chicago Face Database)"),
]
_ARC2FACE_FILES = ("arc2face/*", "encoder/*", "arcface.onnx")
_SD15_FILES = ("vae/*", "tokenizer/*", "scheduler/*", "model_index.json")
_ARC2FACE_LICENSE = "MIT (model card); trained on CC-BY-NC-SA-4.0 data"
_VEC2FACE_LICENSE = "MIT (model card); trained on a WebFace4M subset (research-only terms)"
_VEC2FACE_PLUS_LICENSE = ("no licence stated (github.com/HaiyuWu/Vec2Face_plus has no LICENSE; see the model card); "
                          "trained on a WebFace4M subset (research-only terms)")
_VEC2FACE_PLUS_FILES = ("vec2face_plus/main_model.pth", "vec2face_plus/pose_model.pth")
_VEC2FACE_ESTIMATORS = ("weights/arcface-r100-glint360k.pth", "weights/magface-r100-glint360k.pth",
                        "weights/6DRepNet_300W_LP_AFLW2000.pth")
_IDIFF_FACE_FILES = ("checkpoints/ema_averaged_model.ckpt", "autoencoder/first_stage_decoder_state_dict.pt")
_UIFACE_FILES = ("checkpoints/uiface.ckpt", "autoencoder/first_stage_decoder_state_dict.pt")
_UIFACE_LICENSE = ("UIFace: Apache-2.0 (github.com/Tencent/TFace License.txt; the weights state no other terms); "
                   "trained on CASIA-WebFace (research use)")

# What `synid models check|download` lists for each shipped profile, captured before backends declared their own
# models: the declarations must give the same roles, ids, revisions, file patterns, licences and order.
SHIPPED_PROFILE_MODELS: dict[str, list[ModelRef]] = {
    "local": [],
    "flux-24gb": _FLUX_DOCUMENTS,
    "flux-80gb": _FLUX_DOCUMENTS,
    "arc2face-embeddings": [
        ModelRef("document_generator", "FoivosPar/Arc2Face", None, _ARC2FACE_FILES, _ARC2FACE_LICENSE),
        ModelRef("document_generator.base", "stable-diffusion-v1-5/stable-diffusion-v1-5", None, _SD15_FILES,
                 "CreativeML OpenRAIL-M"),
        ModelRef("live_generator[0]", "FoivosPar/Arc2Face", None, _ARC2FACE_FILES, _ARC2FACE_LICENSE),
        ModelRef("live_generator[0].base", "stable-diffusion-v1-5/stable-diffusion-v1-5", None, _SD15_FILES,
                 "CreativeML OpenRAIL-M"),
        ModelRef("face_analyzer.model_dir", str(Path("~/.insightface/models/antelopev2").expanduser()), None, None,
                 "see the model's source"),
    ],
    "vec2face-80gb": [
        ModelRef("document_generator", "BooBooWu/Vec2Face", None, ("weights/vec2face_generator.pth",),
                 "MIT (model card); trained on a WebFace4M subset (research-only terms)"),
        ModelRef("live_generator[0]", "BooBooWu/Vec2Face", None, ("weights/vec2face_generator.pth",),
                 "MIT (model card); trained on a WebFace4M subset (research-only terms)"),
        ModelRef("face_analyzer.detector_model_dir", str(Path("~/.insightface/models/antelopev2").expanduser()), None,
                 None, "see the model's source"),
        ModelRef("face_analyzer.checkpoint", "BooBooWu/Vec2Face", None, ("weights/arcface-r100-glint360k.pth",),
                 "MIT (model card); trained on a WebFace4M subset (research-only terms)"),
    ],
    "vec2face-plus-80gb": [
        *[ref for role in ("document_generator", "live_generator[0]") for ref in (
            ModelRef(role, "BooBooWu/Vec2Face_plus", None, _VEC2FACE_PLUS_FILES, _VEC2FACE_PLUS_LICENSE),
            ModelRef(f"{role}.estimators", "BooBooWu/Vec2Face", None, _VEC2FACE_ESTIMATORS, _VEC2FACE_LICENSE))],
        ModelRef("face_analyzer.detector_model_dir", str(Path("~/.insightface/models/antelopev2").expanduser()), None,
                 None, "see the model's source"),
        ModelRef("face_analyzer.checkpoint", "BooBooWu/Vec2Face", None, ("weights/arcface-r100-glint360k.pth",),
                 _VEC2FACE_LICENSE),
    ],
    "idiff-face-80gb": [
        ModelRef("document_generator", "~/models/idiff-face", None, _IDIFF_FACE_FILES,
                 "CC BY-NC-SA 4.0 (non-commercial; github.com/fdbtrs/IDiff-Face LICENSE)"),
        ModelRef("live_generator[0]", "~/models/idiff-face", None, _IDIFF_FACE_FILES,
                 "CC BY-NC-SA 4.0 (non-commercial; github.com/fdbtrs/IDiff-Face LICENSE)"),
        ModelRef("face_analyzer.detector_model_dir", str(Path("~/.insightface/models/antelopev2").expanduser()), None,
                 None, "see the model's source"),
        ModelRef("face_analyzer.checkpoint",
                 str(Path("~/models/idiff-face/Elastic_R100_295672backbone.pth").expanduser()), None, None,
                 "see the model's source"),
    ],
    "uiface-80gb": [
        ModelRef("document_generator", "~/models/uiface", None, _UIFACE_FILES, _UIFACE_LICENSE),
        ModelRef("live_generator[0]", "~/models/uiface", None, _UIFACE_FILES, _UIFACE_LICENSE),
        ModelRef("face_analyzer.detector_model_dir", str(Path("~/.insightface/models/antelopev2").expanduser()), None,
                 None, "see the model's source"),
        ModelRef("face_analyzer.checkpoint",
                 str(Path("~/models/uiface/Elastic_R100_295672backbone.pth").expanduser()), None, None,
                 "see the model's source"),
    ],
    "flux-live-80gb": [
        *_FLUX_DOCUMENTS,
        ModelRef("live_generator[0]", "FoivosPar/Arc2Face", None, _ARC2FACE_FILES, _ARC2FACE_LICENSE),
        ModelRef("live_generator[0].base", "stable-diffusion-v1-5/stable-diffusion-v1-5", None, _SD15_FILES,
                 "CreativeML OpenRAIL-M"),
        ModelRef("live_generator[1]", "black-forest-labs/FLUX.1-Kontext-dev", None, _FLUX_FILES, _NON_COMMERCIAL),
        ModelRef("face_analyzer.model_dir", str(Path("~/.insightface/models/antelopev2").expanduser()), None, None,
                 "see the model's source"),
    ],
}


@pytest.mark.parametrize("name", sorted(SHIPPED_PROFILE_MODELS))
def test_shipped_profiles_list_the_same_models(name: str) -> None:
    assert sorted(p.stem for p in (Path(__file__).parents[1] / "resources").glob("*.yaml")) == sorted(
        SHIPPED_PROFILE_MODELS
    )
    assert profile_models(load_profile(name)) == SHIPPED_PROFILE_MODELS[name]


def test_every_model_option_is_listed_with_its_default_or_override() -> None:
    """Options the shipped profiles leave out: default ids, revisions, LoRAs, LCM, FRS checkpoints, local paths."""
    profile: dict[str, Any] = load_profile("local")
    profile["prompt_writer"] = {"backend": "llm", "revision": "r1"}
    profile["document_generator"] = {"backend": "flux", "model_id": "/models/my-flux.1-schnell-finetune",
                                     "lora": "me/lora"}
    profile["live_generator"] = {"generators": [
        {"backend": "procedural", "count": 1},
        {"backend": "arc2face", "revision": "a1", "base_revision": "b1",
         "lcm_lora": "latent-consistency/lcm-lora-sdv1-5"},
        {"backend": "kontext", "revision": "k1"},
    ]}
    profile["face_analyzer"] = {"backend": "frs", "frs": "adaface", "checkpoint": "~/ckpt/adaface.ckpt",
                                "detector_model_dir": "/packs/buffalo_l", "fmr": 1e-3, "thresholds": []}
    assert profile_models(profile) == [
        ModelRef("prompt_writer", _QWEN[0], "r1", _QWEN[1], "Apache-2.0"),
        ModelRef("document_generator", "/models/my-flux.1-schnell-finetune", None, _FLUX_FILES, "Apache-2.0"),
        ModelRef("document_generator.lora", "me/lora", None, ("*.safetensors",), "see model card"),
        ModelRef("live_generator[1]", "FoivosPar/Arc2Face", "a1", _ARC2FACE_FILES, _ARC2FACE_LICENSE),
        ModelRef("live_generator[1].base", "stable-diffusion-v1-5/stable-diffusion-v1-5", "b1", _SD15_FILES,
                 "CreativeML OpenRAIL-M"),
        ModelRef("live_generator[1].lcm_lora", "latent-consistency/lcm-lora-sdv1-5", None, ("*.safetensors",),
                 "see model card"),
        ModelRef("live_generator[2]", "black-forest-labs/FLUX.1-Kontext-dev", "k1", _FLUX_FILES, _NON_COMMERCIAL),
        ModelRef("face_analyzer.detector_model_dir", "/packs/buffalo_l", None, None, "see the model's source"),
        ModelRef("face_analyzer.checkpoint", str(Path("~/ckpt/adaface.ckpt").expanduser()), None, None,
                 "see the model's source"),
    ]
    # dlib's model files come with the face-recognition-models package or a local model_dir: nothing to fetch.
    profile["face_analyzer"] = {"backend": "dlib", "model_dir": "/models/dlib", "fmr": 1e-3, "thresholds": []}
    assert [ref.role for ref in profile_models(profile)][-1] == "live_generator[2]"


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


def test_local_models_name_the_files_they_lack(tmp_path: Path) -> None:
    """Drive-only weights (UIFace) are fetched by hand: check and download say which listed file is missing."""
    from synid_assets.core.config.models import download_models

    profile: dict[str, Any] = load_profile("uiface-80gb")
    root = tmp_path / "uiface"
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "uiface.ckpt").write_bytes(b"weights")
    profile["document_generator"]["model_id"] = str(root)
    ref = profile_models(profile)[0]
    [(_, present, where)] = check_models([ref])
    assert not present and "autoencoder/first_stage_decoder_state_dict.pt" in where and "uiface.ckpt" not in where
    [(_, told)] = download_models([ref])
    assert "MISSING" in told and "first_stage_decoder_state_dict.pt" in told
    (root / "autoencoder").mkdir()
    (root / "autoencoder" / "first_stage_decoder_state_dict.pt").write_bytes(b"decoder")
    assert check_models([ref]) == [(ref, True, str(root))]
    assert download_models([ref]) == [(ref, str(root))]
