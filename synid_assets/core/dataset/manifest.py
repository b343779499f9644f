"""The dataset manifest: one DuckDB file rebuilt from every batch's Parquet outputs.

DuckDB has a single writer, so batches never touch it: each batch writes its own Parquet files and this
module (called by the one manifest asset) rebuilds the database into a temp file and renames it into place.
Every table's columns, types and docs come from schemas.py; the SQL here says only how rows are joined.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from synid_assets.core.dataset.layout import DatasetLayout, atomic_duckdb
from synid_assets.core.dataset.schemas import (
    ATTRIBUTES,
    DOCUMENT_FACES,
    DOCUMENTS,
    FILTER_DECISIONS,
    IDENTITIES,
    LIVE,
    LIVE_FACES,
    MANIFEST_BATCHES,
    MANIFEST_FILTER_DECISIONS,
    MANIFEST_IDENTITIES,
    MANIFEST_IDENTITY_ATTRIBUTES,
    MANIFEST_IMAGES,
    MANIFEST_INFO,
    MANIFEST_MODELS,
    MANIFEST_TABLES,
    PROMPTS,
    ManifestTable,
    Table,
)

SCHEMA_VERSION = "1"


class ManifestError(RuntimeError):
    """The manifest lacks a table or column that a reader needs (built by an older SynID)."""


def check_manifest(con, path: Path, tables: Iterable[ManifestTable]) -> None:
    """Refuse, in one line naming the file, a manifest without every column of `tables` (see schemas.py)."""
    found = set(con.execute("SELECT table_name, column_name FROM duckdb_columns()").fetchall())
    for table in tables:
        missing = [name for name in table.names if (table.name, name) not in found]
        if missing:
            raise ManifestError(
                f"{path}: table {table.name} lacks column(s) {', '.join(missing)}; re-materialize dataset_manifest"
            )


def _src(layout: DatasetLayout, table: Table) -> str:
    """Every batch's Parquet file of one table, with every column of its schema (NULL where a file lacks one).

    The typed empty relation also stands in when no batch has written the table yet.
    """
    empty = table.empty_sql()
    if not any(layout.batches_dir.glob(f"*/{table.name}.parquet")):
        return f"({empty})"
    files = (layout.batches_dir / "*" / f"{table.name}.parquet").as_posix()
    return f"(SELECT * FROM read_parquet('{files}', union_by_name = true) UNION ALL BY NAME {empty})"


def _union(layout: DatasetLayout, tables: list[Table]) -> str:
    return "(" + " UNION ALL BY NAME ".join(f"SELECT * FROM {_src(layout, t)}" for t in tables) + ")"


def _insert(con, table: ManifestTable, sources: dict[str, str], derived: dict[str, str], rest: str) -> None:
    """Create a manifest table from its schema, then fill it with `SELECT <its columns, in order> <rest>`.

    A copied column reads `<alias>.<column>` of its batch table (`sources` maps batch table -> alias, '' for
    none); a derived column, or a copied one computed differently here, is the SQL given in `derived`.
    """
    select = []
    for column in table.columns:
        if column.name in derived:
            expression = derived[column.name]
        elif column.source is not None and column.source[0] in sources:
            alias = sources[column.source[0]]
            expression = f"{alias}.{column.source[1]}" if alias else column.source[1]
        else:
            raise KeyError(f"manifest table {table.name}: no SQL for column {column.name}")
        select.append(f"({expression})::{column.duckdb} {column.name}")
    con.execute(table.create_sql())
    con.execute(f"INSERT INTO {table.name} SELECT {', '.join(select)} {rest}")


def build_manifest(layout: DatasetLayout, extra_info: dict[str, str] | None = None) -> dict[str, int]:
    """Rebuild $SYNID_HOME/manifest.duckdb from the batch files; returns row counts per table."""
    import duckdb

    with atomic_duckdb(layout.manifest_path) as tmp:
        con = duckdb.connect(str(tmp))
        try:
            counts = _fill(con, layout, extra_info or {})
        finally:
            con.close()
    return counts


def _fill(con, layout: DatasetLayout, extra_info: dict[str, str]) -> dict[str, int]:
    con.execute(f"CREATE TEMP VIEW src_decisions AS SELECT * FROM {_src(layout, FILTER_DECISIONS)}")
    con.execute(f"CREATE TEMP VIEW src_faces AS SELECT * FROM {_union(layout, [DOCUMENT_FACES, LIVE_FACES])}")
    summaries = sorted(layout.batches_dir.glob("*/live_summary.json"))
    con.execute("CREATE TEMP TABLE src_min_good (batch_id VARCHAR, min_good INTEGER)")
    if summaries:  # none before any batch has live embeddings (and DuckDB refuses an empty executemany)
        con.executemany(
            "INSERT INTO src_min_good VALUES (?, ?)",
            [(p.parent.name, int(json.loads(p.read_text())["min_good_live"])) for p in summaries],
        )
    _insert(
        con,
        MANIFEST_FILTER_DECISIONS,
        {FILTER_DECISIONS.name: ""},
        {"rejected_leak": "coalesce(rejected_leak, false)"},
        "FROM src_decisions ORDER BY batch_id, decision_order NULLS LAST, identity_id",
    )
    _insert(
        con,
        MANIFEST_IMAGES,
        {DOCUMENTS.name: "i", LIVE_FACES.name: "f"},
        {
            "similarity_to_document": "CASE WHEN i.kind = 'document' THEN NULL ELSE f.similarity_to_document END",
            "live_status": "CASE WHEN i.kind = 'live' THEN f.live_status END",
        },
        f"FROM {_union(layout, [DOCUMENTS, LIVE])} i LEFT JOIN src_faces f USING (image_id) "
        "ORDER BY i.identity_id, i.kind, i.live_index NULLS FIRST",
    )
    status = """CASE WHEN doc.face_detected = false THEN 'no_face'
                    WHEN d.rejection_reason = 'generation_failed' THEN 'generation_failed'
                    WHEN d.rejected_leak THEN 'rejected_leak'
                    WHEN d.accepted AND live.good < least(live.min_good, live.expected) THEN 'incomplete'
                    WHEN d.accepted THEN 'accepted'
                    WHEN d.accepted = false THEN 'rejected_similar'
                    ELSE 'pending' END"""
    _insert(
        con,
        MANIFEST_IDENTITIES,
        {IDENTITIES.name: "s", PROMPTS.name: "p"},
        {"status": status},
        f"""
        FROM {_src(layout, IDENTITIES)} s
        LEFT JOIN {_src(layout, PROMPTS)} p USING (identity_id)
        LEFT JOIN src_decisions d USING (identity_id)
        LEFT JOIN (SELECT identity_id, face_detected FROM images WHERE kind = 'document') doc
               USING (identity_id)
        LEFT JOIN (SELECT identity_id, count(*) FILTER (WHERE live_status = 'ok') good, count(*) expected,
                          any_value(min_good) min_good
                   FROM images JOIN src_min_good USING (batch_id) WHERE kind = 'live' GROUP BY 1) live
               USING (identity_id)
        ORDER BY s.batch_id, s.idx
        """,
    )
    _insert(
        con,
        MANIFEST_IDENTITY_ATTRIBUTES,
        {ATTRIBUTES.name: ""},
        {},
        f"FROM {_src(layout, ATTRIBUTES)} ORDER BY identity_id, attribute",
    )
    _insert(
        con,
        MANIFEST_MODELS,
        {},
        {name: name for name in MANIFEST_MODELS.names} | {"uses": "count(*)"},
        """
        FROM (
            SELECT CASE kind WHEN 'document' THEN 'document_generator' ELSE 'live_generator' END role,
                   generator backend,
                   coalesce(params->>'model_id', generator || ' v' || generator_version) model_id,
                   params->>'revision' revision,
                   coalesce(params->>'license',
                            CASE WHEN generator = 'procedural' THEN 'no weights (SynID code)' END) license
            FROM images
            UNION ALL
            SELECT 'face_analyzer', model_id, model_id, NULL,
                   CASE WHEN model_id LIKE 'dlib%' THEN 'dlib model, as shipped by face_recognition_models' END
            FROM images WHERE model_id IS NOT NULL
            UNION ALL
            SELECT 'prompt_writer', prompt_writer,
                   coalesce(prompt_params->>'model_id', prompt_writer || ' v' || prompt_writer_version),
                   prompt_params->>'revision',
                   coalesce(prompt_params->>'license',
                            CASE WHEN prompt_writer = 'template' THEN 'no weights (SynID code)' END)
            FROM identities WHERE prompt_writer IS NOT NULL
        ) GROUP BY ALL ORDER BY role, model_id
        """,
    )
    _insert(
        con,
        MANIFEST_BATCHES,
        {},
        {"batch_id": "batch_id", "identities": "count(*)", "spec_fingerprint": "any_value(spec_fingerprint)"},
        "FROM identities GROUP BY batch_id ORDER BY batch_id",
    )
    # The accepted set: documents of accepted identities and their good live images.
    con.execute(
        """
        CREATE VIEW dataset_images AS
        SELECT m.* FROM images m JOIN identities i USING (identity_id)
        WHERE i.status = 'accepted' AND (m.kind = 'document' OR m.live_status = 'ok')
        """
    )
    con.execute(
        "COMMENT ON VIEW dataset_images IS 'The accepted set: documents of accepted identities and their live "
        "images with a detected face above the threshold'"
    )
    con.execute(MANIFEST_INFO.create_sql())
    info = {"schema_version": SCHEMA_VERSION, "synid_home": str(layout.home), **extra_info}
    con.executemany("INSERT INTO manifest_info VALUES (?, ?)", sorted(info.items()))
    for table in MANIFEST_TABLES.values():
        con.execute(f"COMMENT ON TABLE {table.name} IS '{_sql_text(table.doc)}'")
        for column in table.columns:
            con.execute(f"COMMENT ON COLUMN {table.name}.{column.name} IS '{_sql_text(column.doc)}'")
    return {name: con.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in MANIFEST_TABLES}


def _sql_text(text: str) -> str:
    return text.replace("'", "''")
