"""Leakage check: is a synthetic identity's face too close to a face of a real reference gallery?

The gallery holds embeddings of real faces made with the same embedder as the dataset: a .npy file of
shape (n, d), or a LanceDB table given as `<lancedb dir>::<table>` (a `vector` column, and optionally an
`id` column naming each face).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synid_assets.core.filtering.similarity import unit_rows


class GalleryError(ValueError):
    """A reference gallery that cannot be used; the message names it and the problem."""


class Gallery:
    def __init__(self, source: str) -> None:
        self.source = source
        self._vectors: np.ndarray | None = None
        self._ids: list[str] | None = None
        self._table = None
        if "::" in source:
            directory, table = source.rsplit("::", 1)
            import lancedb

            if not Path(directory).is_dir():
                raise GalleryError(f"leak gallery {source}: LanceDB directory {directory} does not exist")
            try:
                self._table = lancedb.connect(directory).open_table(table)
            except (FileNotFoundError, ValueError) as exc:
                raise GalleryError(f"leak gallery {source}: no table {table!r} in {directory}") from exc
        else:
            path = Path(source)
            if not path.is_file():
                raise GalleryError(f"leak gallery {path}: file does not exist")
            try:
                vectors = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise GalleryError(f"leak gallery {path}: not a .npy array: {exc}") from exc
            if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.floating):
                shape = f"{vectors.shape} {vectors.dtype}"
                raise GalleryError(f"leak gallery {path}: expected a 2-D float array, got {shape}")
            self._vectors = vectors

    @property
    def dim(self) -> int:
        if self._vectors is not None:
            return int(self._vectors.shape[1])
        return int(self._table.schema.field("vector").type.list_size)

    def nearest(self, queries: np.ndarray, block: int = 65536) -> list[tuple[str, float]]:
        """For each query, the most similar gallery face (its id or row number) and the cosine similarity."""
        queries = np.asarray(queries, dtype=np.float32)
        if queries.size and queries.shape[1] != self.dim:
            raise GalleryError(
                f"leak gallery {self.source}: vectors have {self.dim} dimensions, the embedder {queries.shape[1]}:"
                " embed the gallery with the profile's face analyzer"
            )
        unit = unit_rows(queries)
        if self._table is not None:
            out = []
            has_id = "id" in self._table.schema.names
            for query in unit:
                hits = self._table.search(query).distance_type("cosine").limit(1).to_list()
                if not hits:
                    out.append(("", -1.0))
                    continue
                ref = str(hits[0]["id"]) if has_id else "row"
                out.append((ref, 1.0 - float(hits[0]["_distance"])))
            return out
        best_sim = np.full(len(unit), -np.inf, dtype=np.float32)
        best_row = np.zeros(len(unit), dtype=np.int64)
        for start in range(0, self._vectors.shape[0], block):  # memory-mapped: read a block at a time
            chunk = unit_rows(self._vectors[start : start + block])
            sims = unit @ chunk.T
            rows = sims.argmax(axis=1)
            values = sims[np.arange(len(unit)), rows]
            better = values > best_sim
            best_sim[better], best_row[better] = values[better], rows[better] + start
        return [(f"row {int(r)}", float(s)) for r, s in zip(best_row, best_sim, strict=True)]
