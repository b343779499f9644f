"""The `synid` command: demo, query, attributes validate, thresholds calibrate-local."""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from synid_assets.core.profiles import REPO_ROOT, ProfileError, default_attributes_dir
from synid_assets.core.store import default_home


def _prepare_homes() -> tuple[Path, Path]:
    """SYNID_HOME (default ./data) and DAGSTER_HOME (default $SYNID_HOME/dagster) with the instance config."""
    home = default_home()
    home.mkdir(parents=True, exist_ok=True)
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or home / "dagster").resolve()
    dagster_home.mkdir(parents=True, exist_ok=True)
    instance_yaml = dagster_home / "dagster.yaml"
    if not instance_yaml.exists() and (REPO_ROOT / "dagster.yaml").exists():
        shutil.copyfile(REPO_ROOT / "dagster.yaml", instance_yaml)
    os.environ["SYNID_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return home, dagster_home


def _failure_messages(result: Any) -> list[str]:
    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            text = (data.user_failure_data.description if data.user_failure_data else None) or (
                data.error.message.strip() if data.error else "step failed"
            )
            messages.append(f"{event.step_key}: {text}")
    return messages or ["run failed"]


_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def run_demo(
    identities: int, live: int, attributes: str | None, seed: int | None, profile: str | None
) -> int:
    """Materialize the whole graph on the embedded defaults for `identities` identities."""
    if identities < 1 or live < 0:
        print("synid demo: --identities must be >= 1 and --live >= 0", file=sys.stderr)
        return 2
    home, dagster_home = _prepare_homes()
    os.environ["SYNID_LIVE"] = str(live)
    if seed is not None:
        os.environ["SYNID_SEED"] = str(seed)
    if attributes:
        os.environ["SYNID_ATTRIBUTES"] = str(Path(attributes).resolve())
    import dagster as dg

    from synid_assets.definitions import build_definitions
    from synid_assets.defs.partitions import batch_key, identity_batches

    try:
        defs = build_definitions(profile)
    except ProfileError as exc:
        print(f"synid demo: {exc}", file=sys.stderr)
        return 2
    dataset = defs.resources["dataset"]
    instance = dg.DagsterInstance.get()
    print(f"SYNID_HOME={home}\nDAGSTER_HOME={dagster_home}\nattributes: {dataset.attributes_dir}")

    result = defs.resolve_job_def("attribute_spec_job").execute_in_process(
        instance=instance, raise_on_error=False, run_config=_QUIET
    )
    if not result.success:
        print("attribute spec is invalid; nothing was generated:", file=sys.stderr)
        for message in _failure_messages(result):
            print(f"  {message}", file=sys.stderr)
        return 1

    batches = math.ceil(identities / dataset.batch_size)
    keys = [batch_key(i) for i in range(batches)]
    known = set(instance.get_dynamic_partitions(identity_batches.name))
    instance.add_dynamic_partitions(identity_batches.name, [k for k in keys if k not in known])
    job = defs.resolve_job_def("synid_batch")
    for number, key in enumerate(keys):
        size = min(dataset.batch_size, identities - number * dataset.batch_size)
        print(f"materializing {key}: {size} identities x {live} live images ...", flush=True)
        run_config = {**_QUIET, "ops": {"identity_attributes": {"config": {"batch_size": size}}}}
        result = job.execute_in_process(
            partition_key=key, instance=instance, run_config=run_config, raise_on_error=False
        )
        if not result.success:
            print(f"batch {key} failed:", file=sys.stderr)
            for message in _failure_messages(result):
                print(f"  {message}", file=sys.stderr)
            return 1
    _print_summary(home)
    return 0


def _print_summary(home: Path) -> None:
    import duckdb

    from synid_assets.core.store import DatasetLayout

    layout = DatasetLayout(home)
    with duckdb.connect(str(layout.manifest_path), read_only=True) as con:
        status = con.execute("SELECT status, count(*) FROM identities GROUP BY 1 ORDER BY 1").fetchall()
        images = con.execute(
            "SELECT kind, count(*), count(*) FILTER (face_detected), avg(similarity_to_document) "
            "FROM images GROUP BY 1 ORDER BY 1"
        ).fetchall()
    print("\nidentities by status: " + ", ".join(f"{s} {n}" for s, n in status))
    for kind, n, detected, sim in images:
        extra = f", mean similarity to document {sim:.3f}" if sim is not None else ""
        print(f"{kind} images: {n}, face detected in {detected}{extra}")
    print(
        f"\noutputs:\n  manifest   {layout.manifest_path}\n  images     {layout.batches_dir}/<batch>/"
        f"{{documents,live,aligned_*}}\n  embeddings {layout.lancedb_uri}\n"
        "\nnext:\n  make ui                      # Dagster UI on http://127.0.0.1:3000 with these runs\n"
        "  .venv/bin/synid query \"SELECT * FROM identities LIMIT 5\""
    )


def run_query(sql: str, database: str | None, output: str) -> int:
    """Run SQL against the manifest, read-only, with no access to other files."""
    import duckdb

    from synid_assets.core.store import DatasetLayout

    path = Path(database) if database else DatasetLayout(default_home()).manifest_path
    if not path.exists():
        print(f"synid query: {path} does not exist; run `make demo` (or materialize dataset_manifest)", file=sys.stderr)
        return 2
    quality = path.with_name("quality.duckdb")
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            if quality.exists():  # the quality report's tables, as schema `quality`
                con.execute(f"ATTACH '{quality}' AS quality (READ_ONLY)")
            # From here on no file can be read or written, and the setting cannot be undone.
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            relation = con.sql(sql)
            if relation is None:
                print("synid query: the statement returned no rows", file=sys.stderr)
                return 0
            columns, rows = relation.columns, relation.fetchall()
    except duckdb.Error as exc:
        print(f"synid query: {exc}", file=sys.stderr)
        return 1
    if output == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    elif output == "json":
        import json

        print(json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str, indent=2))
    else:
        print(format_table(columns, rows))
    return 0


