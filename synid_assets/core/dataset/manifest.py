"""The dataset manifest: one DuckDB file rebuilt from every batch's Parquet outputs.

DuckDB has a single writer, so batches never touch it: each batch writes its own Parquet files and this
module (called by the one manifest asset) rebuilds the database into a temp file and renames it into place.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from synid_assets.core.dataset.layout import DatasetLayout

SCHEMA_VERSION = "1"

# Table and column documentation, stored in the database itself (duckdb_tables()/duckdb_columns() comments).
TABLE_DOCS: dict[str, tuple[str, dict[str, str]]] = {
    "identities": (
        "One row per sampled synthetic identity.",
        {
            "identity_id": "'<batch>-<index>', unique in the dataset",
            "batch_id": "the identity batch (Dagster partition) it belongs to",
            "idx": "index within the batch",
            "seed": "recorded identity seed; every draw of the identity derives from it",
            "prompt": "text prompt of the document image",
            "status": "'accepted', 'incomplete' (accepted, too few good live images), 'rejected_similar', "
            "'rejected_leak', 'no_face', or 'pending' before the filter",
            "subject": "subject word chosen by the gender class",
            "prompt_writer": "prompt writer backend",
            "prompt_writer_version": "its version",
            "raw_output": "raw model output for model-based writers (NULL for the template)",
            "prompt_params": "JSON: generation parameters of the prompt",
            "prompt_fallback": "true when a model writer failed validation and the template wrote it",
            "spec_fingerprint": "sha256 of the attribute spec the identity was sampled from",
            "dataset_seed": "the dataset seed",
        },
    ),
    "identity_attributes": (
        "One row per sampled attribute class of an identity.",
        {"identity_id": "identity", "attribute": "class file stem, e.g. hair_colors", "value": "sampled value"},
    ),
    "images": (
        "Every document and live image, with its generation parameters and face analysis.",
        {
            "image_id": "unique image id",
            "identity_id": "identity",
            "kind": "'document' or 'live'",
            "path": "path relative to SYNID_HOME",
            "sha256": "sha256 of the file bytes",
            "width": "pixels",
            "height": "pixels",
            "face_detected": "whether the embedder's detector found a face",
            "similarity_to_document": "cosine similarity to the identity's document face (NULL for documents)",
            "batch_id": "batch",
            "live_index": "index of the live image within its identity (NULL for documents)",
            "generator": "generator backend",
            "generator_version": "its version",
            "seed": "seed of this image's generation",
            "params": "JSON: every parameter needed to regenerate the image",
            "model_id": "face analysis model",
            "detection_score": "detector score of the chosen face",
            "face_count": "faces found",
            "aligned_path": "aligned face crop, relative to SYNID_HOME (NULL when no face)",
            "analysis_error": "why analysis failed, when it did",
            "live_status": "live images: 'ok', 'no_face' or 'below_threshold' (similarity to the document)",
        },
    ),
    "filter_decisions": (
        "The identity filter's decision per identity with a detected document face.",
        {
            "identity_id": "identity",
            "nearest_identity_id": "most similar identity accepted before it",
            "similarity": "cosine similarity to that identity",
            "threshold": "decision threshold",
            "accepted": "similarity <= threshold (or no earlier identity)",
            "batch_id": "batch",
            "mode": "filter mode: 'strict' or 'fmr'",
            "model_id": "embedder",
            "threshold_fmr": "false match rate the threshold stands for",
            "threshold_source": "where the threshold comes from",
            "decision_order": "order of the decision within its batch (NULL for leaks)",
            "target_fmr": "dataset FMR target in 'fmr' mode",
            "rejected_leak": "rejected because a reference gallery face is above the threshold",
            "leak_match": "the gallery face it matched",
            "leak_similarity": "cosine similarity to that gallery face",
        },
    ),
    "models": (
        "Every model (or embedded backend) that produced something in the dataset, with its licence.",
        {
            "role": "prompt_writer, document_generator, live_generator or face_analyzer",
            "backend": "backend name",
            "model_id": "hub repo id / local dir, or the embedded backend and its version",
            "revision": "resolved revision (commit) when loaded from the hub",
            "license": "licence of the model",
            "uses": "rows produced with it",
        },
    ),
    "batches": (
        "One row per batch in the manifest.",
        {"batch_id": "batch", "identities": "identities sampled", "spec_fingerprint": "spec of the batch"},
    ),
    "manifest_info": ("Facts about this manifest build.", {"key": "name", "value": "value"}),
}


def _glob(layout: DatasetLayout, name: str) -> str:
    return (layout.batches_dir / "*" / f"{name}.parquet").as_posix()


def _has(layout: DatasetLayout, name: str) -> bool:
    return any(layout.batches_dir.glob(f"*/{name}.parquet"))


def _src(layout: DatasetLayout, name: str, empty_sql: str) -> str:
    """A relation over every batch's Parquet file of one kind, or an empty relation of the right shape."""
    if _has(layout, name):
        return f"read_parquet('{_glob(layout, name)}', union_by_name = true)"
    return f"({empty_sql})"


