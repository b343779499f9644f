"""`synid query`: read-only SQL over the DuckDB manifest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from synid_assets.cli.home import DATABASES, dataset_home


def run_query(sql: str, database: str | None, output: str) -> int:
    """Run SQL against the manifest, read-only, with no access to other files."""
    import duckdb


    if database:
        path = Path(database)
    else:  # an s3:// home: the databases are objects, read from the local mirror's copies
        with dataset_home("query", None, DATABASES) as layout:
            path = layout.manifest_path
    if not path.exists():
        print(f"synid query: {path} does not exist; run `make demo` (or materialize dataset_manifest)", file=sys.stderr)
        return 2
    quality = path.with_name("quality.duckdb")
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            if quality.exists():  # the quality report's tables, as schema `quality`
                con.execute(f"ATTACH '{quality}' AS quality (READ_ONLY)")
            evaluation = path.with_name("evaluation.duckdb")
            if evaluation.exists():  # fr_evaluations (synid evaluate / fr_evaluation), as schema `evaluation`
                con.execute(f"ATTACH '{evaluation}' AS evaluation (READ_ONLY)")
            exports = path.with_name("exports.duckdb")
            if exports.exists():  # the `exports` table (synid export / dataset_export), as schema `exports`
                con.execute(f"ATTACH '{exports}' AS exports (READ_ONLY)")
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


def register(commands: argparse._SubParsersAction) -> None:
    query = commands.add_parser("query", help="read-only SQL over the DuckDB manifest")
    query.add_argument("sql")
    query.add_argument("--db", default=None, help="manifest path (default $SYNID_HOME/manifest.duckdb)")
    query.add_argument("--format", choices=["table", "csv", "json"], default="table")
    query.set_defaults(handler=lambda args: run_query(args.sql, args.db, args.format))