def format_table(columns: list[str], rows: list[tuple], max_width: int = 60) -> str:
    def cell(value: Any) -> str:
        text = "NULL" if value is None else str(value)
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |", line]
    out += ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) + " |" for r in cells]
    out += [line, f"({len(rows)} row{'s' if len(rows) != 1 else ''})"]
    return "\n".join(out)


def run_validate(directory: str) -> int:
    from synid_assets.core.spec import AttributeSpecError, load_attribute_spec

    try:
        spec = load_attribute_spec(directory)
    except AttributeSpecError as exc:
        print(f"{directory}: invalid attribute spec\n{exc}", file=sys.stderr)
        return 1
    for warning in spec.warnings:
        print(f"warning: {warning}")
    print(f"{directory}: valid, {len(spec.classes)} classes, {len(spec.clashes)} clash rules")
    for cls in spec.classes:
        print(f"  {cls.name:<14} used with p={cls.usage_probability:<6g} {len(cls.values)} values")
    print(f"fingerprint {spec.fingerprint}")
    return 0


def run_calibrate_local(identities: int, seed: int, write: str | None) -> int:
    """Thresholds of the dlib embedder on the procedural renderer's impostor pairs."""
    from synid_assets.core.calibration import calibrate_renderer_thresholds

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


def run_filter(vectors: str, threshold: float, mode: str, target_fmr: float | None, out: str) -> int:
    """The identity filter on vectors alone: an (n, d) .npy in identity order -> {"kept": [...]} JSON."""
    from synid_assets.core.filter_scale import filter_vectors_file

    if mode == "fmr" and target_fmr is None:
        print("synid filter: --mode fmr needs --target-fmr", file=sys.stderr)
        return 2
    try:
        result = filter_vectors_file(vectors, threshold, mode, target_fmr, out)
    except ValueError as exc:
        print(f"synid filter: {exc}", file=sys.stderr)
        return 2
    print(f"{mode}: kept {len(result['kept'])} of {result['n']} (pairs above {threshold}: {result['edges']}, "
          f"method {result['method']}) -> {out}")
    return 0


def run_calibrate(embedder: str, pairs_file: str, images: str | None, options: list[str], write: str | None) -> int:
    """Thresholds at FMR 1e-3 and 1e-4 (and FNMR there) from labelled pairs scored by any embedder."""
    from synid_assets.core.backends import create_backend
    from synid_assets.core.interfaces import BackendError
    from synid_assets.core.pair_calibration import PairsFileError, read_pairs, score_pairs, thresholds_from_scores

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


