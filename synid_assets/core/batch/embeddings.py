"""The embedding steps of a batch: detect, align and embed every document and live face into LanceDB.

Failed detections are recorded in the faces tables, never replaced; only detected faces get an embedding.
An image whose bytes no longer match the sha256 recorded when it was made is not analysed: its row records it
as corrupted and the step reports it (the next run of the generation step makes it again).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

import numpy as np

from synid_assets.core.analysis.types import FaceAnalyzer
from synid_assets.core.batch.common import generation_failed, read_table, write_table
from synid_assets.core.dataset.integrity import (
    IntegrityError,
    corrupted_error,
    crop_digests_path,
    is_corrupted_error,
    load_verified_rgb,
    write_digests,
)
from synid_assets.core.dataset.layout import DatasetLayout, atomic_write_bytes, save_png
from synid_assets.core.dataset.schemas import DOCUMENT_FACES, DOCUMENTS, LIVE, LIVE_FACES, Table
from synid_assets.core.dataset.vectorstore import DOCUMENT_TABLE, LIVE_TABLE, EmbeddingStore

_log = logging.getLogger(__name__)


def _analyze(
    layout: DatasetLayout, batch_id: str, kind: str, analyzer: FaceAnalyzer, images: Table
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], list[dict[str, str]]]:
    """Detect, align and embed every image of a table; aligned crops are kept beside the images.

    Each image is decoded from bytes checked against the sha256 recorded when it was made: a corrupted one is
    not analysed (its row says so in `error`, it gets no embedding) and is returned among the corrupted.
    """
    frame = read_table(layout, batch_id, images, f"{kind} embeddings", ("image_id", "identity_id", "path", "sha256"))
    by_image, vectors, corrupted, crop_digests = {}, {}, [], {}
    records = list(frame.iter_rows(named=True))
    for start in range(0, len(records), 16):
        part, pixels = [], []
        for record in records[start : start + 16]:
            try:
                pixels.append(load_verified_rgb(layout.absolute(record["path"]), record["sha256"]))
                part.append(record)
            except IntegrityError as exc:
                _log.error("%s embeddings of batch %s: %s", kind, batch_id, exc)
                corrupted.append({**exc.as_record(), "image_id": record["image_id"]})
                by_image[record["image_id"]] = _face_row(record, analyzer.model_id, error=corrupted_error(exc))
        for record, analysis in zip(part, analyzer.analyze_many(pixels) if part else [], strict=True):
            aligned_path = None
            if analysis.detected and analysis.aligned is not None:
                from PIL import Image

                crop_path = layout.image_path(batch_id, f"aligned_{kind}", record["image_id"])
                digest, _, _ = save_png(Image.fromarray(analysis.aligned), crop_path)
                aligned_path = layout.relative(crop_path)
                crop_digests[aligned_path] = digest
            if analysis.detected and analysis.embedding is not None:
                vectors[record["image_id"]] = np.asarray(analysis.embedding, dtype=np.float32)
            by_image[record["image_id"]] = _face_row(record, analyzer.model_id, analysis, aligned_path)
    rows = [by_image[record["image_id"]] for record in records]  # in the images table's order
    # The crops' digests, so that readers of the crops (export) can check them as they check the images.
    write_digests(crop_digests_path(layout, batch_id, kind), crop_digests)
    return rows, vectors, corrupted


def _face_row(
    record: dict[str, Any], model_id: str, analysis: Any = None, aligned_path: str | None = None, error: str = ""
) -> dict[str, Any]:
    """One faces-table row: the analysis of an image, or `error` alone when the image was not analysed."""
    detected = analysis is not None and bool(analysis.detected)
    return {
        "image_id": record["image_id"],
        "identity_id": record["identity_id"],
        "model_id": model_id,
        "face_detected": detected,
        "face_count": int(analysis.face_count) if analysis is not None else 0,
        "detection_score": analysis.detection_score if analysis is not None else None,
        "bbox": json.dumps(analysis.bbox) if analysis is not None and analysis.bbox is not None else None,
        "landmarks": (
            json.dumps(analysis.landmarks) if analysis is not None and analysis.landmarks is not None else None
        ),
        "aligned_path": aligned_path,
        "error": analysis.error if analysis is not None else error,
    }


def _store_rows(
    rows: list[dict[str, Any]], vectors: dict[str, np.ndarray], batch_id: str, model_id: str
) -> list[dict[str, Any]]:
    """LanceDB rows of the faces that have an embedding."""
    return [
        {
            "identity_id": r["identity_id"],
            "image_id": r["image_id"],
            "batch_id": batch_id,
            "model_id": model_id,
            "vector": vectors[r["image_id"]],
        }
        for r in rows
        if r["image_id"] in vectors
    ]


def _generation_failed(layout: DatasetLayout, batch_id: str, images: Table) -> set[str]:
    """Images whose generator kept them but recorded a failure in their params (see `generation_failed`)."""
    frame = read_table(layout, batch_id, images, "live embeddings", ("image_id", "params"))
    return {
        row["image_id"]
        for row in frame.iter_rows(named=True)
        if generation_failed(row["params"]) is not None
    }


def embed_documents(
    layout: DatasetLayout, batch_id: str, analyzer: FaceAnalyzer, store: EmbeddingStore
) -> dict[str, Any]:
    """One LanceDB row per detected document face; failed detections are recorded, never replaced."""
    rows, vectors, corrupted = _analyze(layout, batch_id, "document", analyzer, DOCUMENTS)
    write_table(layout, batch_id, DOCUMENT_FACES, rows)
    store.replace_batch(DOCUMENT_TABLE, batch_id, _store_rows(rows, vectors, batch_id, analyzer.model_id), analyzer.dim)
    detected = sum(r["face_detected"] for r in rows)
    return {"images": len(rows), "detected": detected, "detection_rate": detected / max(1, len(rows)),
            "corrupted": corrupted}


def embed_live(
    layout: DatasetLayout,
    batch_id: str,
    analyzer: FaceAnalyzer,
    store: EmbeddingStore,
    threshold: float,
    min_good_live: int = 1,
) -> dict[str, Any]:
    """Embed each live image, record its cosine similarity to its own document face and its status.

    A live image is 'ok' when its face is found and its similarity exceeds the threshold, else 'no_face' or
    'below_threshold' ('generation_failed' when its generator recorded that it missed its targets, e.g.
    Vec2Face+'s AttrOP after its last try; 'corrupted' when its bytes no longer match their recorded sha256:
    it is not analysed);
    only 'ok' images count for the identity, and an accepted identity with fewer than `min_good_live` of them
    is recorded as incomplete.
    """
    rows, vectors, corrupted = _analyze(layout, batch_id, "live", analyzer, LIVE)
    failed = _generation_failed(layout, batch_id, LIVE)
    documents = store.vectors(DOCUMENT_TABLE, batch_id=batch_id, model_id=analyzer.model_id)
    doc_vectors = dict(zip(documents["identity_id"], documents["vector"], strict=True))
    for row in rows:
        live_vec, doc_vec = vectors.get(row["image_id"]), doc_vectors.get(row["identity_id"])
        row["similarity_to_document"] = (
            float(np.dot(live_vec, doc_vec) / (np.linalg.norm(live_vec) * np.linalg.norm(doc_vec)))
            if live_vec is not None and doc_vec is not None
            else None
        )
        similarity = row["similarity_to_document"]
        row["live_status"] = (
            "corrupted" if is_corrupted_error(row["error"])
            else "generation_failed" if row["image_id"] in failed
            else "no_face" if not row["face_detected"]
            else "ok" if similarity is not None and similarity > threshold
            else "below_threshold"
        )
        row["threshold"] = threshold
    write_table(layout, batch_id, LIVE_FACES, rows)
    good: Counter = Counter(r["identity_id"] for r in rows if r["live_status"] == "ok")
    made = {r["identity_id"] for r in rows}
    incomplete = sorted(i for i in made if good[i] < min_good_live)
    atomic_write_bytes(
        layout.batch_dir(batch_id) / "live_summary.json",
        json.dumps({"min_good_live": min_good_live, "incomplete": incomplete}).encode(),
    )
    store.replace_batch(LIVE_TABLE, batch_id, _store_rows(rows, vectors, batch_id, analyzer.model_id), analyzer.dim)
    detected = sum(r["face_detected"] for r in rows)
    sims = [r["similarity_to_document"] for r in rows if r["similarity_to_document"] is not None]
    return {
        "images": len(rows),
        "detected": detected,
        "detection_rate": detected / max(1, len(rows)),
        "similarities": sims,
        "good": sum(good.values()),
        "incomplete_identities": len(incomplete),
        "corrupted": corrupted,
    }
