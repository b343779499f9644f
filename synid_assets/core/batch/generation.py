"""The generation steps of a batch: a prompt per identity, its document image, and the live images.

Images are written atomically, each with a JSON sidecar of what made it and its sha256, so a retried run reuses
the images a killed run already finished instead of regenerating them, and makes again (from the same recorded
request and seed) any image whose bytes changed on disk since.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synid_assets.core.batch.common import read_table, write_table
from synid_assets.core.batch.filter import accepted_identities
from synid_assets.core.batch.spec import read_identities
from synid_assets.core.dataset.integrity import IntegrityError, read_verified
from synid_assets.core.dataset.layout import DatasetLayout, atomic_write_bytes, save_png
from synid_assets.core.dataset.schemas import DOCUMENTS, LIVE, PROMPTS
from synid_assets.core.dataset.seeds import stream_seed
from synid_assets.core.dataset.vectorstore import DOCUMENT_TABLE, EmbeddingStore
from synid_assets.core.generation.types import (
    DocumentGenerator,
    DocumentRequest,
    GeneratedImage,
    LiveGenerator,
    LiveRequest,
    PromptWriter,
)

_log = logging.getLogger(__name__)

# ---------------------------------------------------------------- prompts


def write_prompts(layout: DatasetLayout, batch_id: str, writer: PromptWriter) -> dict[str, Any]:
    """One prompt per identity of the batch; a model writer's model and licence are recorded with it."""
    identities = read_identities(layout, batch_id, "prompts")
    results = writer.write(identities)
    if len(results) != len(identities):
        raise RuntimeError(f"prompt writer {writer.name} returned {len(results)} prompts for {len(identities)}")
    from synid_assets.core.config.models import license_of

    for result in results:  # model writers record their model; its licence goes with it
        if result.params.get("model_id") and "license" not in result.params:
            result.params["license"] = license_of(str(result.params["model_id"]))
    rows = [
        {
            "identity_id": identity.identity_id,
            "prompt": result.prompt,
            "prompt_writer": result.writer,
            "prompt_writer_version": result.writer_version,
            "raw_output": result.raw_output,
            "prompt_params": json.dumps(result.params, sort_keys=True),
            "prompt_fallback": result.fallback,
        }
        for identity, result in zip(identities, results, strict=True)
    ]
    write_table(layout, batch_id, PROMPTS, rows)
    return {
        "prompts": len(rows),
        "fallbacks": sum(r["prompt_fallback"] for r in rows),
        "writer": f"{writer.name} v{writer.version}",
        "example": rows[0]["prompt"] if rows else "",
    }


def read_prompts(layout: DatasetLayout, batch_id: str, needed_by: str) -> dict[str, str]:
    """{identity_id: prompt} of a batch."""
    frame = read_table(layout, batch_id, PROMPTS, needed_by, ("identity_id", "prompt"))
    return dict(zip(frame["identity_id"].to_list(), frame["prompt"].to_list(), strict=True))


# ---------------------------------------------------------------- writing and reusing images


def _request_key(generator: Any, payload: dict[str, Any]) -> str:
    """What determines an image: generator, version, its settings and the request itself."""
    blob = {
        "generator": generator.name,
        "version": generator.version,
        "settings": getattr(generator, "settings", {}),
        **payload,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def _previous(image_path: Path, sidecar: Path, key: str) -> tuple[dict[str, Any] | None, IntegrityError | None]:
    """A previous run's image made from the same request: (its record, None) when its bytes are intact;
    (None, the mismatch) when the file changed (or went) after it was made; (None, None) when there is none."""
    if not sidecar.exists():
        return None, None
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError):
        return None, None
    if record.get("request_key") != key or not record.get("sha256"):
        return None, None
    try:
        read_verified(image_path, record["sha256"])
    except IntegrityError as exc:
        return None, exc
    return record, None


