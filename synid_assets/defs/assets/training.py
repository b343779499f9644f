"""Train and evaluate: `fr_model` trains a face-recognition model on the dataset's export, `fr_evaluation` tests it.

Neither runs by itself (no automation condition): training takes hours on a GPU, so a person materializes them,
with the run config naming the export, the preset and the `.bin` verification sets.
"""

import contextlib
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from synid_assets.core.training.config import DEFAULT_PRESET
from synid_assets.defs.assets.common import GROUP, synced_home
from synid_assets.defs.executors import GPU_OP_TAGS
from synid_assets.defs.resources import DatasetResource


class FRModelConfig(dg.Config):
    export_dir: str = "exports/imagefolder"  # the imagefolder export to train on; relative: under SYNID_HOME
    out_dir: str = "models/fr_model"  # relative paths are under SYNID_HOME
    preset: str = DEFAULT_PRESET
    config_file: str | None = None  # YAML/JSON of TrainConfig settings on top of the preset
    epochs: int | None = None


class FREvaluationConfig(dg.Config):
    model_dir: str = "models/fr_model"  # a `synid train` output dir or a checkpoint in it; relative: SYNID_HOME
    bins: list[str] = []  # InsightFace .bin files (lfw.bin, cfp_fp.bin, ...)


def _under_home(home: Path, path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else home / path


def _in_home(*paths: str | None) -> list[str]:
    """The relative ones (under SYNID_HOME, so in an s3:// home's store) of the paths a run config names."""
    return [p for p in paths if p and not Path(p).is_absolute()]


@contextlib.contextmanager
def _clear_training_errors() -> Iterator[None]:
    from synid_assets.core.training.config import TrainingError

    try:
        yield
    except TrainingError as exc:
        # A bad export, config or .bin does not heal by retrying: fail once, with the message alone.
        raise dg.Failure(description=str(exc), allow_retries=False) from None


@dg.asset(
    group_name=GROUP,
    kinds={"pytorch"},
    deps=["dataset_export"],
    code_version="1",
    pool="gpu",
    op_tags=GPU_OP_TAGS,  # the `gpu` Celery queue; one nvidia.com/gpu on Kubernetes
    description="A face-recognition model (IResNet + ArcFace/CosFace/AdaFace) trained on the imagefolder export; "
    "a checkpoint per epoch under $SYNID_HOME/models/fr_model, resumed when a run is restarted.",
)
def fr_model(
    context: dg.AssetExecutionContext, config: FRModelConfig, dataset: DatasetResource
) -> dg.MaterializeResult:
    import dataclasses

    from synid_assets.core.training.config import load_config, validate
    from synid_assets.core.training.trainer import train

    # Checkpoints are pushed after the run (and after a failure), so a rerun on another machine resumes.
    pull = _in_home(config.export_dir, config.config_file, config.out_dir)
    with synced_home(dataset, pull, _in_home(config.out_dir)) as layout, _clear_training_errors():
        home = layout.home
        recipe = load_config(config.preset, _under_home(home, config.config_file) if config.config_file else None)
        if config.epochs is not None:
            recipe = validate(dataclasses.replace(recipe, epochs=config.epochs), "run config")
        out_dir = _under_home(home, config.out_dir)
        summary = train(_under_home(home, config.export_dir), out_dir, recipe, progress=False)
    context.log.info(f"trained {summary['epochs_run']} epoch(s) into {out_dir}")
    return dg.MaterializeResult(
        metadata={
            "epochs_done": summary["epochs_done"],
            "images": summary["images"],
            "classes": summary["classes"],
            "loss": summary["loss"],
            "images_per_s": summary["images_per_s"],
            "checkpoint": dg.MetadataValue.path(summary["checkpoint"]),
            "recipe": dg.MetadataValue.json(recipe.to_dict()),
        }
    )


@dg.asset(
    group_name=GROUP,
    kinds={"pytorch", "duckdb"},
    deps=[fr_model],
    code_version="1",
    pool="gpu",
    op_tags=GPU_OP_TAGS,  # the `gpu` Celery queue; one nvidia.com/gpu on Kubernetes
    description="Verification accuracy (10-fold, flip-summed embeddings) of fr_model on InsightFace .bin sets; "
    "rows in $SYNID_HOME/evaluation.duckdb (fr_evaluations), which the quality report reads.",
)
def fr_evaluation(
    context: dg.AssetExecutionContext, config: FREvaluationConfig, dataset: DatasetResource
) -> dg.MaterializeResult:
    from synid_assets.core.training.evaluation import evaluate_model

    if not config.bins:
        raise dg.Failure(description="fr_evaluation: no .bin set given (run config: bins: [lfw.bin, ...])",
                         allow_retries=False)
    pull = _in_home(config.model_dir, *config.bins, "evaluation.duckdb")
    with synced_home(dataset, pull, ["evaluation.duckdb"]) as layout, _clear_training_errors():
        home = layout.home
        summary = evaluate_model(
            _under_home(home, config.model_dir), [_under_home(home, b) for b in config.bins], home=home
        )
    accuracies = {f"accuracy_{name}": result["accuracy"] for name, result in summary["sets"].items()}
    return dg.MaterializeResult(
        metadata={
            **accuracies,
            "average": summary["average"],
            "checkpoint": dg.MetadataValue.path(summary["model"]["checkpoint"]),
            "results": dg.MetadataValue.json(summary["sets"]),
            "database": dg.MetadataValue.path(summary["database"]),
        }
    )
