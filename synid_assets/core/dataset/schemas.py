"""Every table of a dataset, written once: each column's name, type and one-line doc.

Batch tables are the Parquet files a batch step writes under batches/<batch>/; their types are polars types
(the DuckDB and Arrow types follow from them). Manifest tables are the DuckDB tables the manifest builder
makes from the batch files; a manifest column either copies a batch column (its type and doc come from
there, unless overridden) or is derived by the manifest's SQL. The batch steps write with these schemas, the
manifest builder creates and documents its tables from them, and tests/test_schemas.py checks real files.
Importing this module imports no polars, pyarrow or duckdb.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# polars type name -> (DuckDB type, pyarrow type factory name)
_TYPES: dict[str, tuple[str, str]] = {
    "String": ("VARCHAR", "string"),
    "Boolean": ("BOOLEAN", "bool_"),
    "Int32": ("INTEGER", "int32"),
    "Int64": ("BIGINT", "int64"),
    "UInt64": ("UBIGINT", "uint64"),
    "Float64": ("DOUBLE", "float64"),
}


@dataclass(frozen=True)
class Column:
    """One column of a batch table: name, polars type name and what it holds."""

    name: str
    dtype: str
    doc: str

    def __post_init__(self) -> None:
        if self.dtype not in _TYPES:
            raise ValueError(f"column {self.name}: unknown type {self.dtype!r}; known: {sorted(_TYPES)}")

    @property
    def duckdb(self) -> str:
        return _TYPES[self.dtype][0]


@dataclass(frozen=True)
class Table:
    """A batch table: one Parquet file per batch, `batches/<batch>/<name>.parquet`."""

    name: str
    doc: str
    columns: tuple[Column, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def __getitem__(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"table {self.name} has no column {name!r}")

    def polars_schema(self) -> dict[str, Any]:
        """{column: polars type}, in file order: what the batch step passes to pl.DataFrame."""
        import polars as pl

        return {c.name: getattr(pl, c.dtype) for c in self.columns}

    def arrow_schema(self) -> Any:
        import pyarrow as pa

        return pa.schema([pa.field(c.name, getattr(pa, _TYPES[c.dtype][1])()) for c in self.columns])

    def empty_sql(self) -> str:
        """A DuckDB relation with every column of the table and no rows (when no batch has written it yet)."""
        return "SELECT " + ", ".join(f"NULL::{c.duckdb} {c.name}" for c in self.columns) + " WHERE false"


def _image_columns() -> tuple[Column, ...]:
    return (
        Column("image_id", "String", "unique image id"),
        Column("identity_id", "String", "identity"),
        Column("batch_id", "String", "batch"),
        Column("kind", "String", "'document' or 'live'"),
        Column("live_index", "Int32", "index of the live image within its identity (NULL for documents)"),
        Column("path", "String", "path relative to SYNID_HOME"),
        Column("sha256", "String", "sha256 of the file bytes"),
        Column("width", "Int32", "pixels"),
        Column("height", "Int32", "pixels"),
        Column("generator", "String", "generator backend"),
        Column("generator_version", "String", "its version"),
        Column("seed", "UInt64", "seed of this image's generation"),
        Column("params", "String", "JSON: every parameter needed to regenerate the image"),
    )


_FACE_COLUMNS = (
    Column("image_id", "String", "the analysed image"),
    Column("identity_id", "String", "identity"),
    Column("model_id", "String", "face analysis model"),
    Column("face_detected", "Boolean", "whether the embedder's detector found a face"),
    Column("face_count", "Int32", "faces found"),
    Column("detection_score", "Float64", "detector score of the chosen face"),
    Column("bbox", "String", "JSON: left, top, right, bottom of the chosen (largest) face (NULL when none)"),
    Column("landmarks", "String", "JSON: its 5 landmark points (x, y) (NULL when none)"),
    Column("aligned_path", "String", "aligned face crop, relative to SYNID_HOME (NULL when no face)"),
    Column("error", "String", "why analysis failed, when it did ('corrupted: ...' when the image's bytes no "
           "longer match their recorded sha256)"),
)

IDENTITIES = Table(
    "identities",
    "One row per sampled synthetic identity.",
    (
        Column("identity_id", "String", "'<batch>-<index>', unique in the dataset"),
        Column("batch_id", "String", "the identity batch (Dagster partition) it belongs to"),
        Column("idx", "Int32", "index within the batch"),
        Column("seed", "UInt64", "recorded identity seed; every draw of the identity derives from it"),
        Column("subject", "String", "subject word chosen by the gender class"),
        Column("attributes_json", "String", "JSON: the sampled value of each class used"),
        Column("spec_fingerprint", "String", "sha256 of the attribute spec the identity was sampled from"),
        Column("dataset_seed", "Int64", "the dataset seed"),
    ),
)

ATTRIBUTES = Table(
    "attributes",
    "One row per sampled attribute class of an identity.",
    (
        Column("identity_id", "String", "identity"),
        Column("attribute", "String", "class file stem, e.g. hair_colors"),
        Column("value", "String", "sampled value"),
    ),
)

PROMPTS = Table(
    "prompts",
    "The text prompt of each identity's document image.",
    (
        Column("identity_id", "String", "identity"),
        Column("prompt", "String", "text prompt of the document image"),
        Column("prompt_writer", "String", "prompt writer backend"),
        Column("prompt_writer_version", "String", "its version"),
        Column("raw_output", "String", "raw model output for model-based writers (NULL for the template)"),
        Column("prompt_params", "String", "JSON: generation parameters of the prompt"),
        Column("prompt_fallback", "Boolean", "true when a model writer failed validation and the template wrote it"),
    ),
)

DOCUMENTS = Table("documents", "One document image per identity, with its generation parameters.", _image_columns())
LIVE = Table("live", "The live images of accepted identities, with their generation parameters.", _image_columns())

DOCUMENT_FACES = Table("document_faces", "Face analysis of each document image.", _FACE_COLUMNS)
LIVE_FACES = Table(
    "live_faces",
    "Face analysis of each live image, and its similarity to its own document face.",
    (
        *_FACE_COLUMNS,
        Column("similarity_to_document", "Float64", "cosine similarity to the identity's document face"),
        Column("live_status", "String", "'ok', 'no_face', 'below_threshold' (similarity to the document), "
               "'generation_failed' (the generator missed its targets) or 'corrupted' (bytes changed on disk)"),
        Column("threshold", "Float64", "threshold the status was decided with"),
    ),
)

FILTER_DECISIONS = Table(
    "filter_decisions",
    "The identity filter's decision per identity with a detected document face.",
    (
        Column("identity_id", "String", "identity"),
        Column("batch_id", "String", "batch"),
        Column("nearest_identity_id", "String", "most similar identity accepted before it"),
        Column("similarity", "Float64", "cosine similarity to that identity"),
        Column("threshold", "Float64", "decision threshold"),
        Column("threshold_fmr", "Float64", "false match rate the threshold stands for"),
        Column("threshold_source", "String", "where the threshold comes from"),
        Column("model_id", "String", "embedder"),
        Column("mode", "String", "filter mode: 'strict' or 'fmr'"),
        Column("target_fmr", "Float64", "dataset FMR target in 'fmr' mode"),
        Column("accepted", "Boolean", "similarity <= threshold (or no earlier identity)"),
        Column("rejected_leak", "Boolean", "rejected because a reference gallery face is above the threshold"),
        Column("leak_match", "String", "the gallery face it matched"),
        Column("leak_similarity", "Float64", "cosine similarity to that gallery face"),
        Column("decision_order", "Int32", "order of the decision within its batch (NULL for leaks and "
               "generation failures)"),
        Column("rejection_reason", "String", "why it was rejected: 'similar', 'leak' or 'generation_failed' (its "
               "document's generator recorded a failure, e.g. Vec2Face+'s AttrOP after its last try); NULL when "
               "accepted"),
    ),
)

BATCH_TABLES: dict[str, Table] = {
    t.name: t
    for t in (IDENTITIES, ATTRIBUTES, PROMPTS, DOCUMENTS, DOCUMENT_FACES, FILTER_DECISIONS, LIVE, LIVE_FACES)
}

# LanceDB tables (document_embeddings, live_embeddings, accepted_identities): these columns, then `vector`.
EMBEDDINGS = Table(
    "embeddings",
    "One face embedding per image (accepted_identities: per accepted identity's document).",
    (
        Column("identity_id", "String", "identity"),
        Column("image_id", "String", "the image the face is from"),
        Column("batch_id", "String", "batch"),
        Column("model_id", "String", "face analysis model"),
    ),
)
VECTOR_COLUMN = "vector"  # fixed-size list of float32, the model's embedding dimension


# ---------------------------------------------------------------- manifest tables


@dataclass(frozen=True)
class ManifestColumn:
    """A column of a manifest table; `source` is the (batch table, column) it copies, None when derived."""

    name: str
    duckdb: str
    doc: str
    source: tuple[str, str] | None = None


def copied(table: Table, column: str, *, name: str | None = None, duckdb: str | None = None,
           doc: str | None = None) -> ManifestColumn:
    """A manifest column copied from a batch column: its type and doc, unless this table says otherwise."""
    source = table[column]
    return ManifestColumn(name or column, duckdb or source.duckdb, doc or source.doc, (table.name, column))


@dataclass(frozen=True)
class ManifestTable:
    name: str
    doc: str
    columns: tuple[ManifestColumn, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def create_sql(self) -> str:
        return f"CREATE TABLE {self.name} (" + ", ".join(f"{c.name} {c.duckdb}" for c in self.columns) + ")"


MANIFEST_IDENTITIES = ManifestTable(
    "identities",
    IDENTITIES.doc,
    (
        copied(IDENTITIES, "identity_id"),
        copied(IDENTITIES, "batch_id"),
        copied(IDENTITIES, "idx"),
        copied(IDENTITIES, "seed"),
        copied(PROMPTS, "prompt"),
        ManifestColumn(
            "status",
            "VARCHAR",
            "'accepted', 'incomplete' (accepted, too few good live images), 'rejected_similar', "
            "'rejected_leak', 'generation_failed' (its document's generator recorded a failure), 'no_face', "
            "or 'pending' before the filter",
        ),
        copied(IDENTITIES, "subject"),
        copied(PROMPTS, "prompt_writer"),
        copied(PROMPTS, "prompt_writer_version"),
        copied(PROMPTS, "raw_output"),
        copied(PROMPTS, "prompt_params", duckdb="JSON"),
        copied(PROMPTS, "prompt_fallback"),
        copied(IDENTITIES, "spec_fingerprint"),
        copied(IDENTITIES, "dataset_seed"),
    ),
)

MANIFEST_IDENTITY_ATTRIBUTES = ManifestTable(
    "identity_attributes", ATTRIBUTES.doc, tuple(copied(ATTRIBUTES, c) for c in ATTRIBUTES.names)
)

MANIFEST_IMAGES = ManifestTable(
    "images",
    "Every document and live image, with its generation parameters and face analysis.",
    (
        copied(DOCUMENTS, "image_id"),
        copied(DOCUMENTS, "identity_id"),
        copied(DOCUMENTS, "kind"),
        copied(DOCUMENTS, "path"),
        copied(DOCUMENTS, "sha256"),
        copied(DOCUMENTS, "width"),
        copied(DOCUMENTS, "height"),
        copied(LIVE_FACES, "face_detected"),
        copied(LIVE_FACES, "similarity_to_document",
               doc="cosine similarity to the identity's document face (NULL for documents)"),
        copied(DOCUMENTS, "batch_id"),
        copied(DOCUMENTS, "live_index"),
        copied(DOCUMENTS, "generator"),
        copied(DOCUMENTS, "generator_version"),
        copied(DOCUMENTS, "seed"),
        copied(DOCUMENTS, "params", duckdb="JSON"),
        copied(LIVE_FACES, "model_id"),
        copied(LIVE_FACES, "detection_score"),
        copied(LIVE_FACES, "face_count"),
        copied(LIVE_FACES, "aligned_path"),
        copied(LIVE_FACES, "error", name="analysis_error"),
        copied(LIVE_FACES, "live_status",
               doc="live images: 'ok', 'no_face', 'below_threshold' (similarity to the document), "
                   "'generation_failed' or 'corrupted'"),
    ),
)

MANIFEST_FILTER_DECISIONS = ManifestTable(
    "filter_decisions",
    FILTER_DECISIONS.doc,
    tuple(
        copied(FILTER_DECISIONS, c)
        for c in ("identity_id", "nearest_identity_id", "similarity", "threshold", "accepted", "batch_id", "mode",
                  "model_id", "threshold_fmr", "threshold_source", "decision_order", "target_fmr", "rejected_leak",
                  "leak_match", "leak_similarity", "rejection_reason")
    ),
)

MANIFEST_MODELS = ManifestTable(
    "models",
    "Every model (or embedded backend) that produced something in the dataset, with its licence.",
    (
        ManifestColumn("role", "VARCHAR", "prompt_writer, document_generator, live_generator or face_analyzer"),
        ManifestColumn("backend", "VARCHAR", "backend name"),
        ManifestColumn("model_id", "VARCHAR", "hub repo id / local dir, or the embedded backend and its version"),
        ManifestColumn("revision", "VARCHAR", "resolved revision (commit) when loaded from the hub"),
        ManifestColumn("license", "VARCHAR", "licence of the model"),
        ManifestColumn("uses", "INTEGER", "rows produced with it"),
    ),
)

MANIFEST_BATCHES = ManifestTable(
    "batches",
    "One row per batch in the manifest.",
    (
        ManifestColumn("batch_id", "VARCHAR", "batch"),
        ManifestColumn("identities", "INTEGER", "identities sampled"),
        ManifestColumn("spec_fingerprint", "VARCHAR", "spec of the batch"),
    ),
)

MANIFEST_INFO = ManifestTable(
    "manifest_info",
    "Facts about this manifest build.",
    (ManifestColumn("key", "VARCHAR", "name"), ManifestColumn("value", "VARCHAR", "value")),
)

# In build order; every table of manifest.duckdb.
MANIFEST_TABLES: dict[str, ManifestTable] = {
    t.name: t
    for t in (MANIFEST_IDENTITIES, MANIFEST_IDENTITY_ATTRIBUTES, MANIFEST_IMAGES, MANIFEST_FILTER_DECISIONS,
              MANIFEST_MODELS, MANIFEST_BATCHES, MANIFEST_INFO)
}

# ---------------------------------------------------------------- evaluation.duckdb (core/training/results.py)

FR_EVALUATIONS = ManifestTable(
    "fr_evaluations",
    "Verification accuracy of models trained on a SynID export, one row per (model dir, checkpoint, set).",
    (
        ManifestColumn("model_dir", "VARCHAR", "the `synid train` output dir"),
        ManifestColumn("checkpoint", "VARCHAR", "checkpoint file evaluated"),
        ManifestColumn("epoch", "INTEGER", "epochs the checkpoint was trained for"),
        ManifestColumn("set_name", "VARCHAR", "verification set: the .bin file's stem (lfw, cfp_fp, ...)"),
        ManifestColumn("bin_path", "VARCHAR", "the .bin file"),
        ManifestColumn("accuracy", "DOUBLE", "10-fold verification accuracy (mean over folds), 0..1"),
        ManifestColumn("std", "DOUBLE", "standard deviation of the folds' accuracies"),
        ManifestColumn("threshold", "DOUBLE", "mean of the folds' squared-distance thresholds (InsightFace's)"),
        ManifestColumn("cosine_threshold", "DOUBLE", "the same threshold as a cosine similarity (1 - d/2)"),
        ManifestColumn("pairs", "INTEGER", "pairs in the set"),
        ManifestColumn("backbone", "VARCHAR", "backbone of the model (ir_se50, ...)"),
        ManifestColumn("head", "VARCHAR", "training head (arcface, cosface, adaface)"),
        ManifestColumn("export_dir", "VARCHAR", "the export the model was trained on"),
        ManifestColumn("created", "TIMESTAMP", "when the evaluation ran (UTC)"),
    ),
)

# ---------------------------------------------------------------- exports.duckdb (core/export/common.py)

EXPORTS = ManifestTable(
    "exports",
    "Every dataset export on disk: its format and dir, with the counts it holds (the last export into each dir).",
    (
        ManifestColumn("format", "VARCHAR", "imagefolder, recordio, lmdb, webdataset or parquet"),
        ManifestColumn("path", "VARCHAR", "the export dir (absolute)"),
        ManifestColumn("crop", "VARCHAR", "'aligned' (112x112 on the ArcFace template) or 'full' (whole images)"),
        ManifestColumn("images", "INTEGER", "images exported"),
        ManifestColumn("identities", "INTEGER", "identities (labels 0..identities-1)"),
        ManifestColumn("created", "TIMESTAMP", "when the export was written (UTC)"),
    ),
)

# ---------------------------------------------------------------- identity_vectors (core/batch/vectors.py)

# A batch table written only on the `identity_source: embeddings` route (so not in BATCH_TABLES, which every
# batch writes): one sampled unit vector per identity, in the document generator's conditioning space.
IDENTITY_VECTORS = Table(
    "identity_vectors",
    "The identity vector of each identity (identity_source: embeddings), with the draw that made it.",
    (
        Column("identity_id", "String", "identity"),
        Column("batch_id", "String", "batch"),
        Column("idx", "Int32", "index within the batch (the order vectors were placed in)"),
        Column("vector_space", "String", "the embedding space sampled in: the document generator's ID embedder"),
        Column("dim", "Int32", "dimensions"),
        Column("method", "String", "sampler: 'gaussian', 'pca' or 'repulsion'"),
        Column("max_similarity", "Float64", "cosine bound held against every earlier vector and the leak gallery"),
        Column("draw_seed", "UInt64", "seed of the accepted draw: stream_seed(seed, 'identity-vector', attempt)"),
        Column("attempt", "Int32", "attempt number of the accepted draw (0: the first candidate)"),
        Column("nearest_identity_id", "String", "most similar identity placed before it (NULL: none)"),
        Column("nearest_similarity", "Float64", "cosine similarity to that identity"),
        Column("leak_match", "String", "most similar leak-gallery face (NULL: no gallery)"),
        Column("leak_similarity", "Float64", "cosine similarity to that face"),
        Column("centres_sha256", "String", "pca: sha256 of the centres file the Gaussian was fitted on"),
        Column("vector", "String", "JSON: the unit vector's float32 values"),
    ),
)