_EMPTY = {
    "identities": "SELECT NULL::VARCHAR identity_id, NULL::VARCHAR batch_id, NULL::INTEGER idx, "
    "NULL::UBIGINT seed, NULL::VARCHAR subject, NULL::VARCHAR spec_fingerprint, NULL::BIGINT dataset_seed "
    "WHERE false",
    "attributes": "SELECT NULL::VARCHAR identity_id, NULL::VARCHAR attribute, NULL::VARCHAR value WHERE false",
    "prompts": "SELECT NULL::VARCHAR identity_id, NULL::VARCHAR prompt, NULL::VARCHAR prompt_writer, "
    "NULL::VARCHAR prompt_writer_version, NULL::VARCHAR raw_output, NULL::VARCHAR prompt_params, "
    "NULL::BOOLEAN prompt_fallback WHERE false",
    "images": "SELECT NULL::VARCHAR image_id, NULL::VARCHAR identity_id, NULL::VARCHAR batch_id, "
    "NULL::VARCHAR kind, NULL::INTEGER live_index, NULL::VARCHAR path, NULL::VARCHAR sha256, "
    "NULL::INTEGER width, NULL::INTEGER height, NULL::VARCHAR generator, NULL::VARCHAR generator_version, "
    "NULL::UBIGINT seed, NULL::VARCHAR params WHERE false",
    "faces": "SELECT NULL::VARCHAR image_id, NULL::VARCHAR model_id, NULL::BOOLEAN face_detected, "
    "NULL::INTEGER face_count, NULL::DOUBLE detection_score, NULL::VARCHAR aligned_path, "
    "NULL::VARCHAR error, NULL::DOUBLE similarity_to_document, NULL::VARCHAR live_status, "
    "NULL::DOUBLE threshold WHERE false",
    "filter_decisions": "SELECT NULL::VARCHAR identity_id, NULL::VARCHAR batch_id, "
    "NULL::VARCHAR nearest_identity_id, NULL::DOUBLE similarity, NULL::DOUBLE threshold, "
    "NULL::DOUBLE threshold_fmr, NULL::VARCHAR threshold_source, NULL::VARCHAR model_id, NULL::VARCHAR mode, "
    "NULL::BOOLEAN accepted, NULL::INTEGER decision_order, NULL::DOUBLE target_fmr, NULL::BOOLEAN rejected_leak, "
    "NULL::VARCHAR leak_match, NULL::DOUBLE leak_similarity WHERE false",
}


def _union(layout: DatasetLayout, names: list[str], empty: str) -> str:
    parts = [f"SELECT * FROM {_src(layout, n, _EMPTY[empty])}" for n in names if _has(layout, n)]
    return "(" + (" UNION ALL BY NAME ".join(parts) if parts else _EMPTY[empty]) + ")"


def build_manifest(layout: DatasetLayout, extra_info: dict[str, str] | None = None) -> dict[str, int]:
    """Rebuild $SYNID_HOME/manifest.duckdb from the batch files; returns row counts per table."""
    import duckdb

    layout.home.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=layout.home, prefix=".manifest.", suffix=".duckdb")
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # DuckDB must create the file itself
    try:
        con = duckdb.connect(str(tmp))
        try:
            counts = _fill(con, layout, extra_info or {})
        finally:
            con.close()
        os.replace(tmp, layout.manifest_path)
    finally:
        tmp.unlink(missing_ok=True)
        Path(str(tmp) + ".wal").unlink(missing_ok=True)
    return counts


