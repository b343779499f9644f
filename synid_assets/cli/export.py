"""`synid export`: the accepted set in a format face-recognition trainers read (see core/export)."""

from __future__ import annotations

import argparse
import sys

from synid_assets.cli.home import DATABASES, dataset_home

FORMAT_NAMES = ("imagefolder", "recordio", "lmdb", "webdataset", "parquet")  # core.export.FORMATS, without its imports


def run_export(export_format: str, out: str | None, crop: str, include_incomplete: bool, home: str | None) -> int:
    from synid_assets.core.analysis.images import ImageReadError
    from synid_assets.core.export import ExportError, export_dataset

    # An s3:// home: the export is made in the local mirror and its files go back to the store whole.
    written = ["exports.duckdb"] + ([] if out else ["exports"])
    with dataset_home("export", home, [*DATABASES, "batches"], written) as layout:
        try:
            result = export_dataset(layout, export_format, out, crop, include_incomplete)
        except (ExportError, ImageReadError) as exc:
            print(f"synid export: {exc}", file=sys.stderr)
            return 1
    size = "aligned 112x112 crops" if crop == "aligned" else "full images"
    print(
        f"exported {result.images} images of {result.identities} identities ({size}) as {result.format} to "
        f"{result.path}\nlabels 0..{result.identities - 1}: identities.csv there gives each label's identity_id; "
        f"recorded in {layout.home / 'exports.duckdb'} (synid query \"SELECT * FROM exports.exports\")"
    )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export", help="export the accepted set for face-recognition training (imagefolder, recordio, ...)"
    )
    export.add_argument("--format", required=True, choices=FORMAT_NAMES, dest="export_format")
    export.add_argument("--out", default=None, help="target dir (default $SYNID_HOME/exports/<format>[-full])")
    export.add_argument("--crop", choices=["aligned", "full"], default="aligned",
                        help="aligned: 112x112 crops on the ArcFace template (default); full: whole images")
    export.add_argument("--include-incomplete", action="store_true",
                        help="also export identities with too few good live images (status 'incomplete')")
    export.add_argument("--home", default=None, help="dataset dir (default $SYNID_HOME, else ./data)")
    export.set_defaults(
        handler=lambda args: run_export(args.export_format, args.out, args.crop, args.include_incomplete, args.home)
    )
