"""Threshold calibration: `synid thresholds calibrate-local` and `synid calibrate` from labelled pairs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def run_calibrate_local(identities: int, seed: int, write: str | None) -> int:
    """Thresholds of the dlib embedder on the procedural renderer's impostor pairs."""
    from synid_assets.core.quality.calibration import calibrate_renderer_thresholds

    result = calibrate_renderer_thresholds(n_identities=identities, seed=seed)
    thresholds = result["fmr_thresholds"]
    source = (
        f"calibrated on {result['pairs']} impostor pairs of {result['detected']} procedural documents "
        f"(renderer v{result['renderer_version']}, seed {seed}) by `synid thresholds calibrate-local "
        f"--identities {identities} --seed {seed}`"
    )
    for fmr, value in sorted(thresholds.items(), reverse=True):
        print(f"FMR {fmr:g}: threshold {value:.4f}")
    print(f"source: {source}")
    if write:
        _write_thresholds(Path(write), thresholds, source)
        print(f"written to {write}")
    return 0


def run_calibrate(embedder: str, pairs_file: str, images: str | None, options: list[str], write: str | None) -> int:
    """Thresholds at FMR 1e-3 and 1e-4 (and FNMR there) from labelled pairs scored by any embedder."""
    from synid_assets.core.config.registry import create_backend
    from synid_assets.core.errors import BackendError
    from synid_assets.core.quality.pair_calibration import (
        PairsFileError,
        read_pairs,
        score_pairs,
        thresholds_from_scores,
    )

    try:
        parsed = dict(option.split("=", 1) for option in options)
    except ValueError:
        print("synid calibrate: --embedder-option takes KEY=VALUE", file=sys.stderr)
        return 2
    try:
        pairs = read_pairs(pairs_file, images)
        analyzer = None
        if any(pair.score is None for pair in pairs):
            analyzer = create_backend("face_analyzer", embedder, {k: _yaml_value(v) for k, v in parsed.items()})
            if hasattr(analyzer, "load"):
                analyzer.load()
        genuine, impostor, counts = score_pairs(pairs, analyzer)
        result = thresholds_from_scores(genuine, impostor)
    except (PairsFileError, BackendError, ValueError) as exc:
        print(f"synid calibrate: {exc}", file=sys.stderr)
        return 2
    print(f"embedder {embedder}: {result['genuine']} genuine and {result['impostor']} impostor pairs "
          f"({counts['skipped_no_face']} skipped: no face; {counts['precomputed']} precomputed scores)")
    if "eer" in result:
        print(f"EER {result['eer']:.4f} at {result['eer_threshold']:.4f}")
    for fmr, row in sorted(result["fmr"].items(), reverse=True):
        fnmr = "n/a" if row["fnmr"] is None else f"{row['fnmr']:.4f}"
        note = "" if row["measurable"] else f"  (not measurable: fewer than {1 / fmr:.0f} impostor pairs)"
        print(f"FMR {fmr:g}: threshold {row['threshold']:.4f}  FNMR {fnmr}{note}")
    if write:
        source = (
            f"calibrated by `synid calibrate --embedder {embedder} --pairs {Path(pairs_file).name}` on "
            f"{result['impostor']} impostor / {result['genuine']} genuine pairs"
        )
        measurable = {fmr: row["threshold"] for fmr, row in result["fmr"].items() if row["measurable"]}
        if not measurable:
            print("synid calibrate: no FMR is measurable with so few impostor pairs; nothing written", file=sys.stderr)
            return 1
        _write_thresholds(Path(write), measurable, source)
        print(f"written to {write}")
    return 0


def _yaml_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def _write_thresholds(path: Path, thresholds: dict[float, float], source: str) -> None:
    """Replace the face_analyzer.thresholds list of a profile, keeping the rest of the file as it is."""
    import re

    text = path.read_text(encoding="utf-8")
    entries = "".join(
        f"    - fmr: {fmr:g}\n      value: {value:.4f}\n      source: \"{source}\"\n"
        for fmr, value in sorted(thresholds.items(), reverse=True)
    )
    pattern = re.compile(r"(  thresholds:\n)(?:    - .*\n(?:      .*\n)*)*")
    if not pattern.search(text):
        raise SystemExit(f"{path}: no face_analyzer 'thresholds:' list to replace")
    path.write_text(pattern.sub(lambda m: m.group(1) + entries, text, count=1), encoding="utf-8")


def register(commands: argparse._SubParsersAction) -> None:
    thresholds = commands.add_parser("thresholds", help="embedder thresholds")
    threshold_commands = thresholds.add_subparsers(dest="thresholds_command", required=True)
    calibrate = threshold_commands.add_parser(
        "calibrate-local", help="calibrate dlib thresholds on the procedural renderer's impostor pairs"
    )
    calibrate.add_argument("--identities", type=int, default=300)
    calibrate.add_argument("--seed", type=int, default=12345)
    calibrate.add_argument("--write", default=None, help="profile YAML to write the thresholds into")
    calibrate.set_defaults(handler=lambda args: run_calibrate_local(args.identities, args.seed, args.write))

    calibrate_pairs = commands.add_parser("calibrate", help="thresholds at FMR 1e-3/1e-4 from labelled pairs")
    calibrate_pairs.add_argument("--embedder", required=True, help="a face_analyzer backend, e.g. dlib")
    calibrate_pairs.add_argument("--pairs", required=True, help="LFW pairs.txt, or CSV path1,path2,label / score,label")
    calibrate_pairs.add_argument("--images", default=None, help="image root for relative paths (LFW: the lfw dir)")
    calibrate_pairs.add_argument("--embedder-option", action="append", default=[], help="KEY=VALUE backend option")
    calibrate_pairs.add_argument("--write", default=None, help="profile YAML whose thresholds to replace")
    calibrate_pairs.set_defaults(
        handler=lambda args: run_calibrate(args.embedder, args.pairs, args.images, args.embedder_option, args.write)
    )