def _generate_images(
    layout: DatasetLayout,
    batch_id: str,
    kind: str,
    generator: Any,
    jobs: list[tuple[str, Any, dict[str, Any]]],
    chunk: int = 16,
) -> tuple[list[dict[str, Any]], int, list[dict[str, Any]]]:
    """Generate (image_id, request, payload) jobs in chunks, reusing images a killed run already made.

    Each image is written atomically with a JSON sidecar of its parameters and sha256, so a retried run resumes
    where the last one stopped instead of regenerating finished images. An image whose bytes no longer match
    its recorded sha256 is made again from the same request; returns (records, reused, corrupted), where each
    corrupted entry names the file, both digests and whether the new bytes equal the recorded ones.
    """
    records: dict[str, dict[str, Any]] = {}
    pending: list[tuple[str, Any, str]] = []
    mismatches: dict[str, IntegrityError] = {}
    for image_id, request, payload in jobs:
        path = layout.image_path(batch_id, kind, image_id)
        key = _request_key(generator, payload)
        previous, mismatch = _previous(path, path.with_suffix(".json"), key)
        if previous is not None:
            records[image_id] = previous
        else:
            pending.append((image_id, request, key))
        if mismatch is not None:
            mismatches[image_id] = mismatch
            _log.warning("%s; regenerating it from its recorded request", mismatch)
    for start in range(0, len(pending), chunk):
        part = pending[start : start + chunk]
        generated: list[GeneratedImage] = generator.generate([request for _, request, _ in part])
        for (image_id, _, key), result in zip(part, generated, strict=True):
            path = layout.image_path(batch_id, kind, image_id)
            sha, width, height = save_png(result.image, path)
            record = {
                "request_key": key,
                "sha256": sha,
                "width": width,
                "height": height,
                "path": layout.relative(path),
                "params": result.params,
            }
            atomic_write_bytes(path.with_suffix(".json"), json.dumps(record, sort_keys=True).encode())
            records[image_id] = record
    corrupted = [
        {**mismatch.as_record(), "image_id": image_id, "regenerated_sha256": records[image_id]["sha256"],
         "restored": records[image_id]["sha256"] == mismatch.expected}
        for image_id, mismatch in mismatches.items()
    ]
    for entry in corrupted:
        if not entry["restored"]:  # a generator that is not bit-reproducible (some GPU kernels)
            _log.warning("%s: regenerated with sha256 %s, not the recorded %s; later steps use the new image",
                         entry["path"], entry["regenerated_sha256"], entry["expected_sha256"])
    return [records[image_id] for image_id, _, _ in jobs], len(jobs) - len(pending), corrupted


def _image_row(
    image_id: str, batch_id: str, kind: str, live_index: int | None, request: Any, record: dict, generator: Any
) -> dict[str, Any]:
    """One row of a batch's documents/live table: where the image is and everything that made it."""
    return {
        "image_id": image_id,
        "identity_id": request.identity.identity_id,
        "batch_id": batch_id,
        "kind": kind,
        "live_index": live_index,
        "path": record["path"],
        "sha256": record["sha256"],
        "width": record["width"],
        "height": record["height"],
        "generator": generator.name,
        "generator_version": generator.version,
        "seed": request.seed,
        "params": json.dumps(record["params"], sort_keys=True),
    }


# ---------------------------------------------------------------- documents


