"""The identity-vector step of a batch (identity_source: embeddings): one unit vector per identity.

Batches are placed in key order, as the identity filter decides them: batch b's vectors keep the bound against
every vector of the batches whose key sorts before b (read from their identity_vectors tables) and against the
leak gallery, so placing a new batch never changes an earlier one. Identity i's candidates are sub-streams of its
recorded seed (`stream_seed(identity seed, "identity-vector", attempt)`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from synid_assets.core.batch.common import MissingStepError, read_table, write_table
from synid_assets.core.batch.spec import read_identities
from synid_assets.core.dataset.layout import DatasetLayout
from synid_assets.core.dataset.schemas import IDENTITIES, IDENTITY_VECTORS
from synid_assets.core.identity_vectors import SamplerSettings, sample_vectors
from synid_assets.core.identity_vectors.centres import file_sha256


def earlier_vectors(layout: DatasetLayout, batch_id: str, vector_space: str) -> tuple[list[str], np.ndarray]:
    """(identity ids, vectors) of every batch sorting before `batch_id`, in key order; refuses a gap."""
    ids: list[str] = []
    rows: list[np.ndarray] = []
    if not layout.batches_dir.exists():
        return ids, np.zeros((0, 0), np.float32)
    for directory in sorted(p for p in layout.batches_dir.iterdir() if p.is_dir() and p.name < batch_id):
        if not layout.table(directory.name, IDENTITIES.name).exists():
            continue  # an empty partition: nothing was sampled there
        if not layout.table(directory.name, IDENTITY_VECTORS.name).exists():
            raise MissingStepError(
                f"identity_vectors: batch {directory.name} has identities but no vectors; vectors are placed in "
                f"batch key order: materialize identity_vectors for {directory.name} before {batch_id}"
            )
        frame = read_table(layout, directory.name, IDENTITY_VECTORS, "identity_vectors",
                           ("identity_id", "vector_space", "vector"))
        frame = frame.filter(frame["vector_space"] == vector_space)
        ids += frame["identity_id"].to_list()
        rows += [np.asarray(json.loads(v), np.float32) for v in frame["vector"].to_list()]
    return ids, (np.stack(rows) if rows else np.zeros((0, 0), np.float32))


def sample_batch_vectors(
    layout: DatasetLayout,
    batch_id: str,
    settings: SamplerSettings,
    vector_space: str,
    dim: int,
    gallery: Any | None = None,
) -> dict[str, Any]:
    """Place one vector per identity of the batch and write the batch's identity_vectors table."""
    identities = read_identities(layout, batch_id, "identity_vectors")
    prior_ids, prior = earlier_vectors(layout, batch_id, vector_space)
    if len(prior) and prior.shape[1] != dim:
        raise MissingStepError(f"identity_vectors: earlier batches hold {prior.shape[1]}-d vectors of {vector_space}, "
                               f"not {dim}-d: re-materialize them")
    placed = sample_vectors([i.seed for i in identities], dim, settings, prior=prior if len(prior) else None,
                            gallery=gallery)
    names = prior_ids + [i.identity_id for i in identities]
    centres_sha = file_sha256(settings.centres) if settings.method == "pca" and settings.centres else None
    rows = []
    for k, identity in enumerate(identities):
        nearest = int(placed.nearest_row[k])
        leak = float(placed.gallery_similarity[k])
        rows.append({
            "identity_id": identity.identity_id,
            "batch_id": batch_id,
            "idx": identity.index,
            "vector_space": vector_space,
            "dim": dim,
            "method": settings.method,
            "max_similarity": float(settings.max_similarity),
            "draw_seed": int(placed.draw_seeds[k]),
            "attempt": int(placed.attempts[k]),
            "nearest_identity_id": names[nearest] if nearest >= 0 else None,
            "nearest_similarity": float(placed.nearest_similarity[k]) if nearest >= 0 else None,
            "leak_match": placed.gallery_match[k],
            "leak_similarity": None if np.isnan(leak) else leak,
            "centres_sha256": centres_sha,
            "vector": json.dumps([float(x) for x in placed.vectors[k]]),
        })  # fmt: skip
    write_table(layout, batch_id, IDENTITY_VECTORS, rows)
    similarities = [r["nearest_similarity"] for r in rows if r["nearest_similarity"] is not None]
    return {
        "vectors": len(rows),
        "earlier_vectors": len(prior_ids),
        "redraws": placed.candidates_drawn - len(rows),
        "largest_similarity": max(similarities, default=None),
    }


def read_identity_vectors(layout: DatasetLayout, batch_id: str, needed_by: str) -> dict[str, list[float]]:
    """{identity_id: unit vector} of a batch (the embeddings route's identity_vectors table)."""
    path = layout.table(batch_id, IDENTITY_VECTORS.name)
    if not path.exists():
        raise MissingStepError(
            f"{needed_by}: {path} does not exist; this document generator renders identity vectors: set the "
            f"profile's dataset.identity_source to embeddings and materialize identity_vectors for batch {batch_id}"
        )
    frame = read_table(layout, batch_id, IDENTITY_VECTORS, needed_by, ("identity_id", "vector"))
    return {i: json.loads(v) for i, v in zip(frame["identity_id"].to_list(), frame["vector"].to_list(), strict=True)}


def identity_vectors_in_space(layout: DatasetLayout, batch_id: str, space: str | None) -> dict[str, list[float]]:
    """{identity_id: unit vector} when the batch has identity vectors sampled in `space`, else {}.

    A live generator conditioned in the same space as the document generator varies the sampled vector itself
    (as Vec2Face does); in another space, or on the attributes route, it has none and uses the document face.
    """
    path = layout.table(batch_id, IDENTITY_VECTORS.name)
    if space is None or not path.exists():
        return {}
    frame = read_table(layout, batch_id, IDENTITY_VECTORS, "live_images", ("identity_id", "vector", "vector_space"))
    return {
        identity: json.loads(vector)
        for identity, vector, vector_space in zip(
            frame["identity_id"].to_list(), frame["vector"].to_list(), frame["vector_space"].to_list(), strict=True
        )
        if vector_space == space
    }
