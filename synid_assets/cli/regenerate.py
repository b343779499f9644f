"""`synid regenerate`: re-make one image from its manifest row and compare hashes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from synid_assets.cli.home import dataset_home
from synid_assets.core.config.profiles import ProfileError
from synid_assets.core.dataset.layout import DatasetLayout


def run_regenerate(image_id: str, profile_name: str | None, out: str | None) -> int:
    """Re-make one image from its manifest row with the profile's generator and compare hashes."""
    with dataset_home("regenerate", None, ["manifest.duckdb"], [] if out else ["regenerated"]) as layout:
        return _regenerate(layout, image_id, out, profile_name)


def _regenerate(layout: DatasetLayout, image_id: str, out: str | None, profile_name: str | None) -> int:
    import json

    import duckdb

    from synid_assets.core.config.profiles import load_profile
    from synid_assets.core.config.registry import create_backend, section_options
    from synid_assets.core.dataset.layout import atomic_write_bytes, png_bytes
    from synid_assets.core.errors import BackendError

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
        generator = create_backend(section_name, generator_name, section_options(section_name, section))
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


def register(commands: argparse._SubParsersAction) -> None:
    regenerate = commands.add_parser("regenerate", help="re-make one image from its manifest row, compare hashes")
    regenerate.add_argument("image_id")
    regenerate.add_argument("--profile", default=None)
    regenerate.add_argument("--out", default=None, help="default $SYNID_HOME/regenerated/<image_id>.png")
    regenerate.set_defaults(handler=lambda args: run_regenerate(args.image_id, args.profile, args.out))