def generate_documents(layout: DatasetLayout, batch_id: str, generator: DocumentGenerator) -> dict[str, Any]:
    """One document image per identity, from its prompt (or, for a generator that renders identity vectors, its
    sampled vector: identity_source embeddings) and its own seed stream."""
    identities = read_identities(layout, batch_id, "document_images")
    prompts = read_prompts(layout, batch_id, "document_images")
    vectors = {}
    if getattr(generator, "vector_space", None):
        from synid_assets.core.batch.vectors import read_identity_vectors

        vectors = read_identity_vectors(layout, batch_id, "document_images")
    jobs = []
    for identity in identities:
        seed = stream_seed(identity.seed, "document")
        prompt = prompts[identity.identity_id]
        vector = vectors.get(identity.identity_id)
        request = DocumentRequest(identity=identity, prompt=prompt, seed=seed, identity_vector=vector)
        payload = {"prompt": prompt, "seed": seed, "identity_seed": identity.seed, "attrs": identity.attributes}
        if vector is not None:
            payload["identity_vector"] = vector
        jobs.append((f"{identity.identity_id}-doc", request, payload))
    records, reused, corrupted = _generate_images(layout, batch_id, "documents", generator, jobs)
    rows = [
        _image_row(image_id, batch_id, "document", None, request, record, generator)
        for (image_id, request, _), record in zip(jobs, records, strict=True)
    ]
    write_table(layout, batch_id, DOCUMENTS, rows)
    return {"images": len(rows), "reused": reused, "paths": [layout.absolute(r["path"]) for r in rows],
            "corrupted": corrupted}


# ---------------------------------------------------------------- live images


def generate_live(
    layout: DatasetLayout,
    batch_id: str,
    generators: Sequence[tuple[LiveGenerator, int]],
    store: EmbeddingStore | None = None,
    model_id: str | None = None,
) -> dict[str, Any]:
    """Live images of every accepted identity: each (generator, count) makes `count` images per identity.

    Live indices run across generators in profile order. Requests carry the document image and, when the
    embeddings store is given, the document face's embedding (what identity-conditioned generators use).
    """
    identities = {i.identity_id: i for i in read_identities(layout, batch_id, "live_images")}
    prompts = read_prompts(layout, batch_id, "live_images")
    documents = read_table(layout, batch_id, DOCUMENTS, "live_images", ("identity_id", "path"))
    doc_paths = dict(zip(documents["identity_id"].to_list(), documents["path"].to_list(), strict=True))
    doc_vectors: dict[str, np.ndarray] = {}
    if store is not None and model_id is not None:
        embedded = store.vectors(DOCUMENT_TABLE, batch_id=batch_id, model_id=model_id)
        doc_vectors = dict(zip(embedded["identity_id"], embedded["vector"], strict=True))
    accepted = accepted_identities(layout, batch_id, "live_images")
    rows, reused_total, paths, corrupted = [], 0, [], []
    start = 0
    from synid_assets.core.batch.vectors import identity_vectors_in_space

    for generator, count in generators:
        sampled = identity_vectors_in_space(layout, batch_id, getattr(generator, "vector_space", None))
        jobs = []
        for ident in accepted:
            identity = identities[ident]
            vector = doc_vectors.get(ident)
            identity_vector = sampled.get(ident)
            for k in range(start, start + count):
                seed = stream_seed(identity.seed, "live", k)
                request = LiveRequest(
                    identity=identity,
                    prompt=prompts[ident],
                    live_index=k,
                    seed=seed,
                    document_path=str(layout.absolute(doc_paths[ident])),
                    document_embedding=None if vector is None else [float(x) for x in vector],
                    identity_vector=identity_vector,
                )
                payload = {"seed": seed, "identity_seed": identity.seed, "live_index": k, "attrs": identity.attributes,
                           "document": doc_paths[ident]}
                if identity_vector is not None:  # only then, so earlier live images keep their reuse keys
                    payload["identity_vector"] = identity_vector
                jobs.append((f"{ident}-live-{k:02d}", request, payload))
        records, reused, corrupted_here = _generate_images(layout, batch_id, "live", generator, jobs)
        reused_total += reused
        corrupted += corrupted_here
        for (image_id, request, _), record in zip(jobs, records, strict=True):
            rows.append(_image_row(image_id, batch_id, "live", request.live_index, request, record, generator))
            paths.append(layout.absolute(record["path"]))
        start += count
    rows.sort(key=lambda r: (r["identity_id"], r["live_index"]))
    write_table(layout, batch_id, LIVE, rows)
    return {
        "images": len(rows),
        "identities": len({r["identity_id"] for r in rows}),
        "reused": reused_total,
        "paths": paths,
        "corrupted": corrupted,
    }
