"""The steps of one identity batch, as plain functions over a dataset layout (no Dagster here).

Each step reads the files of the step before it and writes its own Parquet table (and images) atomically,
so any step can be re-run on its own, and a killed run leaves only whole files behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synid_assets.core.analysis.types import FaceAnalyzer
from synid_assets.core.dataset.layout import DatasetLayout, atomic_write_bytes, save_png, sha256_file, write_parquet
from synid_assets.core.dataset.seeds import identity_id, identity_seed, rng_for, stream_seed
from synid_assets.core.dataset.vectorstore import ACCEPTED_TABLE, DOCUMENT_TABLE, LIVE_TABLE, EmbeddingStore
from synid_assets.core.filtering.incremental import strict_filter
from synid_assets.core.generation.types import (
    DocumentGenerator,
    DocumentRequest,
    GeneratedImage,
    IdentityRecord,
    LiveGenerator,
    LiveRequest,
    PromptWriter,
)


class MissingStepError(RuntimeError):
    """A step's input files are missing: the upstream asset has not been materialized for this batch."""


def _read(layout: DatasetLayout, batch_id: str, name: str, needed_by: str):
    import polars as pl

    path = layout.table(batch_id, name)
    if not path.exists():
        raise MissingStepError(
            f"{needed_by}: {path} does not exist; materialize the upstream asset for batch {batch_id} first"
        )
    return pl.read_parquet(path)


# ---------------------------------------------------------------- attribute spec


def snapshot_spec(layout: DatasetLayout, spec: Any) -> dict[str, Any]:
    """Copy the validated spec files into SYNID_HOME, so batches are sampled from exactly this version."""
    snapshot = layout.spec_snapshot_dir(spec.fingerprint)
    if not snapshot.exists():
        tmp = snapshot.with_name(snapshot.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for path in sorted(Path(spec.directory).iterdir()):
            if path.is_file() and path.suffix in (".txt", ".json"):
                shutil.copy2(path, tmp / path.name)
        tmp.rename(snapshot)
    record = {
        "fingerprint": spec.fingerprint,
        "source_dir": str(Path(spec.directory).resolve()),
        "snapshot_dir": layout.relative(snapshot),
        "classes": [c.name for c in spec.classes],
    }
    atomic_write_bytes(layout.current_spec_file, json.dumps(record, indent=2).encode())
    return record


def load_current_spec(layout: DatasetLayout) -> Any:
    """The spec the attribute spec asset last validated (its snapshot, not the live directory)."""
    from synid_assets.core.spec.attributes import load_attribute_spec

    if not layout.current_spec_file.exists():
        raise MissingStepError(
            f"{layout.current_spec_file} does not exist; materialize the attribute_spec asset first"
        )
    record = json.loads(layout.current_spec_file.read_text())
    return load_attribute_spec(layout.absolute(record["snapshot_dir"]))


# ---------------------------------------------------------------- identities


def resolve_batch_size(layout: DatasetLayout, batch_id: str, requested: int | None, default: int) -> int:
    """A batch keeps the size it was first made with, so re-materializing it from the UI re-makes the same ids."""
    record = layout.batch_dir(batch_id) / "batch.json"
    if requested is None and record.exists():
        return int(json.loads(record.read_text())["batch_size"])
    size = requested or default
    if size < 1:
        raise ValueError(f"batch {batch_id}: batch size must be >= 1, got {size}")
    atomic_write_bytes(record, json.dumps({"batch_id": batch_id, "batch_size": size}).encode())
    return size


def sample_batch(
    layout: DatasetLayout, spec: Any, dataset_seed: int, batch_id: str, batch_size: int
) -> dict[str, Any]:
    """Sample the attributes of every identity of a batch from (dataset seed, batch key, index)."""
    import polars as pl

    from synid_assets.core.spec.attributes import sample_identity_attributes, subject_word

    identity_rows, attribute_rows = [], []
    for index in range(batch_size):
        seed = identity_seed(dataset_seed, batch_id, index)
        attributes = sample_identity_attributes(spec, rng_for(seed, "attributes"))
        ident = identity_id(batch_id, index)
        identity_rows.append(
            {
                "identity_id": ident,
                "batch_id": batch_id,
                "idx": index,
                "seed": seed,
                "subject": subject_word(spec, attributes),
                "attributes_json": json.dumps(attributes),
                "spec_fingerprint": spec.fingerprint,
                "dataset_seed": dataset_seed,
            }
        )
        attribute_rows += [{"identity_id": ident, "attribute": k, "value": v} for k, v in attributes.items()]
    identities = pl.DataFrame(identity_rows, schema_overrides={"seed": pl.UInt64, "idx": pl.Int32})
    attributes_frame = pl.DataFrame(
        attribute_rows, schema={"identity_id": pl.String, "attribute": pl.String, "value": pl.String}
    )
    write_parquet(identities, layout.table(batch_id, "identities"))
    write_parquet(attributes_frame, layout.table(batch_id, "attributes"))
    return {
        "identities": len(identity_rows),
        "attribute_rows": len(attribute_rows),
        "distribution": attribute_distribution(attribute_rows),
    }


def attribute_distribution(attribute_rows: Sequence[dict[str, str]]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter] = {}
    for row in attribute_rows:
        counts.setdefault(row["attribute"], Counter())[row["value"]] += 1
    return {k: dict(sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))) for k, v in sorted(counts.items())}


