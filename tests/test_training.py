"""Training on a rendered dataset's imagefolder: a few steps, resume after a stop and after a kill, evaluate."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synid_assets.core.training.config import PRESETS, TrainConfig, TrainingError, load_config
from tests.training_helpers import rendered_dataset, write_imagefolder_from_manifest

# Narrow and small so a step takes milliseconds; still IResNet-18's layout and the cpu preset's recipe.
TINY = dataclasses.replace(
    PRESETS["cpu"], channels=(8, 8, 16, 16), embedding_size=32, image_size=32, batch_size=8, epochs=2,
    lr_steps=(1,), warmup_epochs=0.0, random_erasing=True, threads=1,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """8 rendered identities x 3 live images: their home, imagefolder and a .bin of their pairs."""
    from synid_assets.core.training.pairs import write_bin_from_dataset

    root = tmp_path_factory.mktemp("training")
    home = rendered_dataset(root / "home", identities=8, live=3, seed=11)
    export = root / "export"
    classes = write_imagefolder_from_manifest(home, export)
    assert classes >= 4
    bin_path = root / "synid_pairs.bin"
    write_bin_from_dataset(home, bin_path, n_pairs=40, seed=3)
    return {"home": home, "export": export, "bin": bin_path, "root": root}


def _state(checkpoint: str | Path) -> dict:
    import torch

    return torch.load(str(checkpoint), map_location="cpu", weights_only=True)


def test_train_a_few_steps_then_resume_equals_an_uninterrupted_run(tiny: dict[str, Path], tmp_path: Path) -> None:
    import torch

    from synid_assets.core.training.trainer import list_checkpoints, train

    straight = train(tiny["export"], tmp_path / "straight", TINY, progress=False)
    assert straight["epochs_run"] == 2 and straight["resumed_after_epoch"] is None
    assert [e for e, _ in list_checkpoints(tmp_path / "straight")] == [1, 2]

    first = train(tiny["export"], tmp_path / "stopped", TINY, progress=False, stop_after_epochs=1)
    assert first["epochs_done"] == 1
    second = train(tiny["export"], tmp_path / "stopped", TINY, progress=False)
    assert second["resumed_after_epoch"] == 1 and second["epochs_run"] == 1 and second["epochs_done"] == 2

    a, b = _state(straight["checkpoint"]), _state(second["checkpoint"])
    for name in ("backbone", "head"):
        assert a[name].keys() == b[name].keys()
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), f"{name}.{key} differs after resume"
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    meta = json.loads((tmp_path / "stopped" / "training.json").read_text())
    assert meta["num_classes"] == straight["classes"] and len(meta["history"]) == 2
    # Training again when every epoch is done runs nothing; changing the recipe is refused.
    assert train(tiny["export"], tmp_path / "stopped", TINY, progress=False)["epochs_run"] == 0
    with pytest.raises(TrainingError, match="other settings.*lr"):
        train(tiny["export"], tmp_path / "stopped", dataclasses.replace(TINY, lr=0.5), progress=False)


def test_dataloader_path_trains_exactly_as_the_cached_path(tiny: dict[str, Path], tmp_path: Path) -> None:
    """The vec2face preset decodes JPEGs in DataLoader workers; the cpu preset caches them: same batches, same model."""
    import torch

    from synid_assets.core.training.trainer import train

    config = dataclasses.replace(TINY, epochs=1)
    cached = train(tiny["export"], tmp_path / "cached", config, progress=False)
    loaded = train(tiny["export"], tmp_path / "loaded", dataclasses.replace(config, cache_images=False, workers=1),
                   progress=False)
    a, b = _state(cached["checkpoint"])["backbone"], _state(loaded["checkpoint"])["backbone"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("head", ["arcface", "adaface"])
def test_other_heads_learn_something(tiny: dict[str, Path], tmp_path: Path, head: str) -> None:
    from synid_assets.core.training.trainer import train

    config = dataclasses.replace(TINY, head=head, scale=64.0, epochs=1, lr=0.05)
    summary = train(tiny["export"], tmp_path / head, config, progress=False)
    assert summary["epochs_done"] == 1 and summary["loss"] > 0


def _synid(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synid_assets.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300, **kwargs)


def test_killed_cli_training_resumes_from_the_last_checkpoint(tiny: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**TINY.to_dict(), "epochs": 40, "lr_steps": [30], "notes": {}}))
    out = tmp_path / "model"
    command = [sys.executable, "-m", "synid_assets.cli", "train", "--export", str(tiny["export"]), "--out", str(out),
               "--preset", "cpu", "--config", str(config), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    while not (out / "checkpoints" / "epoch_002.pt").exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = sorted(p.name for p in (out / "checkpoints").glob("epoch_*.pt"))
    assert done  # a kill during a save leaves at most a hidden temp file beside them
    last = int(done[-1][len("epoch_") : -len(".pt")])
    assert last < 40
    resumed = _synid("train", "--export", str(tiny["export"]), "--out", str(out), "--config", str(config),
                     "--epochs", str(last + 1), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["resumed_after_epoch"] == last and summary["epochs_run"] == 1
    assert summary["epochs_done"] == last + 1


def test_evaluate_prints_json_records_duckdb_and_query_reads_it(tiny: dict[str, Path], tmp_path: Path) -> None:
    from synid_assets.core.training.trainer import train

    train(tiny["export"], tmp_path / "model", TINY, progress=False)
    env = {**os.environ, "SYNID_HOME": str(tiny["home"])}
    result = _synid("evaluate", "--model", str(tmp_path / "model"), "--bin", str(tiny["bin"]), "--threads", "1",
                    env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    scores = summary["sets"]["synid_pairs"]
    assert set(scores) >= {"accuracy", "std", "threshold", "pairs"} and scores["pairs"] == 40
    assert 0.0 <= scores["accuracy"] <= 1.0 and summary["average"] == scores["accuracy"]
    assert summary["model"]["epoch"] == 2 and Path(summary["database"]) == tiny["home"] / "evaluation.duckdb"

    query = _synid("query", "SELECT set_name, accuracy, pairs, epoch FROM evaluation.fr_evaluations",
                   "--format", "json", env=env)
    assert query.returncode == 0, query.stderr
    rows = json.loads(query.stdout)
    assert rows == [{"set_name": "synid_pairs", "accuracy": scores["accuracy"], "pairs": 40, "epoch": 2}]
    # The same checkpoint and set again replace the row; a checkpoint path works as --model too.
    checkpoint = summary["model"]["checkpoint"]
    again = _synid("evaluate", "--model", checkpoint, "--bin", str(tiny["bin"]), "--threads", "1", env=env)
    assert again.returncode == 0, again.stderr
    from synid_assets.core.training.results import read_evaluations

    assert len(read_evaluations(tiny["home"])) == 1


def test_clear_errors_for_a_bad_model_dir_bin_export_and_config(tiny: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty_model"
    empty.mkdir()
    result = _synid("evaluate", "--model", str(empty), "--bin", str(tiny["bin"]), "--no-record")
    assert result.returncode == 2
    assert result.stderr.strip() == f"synid evaluate: {empty}: no checkpoint (checkpoints/epoch_NNN.pt): " \
                                    "not a trained `synid train` dir"
    bad_bin = tmp_path / "bad.bin"
    bad_bin.write_bytes(b"garbage")
    result = _synid("evaluate", "--model", str(empty), "--bin", str(bad_bin), "--no-record")
    assert result.returncode == 2 and str(bad_bin) in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = _synid("train", "--export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m"), "--preset", "cpu")
    assert result.returncode == 2 and "nowhere: export dir not found" in result.stderr
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("head: softmax\nepochs: 3\n")
    with pytest.raises(TrainingError, match=r"bad\.yaml: head 'softmax'"):
        load_config(None, bad_config)
    bad_config.write_text("learning_rate: 0.1\n")
    with pytest.raises(TrainingError, match=r"bad\.yaml: unknown training setting\(s\) \['learning_rate'\]"):
        load_config(None, bad_config)


def test_make_bin_refuses_a_crop_changed_after_it_was_made(tiny: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    home = tmp_path / "home"
    shutil.copytree(tiny["home"], home)
    crops = sorted(home.glob("batches/*/aligned_document/*.png"))
    for crop in crops:  # torn copies (they still start like a PNG): every pair set meets one
        crop.write_bytes(crop.read_bytes()[:-40])
    result = _synid("make-bin", "--home", str(home), "--out", str(tmp_path / "pairs.bin"), "--pairs", "40")
    assert result.returncode == 2 and not (tmp_path / "pairs.bin").exists()
    assert any(str(crop) in result.stderr for crop in crops) and "sha256" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_presets_are_the_published_recipe_and_a_cpu_one() -> None:
    vec2face = load_config("vec2face")
    assert (vec2face.backbone, vec2face.head, vec2face.head_margin, vec2face.scale) == ("ir_se50", "arcface", 0.5, 64.0)
    assert (vec2face.batch_size, vec2face.lr, vec2face.momentum, vec2face.weight_decay) == (128, 0.1, 0.9, 5e-4)
    assert (vec2face.epochs, vec2face.lr_steps, vec2face.flip, vec2face.random_erasing) == (26, (12, 20, 24), True,
                                                                                            True)
    assert load_config(None) == vec2face and isinstance(load_config("cpu"), TrainConfig)
    assert dataclasses.replace(vec2face, head="cosface").head_margin == 0.35


def test_vec2face_backbone_is_the_arcface_frs_layout() -> None:
    """IR-SE-50 trained here has the weights layout of SynID's `arcface` FRS (TreB1eN's model_ir_se50.pth)."""
    from synid_assets.core.analysis.frs_models import build_backbone as frs_backbone
    from synid_assets.core.training.models import build_backbone

    ours = build_backbone(PRESETS["vec2face"]).state_dict()
    theirs = frs_backbone("arcface").state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}


def test_fr_model_and_fr_evaluation_assets_train_evaluate_and_record(tiny: dict[str, Path], tmp_path: Path) -> None:
    import dagster as dg

    from synid_assets.core.config.profiles import default_attributes_dir, load_profile
    from synid_assets.core.training.results import read_evaluations
    from synid_assets.defs.assets import fr_evaluation, fr_model
    from synid_assets.defs.resources import resources_from_profile

    home = tmp_path / "home"
    home.mkdir()
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(json.dumps({**TINY.to_dict(), "epochs": 1}))  # JSON is YAML
    resources = resources_from_profile(load_profile("local"), str(home), str(default_attributes_dir()))
    run_config = {
        "loggers": {"console": {"config": {"log_level": "ERROR"}}},
        "ops": {
            "fr_model": {"config": {"export_dir": str(tiny["export"]), "config_file": str(recipe), "preset": "cpu"}},
            "fr_evaluation": {"config": {"bins": [str(tiny["bin"])]}},
        },
    }
    result = dg.materialize([fr_model, fr_evaluation], resources={"dataset": resources["dataset"]},
                            run_config=run_config)
    assert result.success
    model_meta = result.asset_materializations_for_node("fr_model")[0].metadata
    assert model_meta["epochs_done"].value == 1
    assert (home / "models" / "fr_model" / "checkpoints" / "epoch_001.pt").is_file()
    rows = read_evaluations(home)
    assert [(r["set_name"], r["epoch"], r["pairs"]) for r in rows] == [("synid_pairs", 1, 40)]
    evaluation_meta = result.asset_materializations_for_node("fr_evaluation")[0].metadata
    assert evaluation_meta["accuracy_synid_pairs"].value == rows[0]["accuracy"]
    # No .bin in the run config: one clear failure, no retries.
    failed = dg.materialize([fr_evaluation], resources={"dataset": resources["dataset"]}, raise_on_error=False,
                            run_config={"ops": {"fr_evaluation": {"config": {}}}})
    assert not failed.success
    failure = next(e for e in failed.all_events if e.is_step_failure)
    assert "no .bin set given" in failure.step_failure_data.user_failure_data.description


@pytest.mark.gpu
def test_gpu_training_uses_bf16_autocast_and_channels_last(tiny: dict[str, Path], tmp_path: Path) -> None:
    from synid_assets.core.training.trainer import load_trained_backbone, train

    config = dataclasses.replace(TINY, device="cuda", cache_images=False, workers=2, threads=0)
    summary = train(tiny["export"], tmp_path / "gpu", config, progress=False)
    assert summary["epochs_done"] == 2 and summary["loss"] > 0
    meta = json.loads((tmp_path / "gpu" / "training.json").read_text())
    assert meta["device"].startswith("cuda") and meta["amp"] in ("bfloat16", "float16")
    model, *_ = load_trained_backbone(tmp_path / "gpu", "cuda")
    assert next(model.parameters()).is_cuda