def run_models(action: str, profile_name: str, cache_dir: str | None) -> int:
    """List, check or download the models a profile needs. HF_TOKEN is read, never shown."""
    from synid_assets.core.models import check_models, download_models, profile_models
    from synid_assets.core.profiles import load_profile

    try:
        profile = load_profile(profile_name)
    except ProfileError as exc:
        print(f"synid models: {exc}", file=sys.stderr)
        return 2
    refs = profile_models(profile)
    if not refs:
        print(f"profile {profile['name']}: embedded backends only, nothing to download")
        return 0
    if action == "download":
        try:
            for ref, path in download_models(refs, cache_dir):
                print(f"{ref.role:<26} {ref.repo_id}  ->  {path}  [{ref.license}]")
        except Exception as exc:  # network, auth, gated repo: say which model, never the token
            print(f"synid models download: {type(exc).__name__}: {exc}", file=sys.stderr)
            print("gated repos (FLUX.1-dev) need an accepted licence and HF_TOKEN in the environment", file=sys.stderr)
            return 1
        return 0
    missing = 0
    for ref, present, where in check_models(refs, cache_dir):
        missing += not present
        state = "ok     " if present else "MISSING"
        print(f"{state} {ref.role:<26} {ref.repo_id}@{ref.revision or 'main'}  {where}  [{ref.license}]")
    if missing:
        print(f"{missing} model(s) missing: run `synid models download {profile_name}`", file=sys.stderr)
    return 1 if missing else 0


