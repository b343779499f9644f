"""quality.duckdb: the quality report's tables, rebuilt into a temp file and renamed (the report is its only writer).

`summary`, `scores`, `attribute_balance` and `detection` take their columns from the report's rows; the
tables declared below are created from their declaration, with a comment on every table and column.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from synid_assets.core.dataset.layout import DatasetLayout, atomic_duckdb
from synid_assets.core.dataset.schemas import ManifestColumn, ManifestTable

QUALITY_FILE = "quality.duckdb"

QUALITY_DET = ManifestTable(
    "det",
    "DET curve of the profile's embedder: FMR and FNMR at observed thresholds (a match is similarity > threshold).",
    (
        ManifestColumn("threshold", "DOUBLE", "cosine similarity threshold"),
        ManifestColumn("fmr", "DOUBLE", "share of impostor document pairs above the threshold"),
        ManifestColumn("fnmr", "DOUBLE", "share of genuine pairs (live-document, live-live) at or below it"),
        ManifestColumn("false_matches", "BIGINT", "impostor pairs above the threshold"),
        ManifestColumn("false_non_matches", "BIGINT", "genuine pairs at or below the threshold"),
    ),
)

QUALITY_DEMOGRAPHICS = ManifestTable(
    "demographics",
    "Genuine and impostor scores and the filter's acceptance per demographic group (one value of gender, "
    "origin or age; '<not used>' for identities without the class), at the global operating threshold.",
    (
        ManifestColumn("attribute", "VARCHAR", "demographic class (file stem, e.g. genders)"),
        ManifestColumn("value", "VARCHAR", "its value: the group"),
        ManifestColumn("identities", "BIGINT", "identities sampled in the group"),
        ManifestColumn("accepted_identities", "BIGINT", "of them with status 'accepted'"),
        ManifestColumn("filter_decisions", "BIGINT", "identities the filter decided (document face detected)"),
        ManifestColumn("filter_accepted", "BIGINT", "of them accepted by the filter"),
        ManifestColumn("acceptance_rate", "DOUBLE", "filter_accepted / filter_decisions"),
        ManifestColumn("genuine_pairs", "BIGINT", "genuine pairs of the group's identities"),
        ManifestColumn("mean_genuine", "DOUBLE", "their mean cosine similarity"),
        ManifestColumn("fnmr", "DOUBLE", "share of them at or below the threshold"),
        ManifestColumn("impostor_pairs", "BIGINT",
                       "document pairs of two identities of the group, over every embedded document (all pairs, "
                       "or a seeded sample of 200000)"),
        ManifestColumn("mean_impostor", "DOUBLE", "their mean cosine similarity"),
        ManifestColumn("impostor_fmr", "DOUBLE", "share of them above the threshold (the generator's FMR)"),
        ManifestColumn("accepted_impostor_pairs", "BIGINT", "the same pairs among accepted identities only"),
        ManifestColumn("accepted_impostor_fmr", "DOUBLE", "share of those above the threshold (the dataset's FMR)"),
        ManifestColumn("sufficient", "BOOLEAN", "enough pairs and decisions for the figures to mean something"),
        ManifestColumn("note", "VARCHAR", "what is too thin, when sufficient is false"),
    ),
)

QUALITY_GALLERY = ManifestTable(
    "gallery",
    "The pairs the report shows side by side: the most similar accepted pairs, and the rejections for "
    "similarity nearest the threshold with the accepted identity they matched.",
    (
        ManifestColumn("kind", "VARCHAR", "'accepted_most_similar' or 'rejected_near_threshold'"),
        ManifestColumn("rank", "INTEGER", "0 = most similar accepted pair / rejection nearest the threshold"),
        ManifestColumn("identity_id", "VARCHAR", "identity (the rejected one, for rejections)"),
        ManifestColumn("other_identity_id", "VARCHAR", "the identity it is paired with (the accepted match)"),
        ManifestColumn("similarity", "DOUBLE", "cosine similarity of their documents"),
        ManifestColumn("threshold", "DOUBLE", "threshold of the decision"),
        ManifestColumn("image_path", "VARCHAR", "aligned document face of identity_id (the full document "
                       "image when there is no crop), relative to SYNID_HOME"),
        ManifestColumn("other_image_path", "VARCHAR", "the same for other_identity_id"),
    ),
)

# The columns the report needs of evaluation.duckdb's fr_evaluations; the table when there is no evaluation.
QUALITY_FR_EVALUATIONS = ManifestTable(
    "fr_evaluations",
    "The latest face-recognition evaluation of each verification set, copied from $SYNID_HOME/evaluation.duckdb "
    "(every column of that file; these when it holds none).",
    (
        ManifestColumn("model_dir", "VARCHAR", "the `synid train` output dir"),
        ManifestColumn("checkpoint", "VARCHAR", "checkpoint evaluated"),
        ManifestColumn("set_name", "VARCHAR", "verification set (the .bin file's stem)"),
        ManifestColumn("accuracy", "DOUBLE", "10-fold verification accuracy"),
        ManifestColumn("std", "DOUBLE", "standard deviation over the folds"),
        ManifestColumn("threshold", "DOUBLE", "decision threshold"),
        ManifestColumn("pairs", "INTEGER", "pairs in the set"),
        ManifestColumn("created", "TIMESTAMP", "when the evaluation ran"),
    ),
)


def _sql_text(text: str) -> str:
    return text.replace("'", "''")


def _declared(con: Any, table: ManifestTable, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa

    con.execute(table.create_sql())
    con.execute(f"COMMENT ON TABLE {table.name} IS '{_sql_text(table.doc)}'")
    for column in table.columns:
        con.execute(f"COMMENT ON COLUMN {table.name}.{column.name} IS '{_sql_text(column.doc)}'")
    if rows:
        con.register(f"{table.name}_src", pa.Table.from_pylist([{n: r[n] for n in table.names} for r in rows]))
        con.execute(f"INSERT INTO {table.name} SELECT {', '.join(table.names)} FROM {table.name}_src")


def write_quality_duckdb(
    layout: DatasetLayout,
    summary: dict[str, Any],
    scores: dict[str, np.ndarray],
    rows: dict[str, list[dict[str, Any]]],
    fr_evaluations: list[dict[str, Any]],
) -> Path:
    """Write every table; `rows` holds attribute_balance, detection, det, demographics and gallery rows."""
    import duckdb
    import pyarrow as pa

    target = layout.home / QUALITY_FILE
    with atomic_duckdb(target) as tmp:
        con = duckdb.connect(str(tmp))
        try:
            metrics = pa.table({
                "metric": list(summary),
                "value": [json.dumps(v) if isinstance(v, dict) else str(v) for v in summary.values()],
            })
            con.register("metrics_src", metrics)
            con.execute("CREATE TABLE summary AS SELECT * FROM metrics_src")
            kinds, values = [], []
            for kind, array in scores.items():
                kinds += [kind] * int(array.size)
                values.append(np.asarray(array, dtype=np.float64))
            score_table = pa.table({
                "kind": pa.array(kinds, pa.string()),
                "score": pa.array(np.concatenate(values) if values else np.zeros(0), pa.float64()),
            })
            con.register("scores_src", score_table)
            con.execute("CREATE TABLE scores AS SELECT * FROM scores_src")
            for name in ("attribute_balance", "detection"):
                if rows.get(name):
                    con.register(f"{name}_src", pa.Table.from_pylist(rows[name]))
                    con.execute(f"CREATE TABLE {name} AS SELECT * FROM {name}_src")
            for table in (QUALITY_DET, QUALITY_DEMOGRAPHICS, QUALITY_GALLERY):
                _declared(con, table, rows.get(table.name, []))
            if fr_evaluations:  # every column the evaluation file has, as it has them
                con.register("fr_src", pa.Table.from_pylist(fr_evaluations))
                con.execute(f"CREATE TABLE {QUALITY_FR_EVALUATIONS.name} AS SELECT * FROM fr_src")
            else:
                _declared(con, QUALITY_FR_EVALUATIONS, [])
        finally:
            con.close()
    return target
