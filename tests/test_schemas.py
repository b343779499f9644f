"""Every batch Parquet file and every manifest table has exactly the columns written in schemas.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from synid_assets.core.batch.common import MissingStepError, read_table
from synid_assets.core.dataset.layout import DatasetLayout, write_parquet
from synid_assets.core.dataset.manifest import ManifestError, build_manifest
from synid_assets.core.dataset.schemas import (
    BATCH_TABLES,
    DOCUMENTS,
    EMBEDDINGS,
    MANIFEST_IMAGES,
    MANIFEST_TABLES,
    VECTOR_COLUMN,
    Column,
)
from tests.graph_helpers import QUIET, build, materialize_batch


@pytest.fixture(scope="module")
def one_batch(tmp_path_factory) -> Path:
    """A real materialization with the embedded defaults: one batch of three identities, one live image each."""
    home = tmp_path_factory.mktemp("schemas") / "home"
    defs = build(home, live=1)
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("attribute_spec_job").execute_in_process(instance=instance, run_config=QUIET).success
    assert materialize_batch(defs, instance, "batch-00000", size=3).success
    return home


def manifest_columns(path: Path, table: str) -> list[tuple[str, str, str | None]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(
            "SELECT column_name, data_type, comment FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index",
            [table],
        ).fetchall()


def assert_manifest_matches_schemas(path: Path) -> None:
    with duckdb.connect(str(path), read_only=True) as con:
        tables = dict(con.execute("SELECT table_name, comment FROM duckdb_tables()").fetchall())
    assert tables == {name: table.doc for name, table in MANIFEST_TABLES.items()}
    for name, table in MANIFEST_TABLES.items():
        assert manifest_columns(path, name) == [(c.name, c.duckdb, c.doc) for c in table.columns], name
    # The accepted-set view has the images table's columns.
    assert [c[:2] for c in manifest_columns(path, "dataset_images")] == [(c.name, c.duckdb) for c in
                                                                         MANIFEST_IMAGES.columns]


def test_every_batch_parquet_has_exactly_its_schema(one_batch: Path) -> None:
    files = sorted((DatasetLayout(one_batch).batch_dir("batch-00000")).glob("*.parquet"))
    assert {f.stem for f in files} == set(BATCH_TABLES)
    for path in files:
        table = BATCH_TABLES[path.stem]
        assert list(pl.read_parquet_schema(path).items()) == list(table.polars_schema().items()), path.name
        assert pl.read_parquet(path).height > 0, path.name


def test_embedding_tables_have_their_schema(one_batch: Path) -> None:
    import lancedb
    import pyarrow as pa

    from synid_assets.core.dataset.vectorstore import ACCEPTED_TABLE, DOCUMENT_TABLE, LIVE_TABLE

    db = lancedb.connect(str(DatasetLayout(one_batch).lancedb_uri))
    for name in (DOCUMENT_TABLE, LIVE_TABLE, ACCEPTED_TABLE):
        schema = db.open_table(name).schema
        assert schema.names == [*EMBEDDINGS.names, VECTOR_COLUMN], name
        assert [schema.field(c).type for c in EMBEDDINGS.names] == [pa.string()] * len(EMBEDDINGS.names)
        assert pa.types.is_fixed_size_list(schema.field(VECTOR_COLUMN).type)


def test_every_manifest_table_has_exactly_its_schema(one_batch: Path) -> None:
    assert_manifest_matches_schemas(DatasetLayout(one_batch).manifest_path)


def test_manifest_of_an_empty_or_partial_dataset_keeps_every_column(one_batch: Path, tmp_path: Path) -> None:
    empty = DatasetLayout(tmp_path / "empty")
    counts = build_manifest(empty)
    assert_manifest_matches_schemas(empty.manifest_path)
    assert all(n == 0 for name, n in counts.items() if name != "manifest_info")
    # Batches filtered but without live images yet (the manifest is eager: it runs before live_embeddings).
    partial = DatasetLayout(tmp_path / "partial")
    shutil.copytree(one_batch / "batches", partial.batches_dir)
    for name in ("live", "live_faces"):
        partial.table("batch-00000", name).unlink()
    counts = build_manifest(partial)
    assert_manifest_matches_schemas(partial.manifest_path)
    with duckdb.connect(str(partial.manifest_path), read_only=True) as con:
        assert con.execute("SELECT DISTINCT kind FROM images").fetchall() == [("document",)]
        assert con.execute("SELECT count(*) FROM images WHERE live_status IS NOT NULL").fetchone() == (0,)
    assert counts["identities"] == 3


def test_schema_types_are_what_duckdb_reads_from_the_parquet(tmp_path: Path) -> None:
    for table in BATCH_TABLES.values():
        path = tmp_path / f"{table.name}.parquet"
        write_parquet(pl.DataFrame([], schema=table.polars_schema()), path)
        with duckdb.connect() as con:
            described = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path.as_posix()}')").fetchall()
        assert [(name, dtype) for name, dtype, *_ in described] == [(c.name, c.duckdb) for c in table.columns]


def test_readers_refuse_a_table_without_the_columns_they_use(one_batch: Path, tmp_path: Path) -> None:
    from synid_assets.core.dataset.vectorstore import EmbeddingStore
    from synid_assets.core.quality.report import build_quality_report

    layout = DatasetLayout(tmp_path / "home")
    documents = pl.read_parquet(DatasetLayout(one_batch).table("batch-00000", DOCUMENTS.name)).drop("path")
    write_parquet(documents, layout.table("batch-00000", DOCUMENTS.name))
    with pytest.raises(MissingStepError, match=r"documents\.parquet has no column\(s\) path"):
        read_table(layout, "batch-00000", DOCUMENTS, "live_images", ("identity_id", "path"))
    with pytest.raises(KeyError, match="no column 'not_a_column'"):
        read_table(layout, "batch-00000", DOCUMENTS, "live_images", ("not_a_column",))
    # A manifest from an older SynID (a column missing) is refused in one line naming the file.
    shutil.copyfile(DatasetLayout(one_batch).manifest_path, layout.manifest_path)
    with duckdb.connect(str(layout.manifest_path)) as con:
        con.execute("ALTER TABLE images DROP COLUMN live_status")
    with pytest.raises(ManifestError, match=r"manifest\.duckdb: table images lacks column\(s\) live_status"):
        build_quality_report(layout, EmbeddingStore(layout.lancedb_uri), "dlib", 0.9, 1e-3)


def test_unknown_types_and_columns_are_refused() -> None:
    assert DOCUMENTS["seed"].duckdb == "UBIGINT"
    with pytest.raises(ValueError, match="unknown type 'Text'"):
        Column("c", "Text", "doc")
    with pytest.raises(KeyError, match="documents has no column 'nope'"):
        DOCUMENTS["nope"]
