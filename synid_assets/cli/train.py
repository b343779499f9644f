"""`synid train`: train a face-recognition model on a SynID export (resumes a killed training)."""

from __future__ import annotations

import argparse
import json
import sys


def run_train(export: str, out: str, preset: str | None, config_file: str | None, epochs: int | None,
              device: str | None, quiet: bool, threads: int | None = None) -> int:
    """Train (or resume) into `out`; prints the summary as JSON. Exit 2 on bad input, 130 when interrupted."""
    import dataclasses

    from synid_assets.core.training.config import TrainingError, load_config, validate
    from synid_assets.core.training.trainer import list_checkpoints, train

    try:
        config = load_config(preset, config_file)
        overrides = {k: v for k, v in (("epochs", epochs), ("device", device), ("threads", threads)) if v is not None}
        if overrides:
            config = validate(dataclasses.replace(config, **overrides), "command line")
        summary = train(export, out, config, progress=not quiet)
    except TrainingError as exc:
        print(f"synid train: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        done = list_checkpoints(out)
        after = f"after epoch {done[-1][0]}" if done else "from the start"
        print(f"synid train: interrupted; run the same command again to resume {after}", file=sys.stderr)
        return 130
    print(json.dumps(summary, indent=2))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    from synid_assets.core.training.config import PRESETS

    cmd = commands.add_parser("train", help="train a face-recognition model on an export (imagefolder)")
    cmd.add_argument("--export", required=True, help="export dir (`synid export --format imagefolder`)")
    cmd.add_argument("--out", required=True, help="output dir: training.json and checkpoints/epoch_NNN.pt")
    cmd.add_argument("--preset", choices=sorted(PRESETS), default=None, help="training recipe (default vec2face)")
    cmd.add_argument("--config", default=None, help="YAML/JSON of TrainConfig settings (may name a preset)")
    cmd.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    cmd.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1 ...")
    cmd.add_argument("--threads", type=int, default=None, help="CPU threads (1 is fastest on a busy machine)")
    cmd.add_argument("--quiet", action="store_true", help="no progress bar")
    cmd.set_defaults(handler=lambda args: run_train(args.export, args.out, args.preset, args.config, args.epochs,
                                                    args.device, args.quiet, args.threads))
