"""LanceDB tables of face embeddings: one row per image, and the growing set of accepted identities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from synid_assets.core.dataset.schemas import EMBEDDINGS, VECTOR_COLUMN

DOCUMENT_TABLE = "document_embeddings"
ACCEPTED_TABLE = "accepted_identities"
LIVE_TABLE = "live_embeddings"


def _schema(dim: int) -> Any:
    """The Arrow schema of every embeddings table: EMBEDDINGS' columns, then the fixed-size vector."""
    import pyarrow as pa

    return EMBEDDINGS.arrow_schema().append(pa.field(VECTOR_COLUMN, pa.list_(pa.float32(), dim)))


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class EmbeddingStore:
    """A thin wrapper over a LanceDB database; lancedb is imported only when connecting.

    The uri is a directory, or an `s3://bucket/prefix/lancedb` uri that LanceDB opens on the object store
    directly, with the endpoint and credentials of the standard AWS variables (remote_home.S3Settings).
    """

    def __init__(self, uri: str | Path, storage_options: dict[str, str] | None = None) -> None:
        self.uri = str(uri)
        self.storage_options = storage_options
        self._db: Any = None

    @property
    def remote(self) -> bool:
        return self.uri.startswith("s3://")

    @property
    def db(self) -> Any:
        if self._db is None:
            import lancedb

            if self.remote:
                from synid_assets.core.dataset.remote_home import S3Settings

                options = self.storage_options or S3Settings.from_env().lancedb_options()
                self._db = lancedb.connect(self.uri, storage_options=options)
            else:
                Path(self.uri).mkdir(parents=True, exist_ok=True)
                self._db = lancedb.connect(self.uri)
        return self._db

    def _table(self, name: str) -> Any | None:
        try:
            return self.db.open_table(name)
        except (FileNotFoundError, ValueError):
            return None

    def replace_batch(self, name: str, batch_id: str, rows: list[dict[str, Any]], dim: int) -> int:
        """Delete a batch's rows and write the new ones, so re-materializing a batch is idempotent."""
        table = self._table(name)
        if table is None:
            table = self.db.create_table(name, schema=_schema(dim), exist_ok=True)
        table.delete(f"batch_id = {_quote(batch_id)}")
        if rows:
            columns = {c: [str(r[c]) for r in rows] for c in EMBEDDINGS.names}
            vectors = np.asarray([r[VECTOR_COLUMN] for r in rows], dtype=np.float32).reshape(len(rows), dim)
            import pyarrow as pa

            columns[VECTOR_COLUMN] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim)
            table.add(pa.table(columns, schema=_schema(dim)))
        return len(rows)

    def delete_batch(self, name: str, batch_id: str) -> None:
        table = self._table(name)
        if table is not None:
            table.delete(f"batch_id = {_quote(batch_id)}")

    def vectors(self, name: str, batch_id: str | None = None, model_id: str | None = None) -> dict[str, Any]:
        """Rows of a table (optionally one batch / model) as {column: list}, vectors as an (n, d) array."""
        table = self._table(name)
        if table is None:
            return {"identity_id": [], "image_id": [], VECTOR_COLUMN: np.zeros((0, 0), np.float32)}
        clauses = []
        if batch_id is not None:
            clauses.append(f"batch_id = {_quote(batch_id)}")
        if model_id is not None:
            clauses.append(f"model_id = {_quote(model_id)}")
        query = table.search()
        if clauses:
            query = query.where(" AND ".join(clauses))
        arrow = query.limit(None).to_arrow() if clauses else table.to_arrow()
        out: dict[str, Any] = {c: arrow.column(c).to_pylist() for c in ("identity_id", "image_id", "batch_id")}
        vec = arrow.column(VECTOR_COLUMN).combine_chunks()
        dim = vec.type.list_size
        out[VECTOR_COLUMN] = vec.values.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)
        return out

    def nearest(
        self,
        name: str,
        queries: np.ndarray,
        model_id: str,
        exclude_batch: str | None = None,
        before_batch: str | None = None,
    ) -> list[tuple[str | None, float | None]]:
        """Top-1 cosine neighbour of each query among a table's rows of one model (exact flat search).

        `before_batch` keeps only rows of batches whose key sorts before it (the filter's decision order).
        """
        table = self._table(name)
        if table is None or table.count_rows() == 0:
            return [(None, None)] * len(queries)
        where = f"model_id = {_quote(model_id)}"
        if exclude_batch is not None:
            where += f" AND batch_id != {_quote(exclude_batch)}"
        if before_batch is not None:
            where += f" AND batch_id < {_quote(before_batch)}"
        results: list[tuple[str | None, float | None]] = []
        for query in np.asarray(queries, dtype=np.float32):
            hits = (
                table.search(query)
                .distance_type("cosine")
                .where(where, prefilter=True)
                .select(["identity_id", "_distance"])
                .limit(1)
                .to_list()
            )
            if hits:
                results.append((hits[0]["identity_id"], 1.0 - float(hits[0]["_distance"])))
            else:
                results.append((None, None))
        return results

    def neighbours(
        self, name: str, queries: np.ndarray, model_id: str, before_batch: str | None = None, limit: int = 1000
    ) -> list[list[tuple[str, float]]]:
        """The `limit` nearest rows (identity, cosine) of each query among one model's rows of a table."""
        table = self._table(name)
        if table is None or table.count_rows() == 0:
            return [[] for _ in range(len(queries))]
        where = f"model_id = {_quote(model_id)}"
        if before_batch is not None:
            where += f" AND batch_id < {_quote(before_batch)}"
        out = []
        for query in np.asarray(queries, dtype=np.float32):
            hits = (
                table.search(query)
                .distance_type("cosine")
                .where(where, prefilter=True)
                .select(["identity_id", "_distance"])
                .limit(limit)
                .to_list()
            )
            out.append([(h["identity_id"], 1.0 - float(h["_distance"])) for h in hits])
        return out