def read_identities(layout: DatasetLayout, batch_id: str, needed_by: str = "step") -> list[IdentityRecord]:
    frame = _read(layout, batch_id, "identities", needed_by)
    return [
        IdentityRecord(
            identity_id=row["identity_id"],
            batch_id=row["batch_id"],
            index=row["idx"],
            seed=int(row["seed"]),
            attributes=json.loads(row["attributes_json"]),
            subject=row["subject"],
        )
        for row in frame.iter_rows(named=True)
    ]


# ---------------------------------------------------------------- prompts


def write_prompts(layout: DatasetLayout, batch_id: str, writer: PromptWriter) -> dict[str, Any]:
    import polars as pl

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
    schema = {
        "identity_id": pl.String,
        "prompt": pl.String,
        "prompt_writer": pl.String,
        "prompt_writer_version": pl.String,
        "raw_output": pl.String,
        "prompt_params": pl.String,
        "prompt_fallback": pl.Boolean,
    }
    write_parquet(pl.DataFrame(rows, schema=schema), layout.table(batch_id, "prompts"))
    return {
        "prompts": len(rows),
        "fallbacks": sum(r["prompt_fallback"] for r in rows),
        "writer": f"{writer.name} v{writer.version}",
        "example": rows[0]["prompt"] if rows else "",
    }


def read_prompts(layout: DatasetLayout, batch_id: str, needed_by: str) -> dict[str, str]:
    frame = _read(layout, batch_id, "prompts", needed_by)
    return dict(zip(frame["identity_id"].to_list(), frame["prompt"].to_list(), strict=True))


# ---------------------------------------------------------------- images


