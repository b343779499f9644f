"""Threshold calibration: `synid thresholds calibrate-local` and `synid calibrate` from labelled pairs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synid_assets.core.quality.pair_calibration import PairScores


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


def run_calibrate(
    embedder: str | None,
    pairs_file: str,
    images: str | None,
    options: list[str],
    write: str | None,
    profile: str | None = None,
) -> int:
    """Thresholds at FMR 1e-3 and 1e-4 (and FNMR there) from labelled pairs scored by any embedder."""
    import yaml

    from synid_assets.core.config.profiles import load_profile
    from synid_assets.core.config.registry import create_backend
    from synid_assets.core.errors import BackendError
    from synid_assets.core.quality.calibration import analyzer_settings
    from synid_assets.core.quality.pair_calibration import PairsFileError, read_pairs, score_pairs, thresholds_for

    try:
        overrides = {key: yaml.safe_load(value) for key, value in (option.split("=", 1) for option in options)}
    except (ValueError, yaml.YAMLError):
        print("synid calibrate: --embedder-option takes KEY=VALUE with a YAML value", file=sys.stderr)
        return 2
    try:
        backend, settings = embedder, {}
        if profile:
            backend, settings = analyzer_settings(load_profile(profile)["face_analyzer"])
            if embedder and embedder != backend:
                raise ValueError(f"--embedder {embedder} differs from profile {profile}'s face_analyzer {backend}")
        if not backend:
            raise ValueError("give --embedder BACKEND or --profile NAME")
        settings = {**settings, **overrides}
        pairs = read_pairs(pairs_file, images)
        analyzer = None
        if any(pair.score is None for pair in pairs):
            shown = ", ".join(f"{key}={value}" for key, value in settings.items())
            origin = f", profile {profile}" if profile else ""
            print(f"embedder {backend}" + (f" ({shown})" if shown else "") + origin)
            analyzer = create_backend("face_analyzer", backend, settings)
            if hasattr(analyzer, "load"):
                analyzer.load()
        scores = score_pairs(pairs, analyzer)
        _print_images(scores, images)
        result = thresholds_for(scores)
    except (PairsFileError, BackendError, ValueError) as exc:
        print(f"synid calibrate: {exc}", file=sys.stderr)
        return 2
    print(f"pairs: {result['genuine']} genuine and {result['impostor']} impostor scored; "
          f"{scores.skipped_no_face} skipped: no face ({scores.skipped_genuine} genuine, "
          f"{scores.skipped_impostor} impostor); {scores.precomputed} precomputed scores")
    for label, values in (("genuine", scores.genuine), ("impostor", scores.impostor)):
        if values.size:
            print(f"{label} scores: min {values.min():.4f}, max {values.max():.4f}")
    if "eer" in result:
        print(f"EER {result['eer']:.4f} at {result['eer_threshold']:.4f}")
    for fmr, row in sorted(result["fmr"].items(), reverse=True):
        fnmr = "n/a" if row["fnmr"] is None else f"{row['fnmr']:.4f}"
        note = "" if row["measurable"] else f"  (not measurable: fewer than {1 / fmr:.0f} impostor pairs)"
        print(f"FMR {fmr:g}: threshold {row['threshold']:.6f}  FNMR {fnmr}{note}")
    if write:
        command = f"--profile {profile}" if profile else f"--embedder {backend}"
        source = (
            f"calibrated by `synid calibrate {command} --pairs {Path(pairs_file).name}` on "
            f"{result['impostor']} impostor / {result['genuine']} genuine pairs"
        )
        measurable = {fmr: row["threshold"] for fmr, row in result["fmr"].items() if row["measurable"]}
        if not measurable:
            print("synid calibrate: no FMR is measurable with so few impostor pairs; nothing written", file=sys.stderr)
            return 1
        _write_thresholds(Path(write), measurable, source)
        print(f"written to {write} (rounded up to 4 decimals, so each FMR stays at or under its target)")
    return 0


def _print_images(scores: PairScores, images: str | None) -> None:
    """How many images had a face, which had none, and which face was scored where there were several."""
    if not scores.images:
        return
    missing = scores.images_without_face
    print(f"images: {len(scores.images)} read, {len(scores.images) - len(missing)} with a face, {len(missing)} without")
    for path in missing[:_LISTED]:
        print(f"  {_shown(path, images)}: no face")
    if len(missing) > _LISTED:
        print(f"  ... and {len(missing) - _LISTED} more without a face")
    several = scores.images_with_several_faces
    for path, faces in several.items():
        box = ",".join(str(v) for v in faces.bbox) if faces.bbox else "none"
        name = _shown(path, images)
        print(f"  {name}: {faces.face_count} faces, scored the largest (bbox left,top,right,bottom {box})")
    if several:
        print(f"images with several faces: {len(several)} (the largest face of each scored)")


_LISTED = 20  # images without a face named one by one; LFW-sized runs would otherwise print thousands


def _shown(path: Path, images: str | None) -> str:
    if images:
        root = Path(os.path.abspath(images))
        if path.is_relative_to(root):
            return str(path.relative_to(root))
    return str(path)


def _write_thresholds(path: Path, thresholds: dict[float, float], source: str) -> None:
    """Replace the face_analyzer.thresholds list of a profile, keeping the rest of the file as it is.

    Values are rounded up (never down): a similarity threshold written lower than calibrated accepts impostor
    pairs the calibration rejected, so the written FMR would exceed its target."""
    import re

    from synid_assets.core.quality.calibration import round_threshold_up

    text = path.read_text(encoding="utf-8")
    entries = "".join(
        f"    - fmr: {fmr:g}\n      value: {round_threshold_up(value, 4):.4f}\n      source: \"{source}\"\n"
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

    calibrate_pairs = commands.add_parser(
        "calibrate",
        help="thresholds at FMR 1e-3/1e-4 from labelled pairs",
        description="Thresholds and FNMR at FMR 1e-3 and 1e-4 from labelled pairs. Prints how many images had a "
        "face, names those without one and those with several faces (the largest is scored), and the score ranges.",
    )
    calibrate_pairs.add_argument(
        "--embedder", default=None, help="a face_analyzer backend, e.g. dlib (default: the --profile's backend)"
    )
    calibrate_pairs.add_argument(
        "--profile",
        default=None,
        help="resource profile (name or YAML path) whose face_analyzer section gives the backend and its options "
        "(e.g. dlib's upsample, retry_upsample), so the scores are those the pipeline would compute",
    )
    calibrate_pairs.add_argument("--pairs", required=True, help="LFW pairs.txt, or CSV path1,path2,label / score,label")
    calibrate_pairs.add_argument(
        "--images", default=None, help="image root for relative paths (LFW: the lfw dir; symlinks inside are followed)"
    )
    calibrate_pairs.add_argument(
        "--embedder-option", action="append", default=[], help="KEY=VALUE backend option; overrides the profile's"
    )
    calibrate_pairs.add_argument(
        "--write", default=None, help="profile YAML whose thresholds to replace (values rounded up to 4 decimals)"
    )
    calibrate_pairs.set_defaults(
        handler=lambda args: run_calibrate(
            args.embedder, args.pairs, args.images, args.embedder_option, args.write, args.profile
        )
    )
