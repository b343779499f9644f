"""Evaluate a trained model on `.bin` verification sets and record the results in evaluation.duckdb."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synid_assets.core.training.config import TrainingError


def evaluate_model(
    model_path: str | Path,
    bin_paths: list[str | Path],
    home: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 256,
) -> dict[str, Any]:
    """{"sets": {stem: {accuracy, std, threshold, cosine_threshold, pairs}}, "average": ..., "model": ...}.

    Every .bin is read and checked before the model runs, so a bad file fails fast. With `home`, the rows go
    to home/evaluation.duckdb (fr_evaluations).
    """
    from synid_assets.core.generation.torch_runtime import resolve_device
    from synid_assets.core.training.results import record_evaluations
    from synid_assets.core.training.trainer import load_trained_backbone
    from synid_assets.core.training.verification import evaluate_bin, read_bin, summarize

    if not bin_paths:
        raise TrainingError("no .bin verification set given")
    names: dict[str, Path] = {}
    for raw in bin_paths:
        path = Path(raw)
        if path.stem in names:
            raise TrainingError(f"{path}: two sets named {path.stem!r} ({names[path.stem]} too)")
        read_bin(path)
        names[path.stem] = path
    model, config, checkpoint, epoch = load_trained_backbone(model_path, resolve_device(device))
    model_dir = checkpoint.parent.parent
    results = {name: evaluate_bin(model, path, config.image_size, batch_size) for name, path in names.items()}
    summary = summarize(results)
    summary["model"] = {"checkpoint": str(checkpoint), "epoch": epoch, "backbone": config.backbone, "head": config.head}
    if home is not None:
        export_dir = None
        meta = model_dir / "training.json"
        if meta.is_file():
            export_dir = json.loads(meta.read_text(encoding="utf-8")).get("export_dir")
        rows = [
            {
                "model_dir": str(model_dir.resolve()),
                "checkpoint": str(checkpoint.resolve()),
                "epoch": epoch,
                "set_name": name,
                "bin_path": str(names[name].resolve()),
                **{k: result[k] for k in ("accuracy", "std", "threshold", "cosine_threshold", "pairs")},
                "backbone": config.backbone,
                "head": config.head,
                "export_dir": export_dir,
            }
            for name, result in results.items()
        ]
        summary["database"] = str(record_evaluations(home, rows))
    return summary