def _request_key(generator: Any, payload: dict[str, Any]) -> str:
    """What determines an image: generator, version, its settings and the request itself."""
    blob = {
        "generator": generator.name,
        "version": generator.version,
        "settings": getattr(generator, "settings", {}),
        **payload,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def _reusable(image_path: Path, sidecar: Path, key: str) -> dict[str, Any] | None:
    """A previous run's image, if it was made from the same request and its bytes are intact."""
    if not (image_path.exists() and sidecar.exists()):
        return None
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("request_key") != key or record.get("sha256") != sha256_file(image_path):
        return None
    return record


def _generate_images(
    layout: DatasetLayout,
    batch_id: str,
    kind: str,
    generator: Any,
    jobs: list[tuple[str, Any, dict[str, Any]]],
    chunk: int = 16,
) -> tuple[list[dict[str, Any]], int]:
    """Generate (image_id, request, payload) jobs in chunks, reusing images a killed run already made.

    Each image is written atomically with a JSON sidecar of its parameters, so a retried run resumes where
    the last one stopped instead of regenerating finished images.
    """
    records: dict[str, dict[str, Any]] = {}
    pending: list[tuple[str, Any, str]] = []
    for image_id, request, payload in jobs:
        path = layout.image_path(batch_id, kind, image_id)
        key = _request_key(generator, payload)
        previous = _reusable(path, path.with_suffix(".json"), key)
        if previous is not None:
            records[image_id] = previous
        else:
            pending.append((image_id, request, key))
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
    return [records[image_id] for image_id, _, _ in jobs], len(jobs) - len(pending)


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


def _image_schema():
    import polars as pl

    return {
        "image_id": pl.String,
        "identity_id": pl.String,
        "batch_id": pl.String,
        "kind": pl.String,
        "live_index": pl.Int32,
        "path": pl.String,
        "sha256": pl.String,
        "width": pl.Int32,
        "height": pl.Int32,
        "generator": pl.String,
        "generator_version": pl.String,
        "seed": pl.UInt64,
        "params": pl.String,
    }


def generate_documents(layout: DatasetLayout, batch_id: str, generator: DocumentGenerator) -> dict[str, Any]:
    import polars as pl

    identities = read_identities(layout, batch_id, "document_images")
    prompts = read_prompts(layout, batch_id, "document_images")
    jobs = []
    for identity in identities:
        seed = stream_seed(identity.seed, "document")
        prompt = prompts[identity.identity_id]
        request = DocumentRequest(identity=identity, prompt=prompt, seed=seed)
        payload = {"prompt": prompt, "seed": seed, "identity_seed": identity.seed, "attrs": identity.attributes}
        jobs.append((f"{identity.identity_id}-doc", request, payload))
    records, reused = _generate_images(layout, batch_id, "documents", generator, jobs)
    rows = [
        _image_row(image_id, batch_id, "document", None, request, record, generator)
        for (image_id, request, _), record in zip(jobs, records, strict=True)
    ]
    write_parquet(pl.DataFrame(rows, schema=_image_schema()), layout.table(batch_id, "documents"))
    return {"images": len(rows), "reused": reused, "paths": [layout.absolute(r["path"]) for r in rows]}


# ---------------------------------------------------------------- face analysis


def _analyze(
    layout: DatasetLayout, batch_id: str, kind: str, analyzer: FaceAnalyzer, images_table: str
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Detect, align and embed every image of a table; aligned crops are kept beside the images."""
    from synid_assets.core.analysis.images import load_rgb

    frame = _read(layout, batch_id, images_table, f"{kind} embeddings")
    rows, vectors = [], {}
    records = list(frame.iter_rows(named=True))
    for start in range(0, len(records), 16):
        part = records[start : start + 16]
        pixels = [load_rgb(layout.absolute(r["path"])) for r in part]
        for record, analysis in zip(part, analyzer.analyze_many(pixels), strict=True):
            aligned_path = None
            if analysis.detected and analysis.aligned is not None:
                from PIL import Image

                crop_path = layout.image_path(batch_id, f"aligned_{kind}", record["image_id"])
                save_png(Image.fromarray(analysis.aligned), crop_path)
                aligned_path = layout.relative(crop_path)
            if analysis.detected and analysis.embedding is not None:
                vectors[record["image_id"]] = np.asarray(analysis.embedding, dtype=np.float32)
            rows.append(
                {
                    "image_id": record["image_id"],
                    "identity_id": record["identity_id"],
                    "model_id": analyzer.model_id,
                    "face_detected": bool(analysis.detected),
                    "face_count": int(analysis.face_count),
                    "detection_score": analysis.detection_score,
                    "bbox": json.dumps(analysis.bbox) if analysis.bbox is not None else None,
                    "landmarks": json.dumps(analysis.landmarks) if analysis.landmarks is not None else None,
                    "aligned_path": aligned_path,
                    "error": analysis.error,
                }
            )
    return rows, vectors


def _faces_schema(with_similarity: bool):
    import polars as pl

    schema = {
        "image_id": pl.String,
        "identity_id": pl.String,
        "model_id": pl.String,
        "face_detected": pl.Boolean,
        "face_count": pl.Int32,
        "detection_score": pl.Float64,
        "bbox": pl.String,
        "landmarks": pl.String,
        "aligned_path": pl.String,
        "error": pl.String,
    }
    if with_similarity:
        schema["similarity_to_document"] = pl.Float64
    return schema


def embed_documents(
    layout: DatasetLayout, batch_id: str, analyzer: FaceAnalyzer, store: EmbeddingStore
) -> dict[str, Any]:
    """One LanceDB row per detected document face; failed detections are recorded, never replaced."""
    import polars as pl

    rows, vectors = _analyze(layout, batch_id, "document", analyzer, "documents")
    write_parquet(pl.DataFrame(rows, schema=_faces_schema(False)), layout.table(batch_id, "document_faces"))
    lance_rows = [
        {
            "identity_id": r["identity_id"],
            "image_id": r["image_id"],
            "batch_id": batch_id,
            "model_id": analyzer.model_id,
            "vector": vectors[r["image_id"]],
        }
        for r in rows
        if r["image_id"] in vectors
    ]
    store.replace_batch(DOCUMENT_TABLE, batch_id, lance_rows, analyzer.dim)
    detected = sum(r["face_detected"] for r in rows)
    return {"images": len(rows), "detected": detected, "detection_rate": detected / max(1, len(rows))}


# ---------------------------------------------------------------- identity filter


@dataclass(frozen=True)
class FilterSettings:
    """How the identity filter decides: mode, threshold (with its FMR and source), optional leak gallery."""

    model_id: str
    threshold: float
    threshold_fmr: float
    threshold_source: str
    mode: str = "strict"  # or "fmr": FLUXSynID's dataset-FMR rule, earlier acceptances held fixed
    target_fmr: float | None = None
    leak_gallery: str | None = None
    neighbour_limit: int = 1000


def _filter_state(layout: DatasetLayout, batch_id: str) -> dict[str, int]:
    """Accepted identities and above-threshold pairs among them after the last batch before this one."""
    earlier = sorted(p for p in layout.batches_dir.glob("*/filter_state.json") if p.parent.name < batch_id)
    if not earlier:
        return {"accepted_total": 0, "edges_total": 0}
    return json.loads(earlier[-1].read_text())


def filter_batch(
    layout: DatasetLayout, batch_id: str, store: EmbeddingStore, settings: FilterSettings
) -> dict[str, Any]:
    """Order-stable, incremental identity filter of one batch against every identity accepted before it.

    Decision order is batch key order, then index: a batch sees only the acceptances of batches whose key
    sorts before its own, so re-deciding it later gives the same decisions. Every earlier sampled batch must
    therefore be decided first. An identity whose face matches a reference gallery face above the threshold
    is rejected as a leak before the similarity rule runs.
    """
    import polars as pl

    from synid_assets.core.filtering.incremental import incremental_fmr_filter

    if settings.mode not in ("strict", "fmr"):
        raise ValueError(f"identity filter mode {settings.mode!r} is not 'strict' or 'fmr'")
    if settings.mode == "fmr" and settings.target_fmr is None:
        raise ValueError("identity filter mode 'fmr' needs a target_fmr")
    undecided = [
        path.parent.name
        for path in sorted(layout.batches_dir.glob("*/identities.parquet"))
        if path.parent.name < batch_id and not (path.parent / "filter_decisions.parquet").exists()
    ]
    if undecided:
        raise MissingStepError(
            f"identity_filter for {batch_id}: earlier batches {undecided} have no filter decisions yet; "
            "the filter decides batches in key order, so materialize identity_filter for those first"
        )
    faces = _read(layout, batch_id, "document_faces", "identity_filter")
    embedded = store.vectors(DOCUMENT_TABLE, batch_id=batch_id, model_id=settings.model_id)
    by_image = dict(zip(embedded["image_id"], embedded["vector"], strict=True))
    candidates = [
        (r["identity_id"], by_image[r["image_id"]])
        for r in faces.sort("image_id").iter_rows(named=True)
        if r["face_detected"] and r["image_id"] in by_image
    ]
    # Re-deciding a batch must not see its own previous acceptances.
    store.delete_batch(ACCEPTED_TABLE, batch_id)
    leaks: dict[str, tuple[str, float]] = {}
    if settings.leak_gallery and candidates:
        from synid_assets.core.filtering.leakage import Gallery

        matches = Gallery(settings.leak_gallery).nearest(np.stack([c[1] for c in candidates]))
        leaks = {c[0]: m for c, m in zip(candidates, matches, strict=True) if m[1] > settings.threshold}
    kept = [c for c in candidates if c[0] not in leaks]
    ids = [c[0] for c in kept]
    dim = len(candidates[0][1]) if candidates else 0
    matrix = np.stack([c[1] for c in kept]) if kept else np.zeros((0, dim), np.float32)
    state = _filter_state(layout, batch_id)
    if settings.mode == "strict":
        decisions = strict_filter(
            ids,
            matrix,
            settings.threshold,
            prior_search=lambda q: store.nearest(ACCEPTED_TABLE, q, settings.model_id, before_batch=batch_id),
        )
        edges_total = state["edges_total"]
    else:
        neighbours = (
            store.neighbours(ACCEPTED_TABLE, matrix, settings.model_id, batch_id, settings.neighbour_limit)
            if kept
            else []
        )
        decisions, edges_total = incremental_fmr_filter(
            ids, matrix, settings.threshold, float(settings.target_fmr), neighbours,
            state["accepted_total"], state["edges_total"],
        )
    accepted_count = sum(d.accepted for d in decisions)
    base = {
        "batch_id": batch_id,
        "threshold": settings.threshold,
        "threshold_fmr": settings.threshold_fmr,
        "threshold_source": settings.threshold_source,
        "model_id": settings.model_id,
        "mode": settings.mode,
        "target_fmr": settings.target_fmr,
    }
    rows = [
        {
            **base,
            "identity_id": d.identity_id,
            "nearest_identity_id": d.nearest_identity_id,
            "similarity": d.similarity,
            "accepted": d.accepted,
            "rejected_leak": False,
            "leak_match": None,
            "leak_similarity": None,
            "decision_order": order,
        }
        for order, d in enumerate(decisions)
    ]
    rows += [
        {
            **base,
            "identity_id": identity,
            "nearest_identity_id": None,
            "similarity": None,
            "accepted": False,
            "rejected_leak": True,
            "leak_match": match,
            "leak_similarity": similarity,
            "decision_order": None,
        }
        for identity, (match, similarity) in leaks.items()
    ]
    schema = {
        "identity_id": pl.String,
        "batch_id": pl.String,
        "nearest_identity_id": pl.String,
        "similarity": pl.Float64,
        "threshold": pl.Float64,
        "threshold_fmr": pl.Float64,
        "threshold_source": pl.String,
        "model_id": pl.String,
        "mode": pl.String,
        "target_fmr": pl.Float64,
        "accepted": pl.Boolean,
        "rejected_leak": pl.Boolean,
        "leak_match": pl.String,
        "leak_similarity": pl.Float64,
        "decision_order": pl.Int32,
    }
    write_parquet(pl.DataFrame(rows, schema=schema), layout.table(batch_id, "filter_decisions"))
    accepted_rows = [
        {
            "identity_id": d.identity_id,
            "image_id": f"{d.identity_id}-doc",
            "batch_id": batch_id,
            "model_id": settings.model_id,
            "vector": matrix[i],
        }
        for i, d in enumerate(decisions)
        if d.accepted
    ]
    if dim:
        store.replace_batch(ACCEPTED_TABLE, batch_id, accepted_rows, dim)
    accepted_total = state["accepted_total"] + accepted_count
    atomic_write_bytes(
        layout.batch_dir(batch_id) / "filter_state.json",
        json.dumps({"accepted_total": accepted_total, "edges_total": edges_total}).encode(),
    )
    return {
        "candidates": len(candidates),
        "accepted": accepted_count,
        "rejected_similar": len(kept) - accepted_count,
        "rejected_leak": len(leaks),
        "no_face": faces.height - len(candidates),
        "acceptance_rate": accepted_count / max(1, len(candidates)),
        "dataset_accepted": accepted_total,
        "dataset_fmr": 2 * edges_total / (accepted_total * (accepted_total - 1)) if accepted_total > 1 else 0.0,
    }


def accepted_identities(layout: DatasetLayout, batch_id: str, needed_by: str) -> list[str]:
    frame = _read(layout, batch_id, "filter_decisions", needed_by)
    return frame.filter(frame["accepted"]).sort("decision_order")["identity_id"].to_list()


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
    import polars as pl

    identities = {i.identity_id: i for i in read_identities(layout, batch_id, "live_images")}
    prompts = read_prompts(layout, batch_id, "live_images")
    documents = _read(layout, batch_id, "documents", "live_images")
    doc_paths = dict(zip(documents["identity_id"].to_list(), documents["path"].to_list(), strict=True))
    doc_vectors: dict[str, np.ndarray] = {}
    if store is not None and model_id is not None:
        embedded = store.vectors(DOCUMENT_TABLE, batch_id=batch_id, model_id=model_id)
        doc_vectors = dict(zip(embedded["identity_id"], embedded["vector"], strict=True))
    accepted = accepted_identities(layout, batch_id, "live_images")
    rows, reused_total, paths = [], 0, []
    start = 0
    for generator, count in generators:
        jobs = []
        for ident in accepted:
            identity = identities[ident]
            vector = doc_vectors.get(ident)
            for k in range(start, start + count):
                seed = stream_seed(identity.seed, "live", k)
                request = LiveRequest(
                    identity=identity,
                    prompt=prompts[ident],
                    live_index=k,
                    seed=seed,
                    document_path=str(layout.absolute(doc_paths[ident])),
                    document_embedding=None if vector is None else [float(x) for x in vector],
                )
                payload = {"seed": seed, "identity_seed": identity.seed, "live_index": k, "attrs": identity.attributes,
                           "document": doc_paths[ident]}
                jobs.append((f"{ident}-live-{k:02d}", request, payload))
        records, reused = _generate_images(layout, batch_id, "live", generator, jobs)
        reused_total += reused
        for (image_id, request, _), record in zip(jobs, records, strict=True):
            rows.append(_image_row(image_id, batch_id, "live", request.live_index, request, record, generator))
            paths.append(layout.absolute(record["path"]))
        start += count
    rows.sort(key=lambda r: (r["identity_id"], r["live_index"]))
    write_parquet(pl.DataFrame(rows, schema=_image_schema()), layout.table(batch_id, "live"))
    return {
        "images": len(rows),
        "identities": len({r["identity_id"] for r in rows}),
        "reused": reused_total,
        "paths": paths,
    }


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
    'below_threshold'; only 'ok' images count for the identity, and an accepted identity with fewer than
    `min_good_live` of them is recorded as incomplete.
    """
    import polars as pl

    rows, vectors = _analyze(layout, batch_id, "live", analyzer, "live")
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
            "no_face" if not row["face_detected"] else "ok" if similarity is not None and similarity > threshold
            else "below_threshold"
        )
        row["threshold"] = threshold
    schema = {**_faces_schema(True), "live_status": pl.String, "threshold": pl.Float64}
    write_parquet(pl.DataFrame(rows, schema=schema), layout.table(batch_id, "live_faces"))
    good: Counter = Counter(r["identity_id"] for r in rows if r["live_status"] == "ok")
    made = {r["identity_id"] for r in rows}
    incomplete = sorted(i for i in made if good[i] < min_good_live)
    atomic_write_bytes(
        layout.batch_dir(batch_id) / "live_summary.json",
        json.dumps({"min_good_live": min_good_live, "incomplete": incomplete}).encode(),
    )
    lance_rows = [
        {
            "identity_id": r["identity_id"],
            "image_id": r["image_id"],
            "batch_id": batch_id,
            "model_id": analyzer.model_id,
            "vector": vectors[r["image_id"]],
        }
        for r in rows
        if r["image_id"] in vectors
    ]
    store.replace_batch(LIVE_TABLE, batch_id, lance_rows, analyzer.dim)
    detected = sum(r["face_detected"] for r in rows)
    sims = [r["similarity_to_document"] for r in rows if r["similarity_to_document"] is not None]
    return {
        "images": len(rows),
        "detected": detected,
        "detection_rate": detected / max(1, len(rows)),
        "similarities": sims,
        "good": sum(good.values()),
        "incomplete_identities": len(incomplete),
    }