def _fill(con, layout: DatasetLayout, extra_info: dict[str, str]) -> dict[str, int]:
    ident = _src(layout, "identities", _EMPTY["identities"])
    attrs = _src(layout, "attributes", _EMPTY["attributes"])
    prompts = _src(layout, "prompts", _EMPTY["prompts"])
    decisions = _src(layout, "filter_decisions", _EMPTY["filter_decisions"])
    images = _union(layout, ["documents", "live"], "images")
    faces = _union(layout, ["document_faces", "live_faces"], "faces")
    con.execute(f"CREATE TEMP VIEW src_decisions AS SELECT * FROM {decisions}")
    con.execute(f"CREATE TEMP VIEW src_faces AS SELECT * FROM {faces}")
    summaries = sorted(layout.batches_dir.glob("*/live_summary.json"))
    con.execute("CREATE TEMP TABLE src_min_good (batch_id VARCHAR, min_good INTEGER)")
    con.executemany(
        "INSERT INTO src_min_good VALUES (?, ?)",
        [(p.parent.name, int(json.loads(p.read_text())["min_good_live"])) for p in summaries],
    )
    con.execute(
        """
        CREATE TABLE filter_decisions AS
        SELECT identity_id::VARCHAR identity_id, nearest_identity_id::VARCHAR nearest_identity_id,
               similarity::DOUBLE similarity, threshold::DOUBLE threshold, accepted::BOOLEAN accepted,
               batch_id::VARCHAR batch_id, mode::VARCHAR mode, model_id::VARCHAR model_id,
               threshold_fmr::DOUBLE threshold_fmr, threshold_source::VARCHAR threshold_source,
               decision_order::INTEGER decision_order, target_fmr::DOUBLE target_fmr,
               coalesce(rejected_leak, false)::BOOLEAN rejected_leak, leak_match::VARCHAR leak_match,
               leak_similarity::DOUBLE leak_similarity
        FROM src_decisions ORDER BY batch_id, decision_order NULLS LAST, identity_id
        """
    )
    con.execute(
        f"""
        CREATE TABLE images AS
        SELECT i.image_id::VARCHAR image_id, i.identity_id::VARCHAR identity_id, i.kind::VARCHAR kind,
               i.path::VARCHAR path, i.sha256::VARCHAR sha256, i.width::INTEGER width,
               i.height::INTEGER height, f.face_detected::BOOLEAN face_detected,
               CASE WHEN i.kind = 'document' THEN NULL ELSE f.similarity_to_document END::DOUBLE
                   similarity_to_document,
               i.batch_id::VARCHAR batch_id, i.live_index::INTEGER live_index,
               i.generator::VARCHAR generator, i.generator_version::VARCHAR generator_version,
               i.seed::UBIGINT seed, i.params::JSON params, f.model_id::VARCHAR model_id,
               f.detection_score::DOUBLE detection_score, f.face_count::INTEGER face_count,
               f.aligned_path::VARCHAR aligned_path, f.error::VARCHAR analysis_error,
               CASE WHEN i.kind = 'live' THEN f.live_status END::VARCHAR live_status
        FROM {images} i LEFT JOIN src_faces f USING (image_id)
        ORDER BY i.identity_id, i.kind, i.live_index NULLS FIRST
        """
    )
    con.execute(
        f"""
        CREATE TABLE identities AS
        SELECT s.identity_id::VARCHAR identity_id, s.batch_id::VARCHAR batch_id, s.idx::INTEGER idx,
               s.seed::UBIGINT seed, p.prompt::VARCHAR prompt,
               CASE WHEN doc.face_detected = false THEN 'no_face'
                    WHEN d.rejected_leak THEN 'rejected_leak'
                    WHEN d.accepted AND live.good < least(live.min_good, live.expected) THEN 'incomplete'
                    WHEN d.accepted THEN 'accepted'
                    WHEN d.accepted = false THEN 'rejected_similar'
                    ELSE 'pending' END::VARCHAR status,
               s.subject::VARCHAR subject, p.prompt_writer::VARCHAR prompt_writer,
               p.prompt_writer_version::VARCHAR prompt_writer_version, p.raw_output::VARCHAR raw_output,
               p.prompt_params::JSON prompt_params, p.prompt_fallback::BOOLEAN prompt_fallback,
               s.spec_fingerprint::VARCHAR spec_fingerprint, s.dataset_seed::BIGINT dataset_seed
        FROM {ident} s
        LEFT JOIN {prompts} p USING (identity_id)
        LEFT JOIN src_decisions d USING (identity_id)
        LEFT JOIN (SELECT identity_id, face_detected FROM images WHERE kind = 'document') doc
               USING (identity_id)
        LEFT JOIN (SELECT identity_id, count(*) FILTER (WHERE live_status = 'ok') good, count(*) expected,
                          any_value(min_good) min_good
                   FROM images JOIN src_min_good USING (batch_id) WHERE kind = 'live' GROUP BY 1) live
               USING (identity_id)
        ORDER BY s.batch_id, s.idx
        """
    )
    con.execute(
        f"""
        CREATE TABLE identity_attributes AS
        SELECT identity_id::VARCHAR identity_id, attribute::VARCHAR attribute, value::VARCHAR value
        FROM {attrs} ORDER BY identity_id, attribute
        """
    )
    con.execute(
        """
        CREATE TABLE models AS
        SELECT role, backend, model_id, revision, license, count(*)::INTEGER uses FROM (
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
        """
    )
    con.execute(
        """
        CREATE TABLE batches AS
        SELECT batch_id, count(*)::INTEGER identities, any_value(spec_fingerprint) spec_fingerprint
        FROM identities GROUP BY batch_id ORDER BY batch_id
        """
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
    con.execute("CREATE TABLE manifest_info (key VARCHAR, value VARCHAR)")
    info = {"schema_version": SCHEMA_VERSION, "synid_home": str(layout.home), **extra_info}
    con.executemany("INSERT INTO manifest_info VALUES (?, ?)", sorted(info.items()))
    for table, (table_doc, columns) in TABLE_DOCS.items():
        con.execute(f"COMMENT ON TABLE {table} IS '{_sql_text(table_doc)}'")
        for column, doc in columns.items():
            con.execute(f"COMMENT ON COLUMN {table}.{column} IS '{_sql_text(doc)}'")
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLE_DOCS}


def _sql_text(text: str) -> str:
    return text.replace("'", "''")