def run_regenerate(image_id: str, profile_name: str | None, out: str | None) -> int:
    """Re-make one image from its manifest row with the profile's generator and compare hashes."""
    import json

    import duckdb

    from synid_assets.core.backends import create_backend
    from synid_assets.core.interfaces import BackendError
    from synid_assets.core.profiles import load_profile
    from synid_assets.core.store import DatasetLayout, atomic_write_bytes, png_bytes

    layout = DatasetLayout(default_home())
    if not layout.manifest_path.exists():
        print(f"synid regenerate: {layout.manifest_path} does not exist", file=sys.stderr)
        return 2
    with duckdb.connect(str(layout.manifest_path), read_only=True) as con:
        row = con.execute(
            "SELECT kind, generator, sha256, params FROM images WHERE image_id = ?", [image_id]
        ).fetchone()
    if row is None:
        print(f"synid regenerate: no image {image_id!r} in {layout.manifest_path}", file=sys.stderr)
        return 2
    kind, generator_name, sha256, params = row
    params = json.loads(params)
    try:
        profile = load_profile(profile_name)
        section_name = "document_generator" if kind == "document" else "live_generator"
        section = profile[section_name]
        # A live_generator section may list several generators: use the one that made this image.
        section = next((g for g in section.get("generators") or [] if g.get("backend") == generator_name), section)
        if section.get("backend") != generator_name:
            raise BackendError(
                f"image {image_id} was made by {generator_name!r} but profile {profile['name']!r} uses "
                f"{section.get('backend')!r}: pass --profile with a profile that uses {generator_name!r}"
            )
        skip = ("backend", "keep_loaded", "count", "generators")
        options = {k: v for k, v in section.items() if k not in skip and v is not None}
        generator = create_backend(section_name, generator_name, options)
        if hasattr(generator, "load"):
            generator.load()
        image = generator.regenerate(params)
    except (ProfileError, BackendError) as exc:
        print(f"synid regenerate: {exc}", file=sys.stderr)
        return 2
    recorded_version = str(params.get("version", ""))
    if recorded_version and recorded_version != str(generator.version):
        print(f"note: {image_id} was made by {generator_name} v{recorded_version}; this installation has "
              f"v{generator.version}, so the bytes may differ")
    data = png_bytes(image)
    target = Path(out) if out else layout.home / "regenerated" / f"{image_id}.png"
    atomic_write_bytes(target, data)
    import hashlib

    new_sha = hashlib.sha256(data).hexdigest()
    same = new_sha == sha256
    print(f"{image_id}: regenerated to {target}\n  manifest sha256 {sha256}\n  new      sha256 {new_sha}")
    print("  identical" if same else "  DIFFERENT (another machine, library version or nondeterministic kernel)")
    return 0 if same else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synid", description="SynID: synthetic face-recognition datasets")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="materialize every asset on the embedded defaults")
    demo.add_argument("--identities", type=int, default=32)
    demo.add_argument("--live", type=int, default=2, help="live images per accepted identity (0 allowed)")
    demo.add_argument("--attributes", default=None, help=f"attribute spec dir (default {default_attributes_dir()})")
    demo.add_argument("--seed", type=int, default=None, help="dataset seed (default: the profile's)")
    demo.add_argument("--profile", default=None, help="resource profile name or YAML path (default local)")

    query = commands.add_parser("query", help="read-only SQL over the DuckDB manifest")
    query.add_argument("sql")
    query.add_argument("--db", default=None, help="manifest path (default $SYNID_HOME/manifest.duckdb)")
    query.add_argument("--format", choices=["table", "csv", "json"], default="table")

    attributes = commands.add_parser("attributes", help="attribute spec tools")
    attribute_commands = attributes.add_subparsers(dest="attributes_command", required=True)
    validate = attribute_commands.add_parser("validate", help="validate an attribute spec dir")
    validate.add_argument("directory")

    thresholds = commands.add_parser("thresholds", help="embedder thresholds")
    threshold_commands = thresholds.add_subparsers(dest="thresholds_command", required=True)
    calibrate = threshold_commands.add_parser(
        "calibrate-local", help="calibrate dlib thresholds on the procedural renderer's impostor pairs"
    )
    calibrate.add_argument("--identities", type=int, default=300)
    calibrate.add_argument("--seed", type=int, default=12345)
    calibrate.add_argument("--write", default=None, help="profile YAML to write the thresholds into")

    filter_cmd = commands.add_parser("filter", help="filter identities on embeddings alone (a .npy)")
    filter_cmd.add_argument("--vectors", required=True, help="(n, d) float .npy, rows in identity order")
    filter_cmd.add_argument("--threshold", type=float, required=True, help="cosine similarity threshold")
    filter_cmd.add_argument("--mode", choices=["strict", "fmr"], default="strict")
    filter_cmd.add_argument("--target-fmr", type=float, default=None, help="fmr mode: dataset FMR to reach")
    filter_cmd.add_argument("--out", required=True, help="JSON file to write ({'kept': [row indices]})")

    calibrate_pairs = commands.add_parser("calibrate", help="thresholds at FMR 1e-3/1e-4 from labelled pairs")
    calibrate_pairs.add_argument("--embedder", required=True, help="a face_analyzer backend, e.g. dlib")
    calibrate_pairs.add_argument("--pairs", required=True, help="LFW pairs.txt, or CSV path1,path2,label / score,label")
    calibrate_pairs.add_argument("--images", default=None, help="image root for relative paths (LFW: the lfw dir)")
    calibrate_pairs.add_argument("--embedder-option", action="append", default=[], help="KEY=VALUE backend option")
    calibrate_pairs.add_argument("--write", default=None, help="profile YAML whose thresholds to replace")

    models = commands.add_parser("models", help="models a resource profile needs")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    for action, text in (("check", "say which models are missing (no network)"),
                         ("download", "fetch them with huggingface_hub (token from HF_TOKEN)")):
        command = model_commands.add_parser(action, help=text)
        command.add_argument("profile")
        command.add_argument("--cache-dir", default=None, help="default: the Hugging Face cache")

    regenerate = commands.add_parser("regenerate", help="re-make one image from its manifest row, compare hashes")
    regenerate.add_argument("image_id")
    regenerate.add_argument("--profile", default=None)
    regenerate.add_argument("--out", default=None, help="default $SYNID_HOME/regenerated/<image_id>.png")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        return run_demo(args.identities, args.live, args.attributes, args.seed, args.profile)
    if args.command == "query":
        return run_query(args.sql, args.db, args.format)
    if args.command == "attributes":
        return run_validate(args.directory)
    if args.command == "thresholds":
        return run_calibrate_local(args.identities, args.seed, args.write)
    if args.command == "filter":
        return run_filter(args.vectors, args.threshold, args.mode, args.target_fmr, args.out)
    if args.command == "calibrate":
        return run_calibrate(args.embedder, args.pairs, args.images, args.embedder_option, args.write)
    if args.command == "models":
        return run_models(args.models_command, args.profile, args.cache_dir)
    if args.command == "regenerate":
        return run_regenerate(args.image_id, args.profile, args.out)
    return 2


if __name__ == "__main__":
    sys.exit(main())
