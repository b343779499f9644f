"""`synid evaluate`: verification accuracy of a trained model on `.bin` sets; `synid make-bin` makes one."""

from __future__ import annotations

import argparse
import json
import sys


def run_evaluate(model: str, bins: list[str], device: str, record: bool, threads: int | None = None) -> int:
    """Print {"sets": {...}, "average": ...} as JSON and record it in $SYNID_HOME/evaluation.duckdb."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    from synid_assets.cli.home import dataset_home
    from synid_assets.core.training.config import TrainingError
    from synid_assets.core.training.evaluation import evaluate_model

    recorded = ["evaluation.duckdb"] if record else []
    with dataset_home("evaluate", None, recorded, recorded) as layout:
        try:
            summary = evaluate_model(model, bins, layout.home if record else None, device)
        except TrainingError as exc:
            print(f"synid evaluate: {exc}", file=sys.stderr)
            return 2
    print(json.dumps(summary, indent=2))
    return 0


def run_make_bin(home: str, out: str, pairs: int, seed: int) -> int:
    from synid_assets.cli.home import DATABASES, dataset_home
    from synid_assets.core.training.config import TrainingError
    from synid_assets.core.training.pairs import write_bin_from_dataset

    with dataset_home("make-bin", home, [*DATABASES, "batches"]) as layout:
        try:
            summary = write_bin_from_dataset(layout.home, out, pairs, seed)
        except TrainingError as exc:
            print(f"synid make-bin: {exc}", file=sys.stderr)
            return 2
    print(json.dumps(summary, indent=2))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    cmd = commands.add_parser("evaluate", help="verification accuracy of a trained model on InsightFace .bin sets")
    cmd.add_argument("--model", required=True, help="a `synid train` output dir (newest checkpoint) or a checkpoint")
    cmd.add_argument("--bin", nargs="+", required=True, dest="bins", help="InsightFace .bin files (lfw.bin ...)")
    cmd.add_argument("--device", default="auto")
    cmd.add_argument("--threads", type=int, default=None, help="CPU threads (1 is fastest on a busy machine)")
    cmd.add_argument("--no-record", action="store_true", help="do not write $SYNID_HOME/evaluation.duckdb")
    cmd.set_defaults(handler=lambda args: run_evaluate(args.model, args.bins, args.device, not args.no_record,
                                                       args.threads))

    make = commands.add_parser("make-bin", help="a verification .bin of a SynID dataset's accepted faces")
    make.add_argument("--home", required=True, help="SYNID_HOME of the dataset (its manifest.duckdb)")
    make.add_argument("--out", required=True, help=".bin file to write")
    make.add_argument("--pairs", type=int, default=600, help="pairs, half genuine, half impostor")
    make.add_argument("--seed", type=int, default=0)
    make.set_defaults(handler=lambda args: run_make_bin(args.home, args.out, args.pairs, args.seed))
