"""The identity filter step of a batch: accept or reject each identity against every earlier acceptance."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from synid_assets.core.batch.common import MissingStepError, generation_failed, read_table, write_table
from synid_assets.core.dataset.integrity import is_corrupted_error
from synid_assets.core.dataset.layout import DatasetLayout, atomic_write_bytes, check_key
from synid_assets.core.dataset.schemas import DOCUMENT_FACES, DOCUMENTS, FILTER_DECISIONS, IDENTITIES
from synid_assets.core.dataset.vectorstore import ACCEPTED_TABLE, DOCUMENT_TABLE, EmbeddingStore
from synid_assets.core.filtering.similarity import dataset_fmr


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


class FilterOrderError(MissingStepError):
    """Deciding a batch now would break key order; `undecided` lists the earlier batches it must wait for."""

    def __init__(self, message: str, undecided: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.undecided = list(undecided)


def _check_key_order(layout: DatasetLayout, batch_id: str, known_batches: Sequence[str] = ()) -> None:
    """Every earlier batch (sampled here, or a known partition) is decided, and, for a first decision, no later one.

    A later batch decided first would not have seen this batch's acceptances, so two lookalikes could both stay.
    """
    sampled = {path.parent.name for path in layout.batches_dir.glob(f"*/{IDENTITIES.name}.parquet")}
    undecided = sorted(
        key
        for key in sampled | {key for key in known_batches if _valid_key(key)}
        if key < batch_id and not layout.table(key, FILTER_DECISIONS.name).exists()
    )
    if undecided:
        raise FilterOrderError(
            f"identity_filter for {batch_id}: earlier batches {undecided} have no filter decisions yet; "
            "the filter decides batches in key order, so materialize identity_filter for those first "
            "(or delete the partitions of batches that will never be made)",
            undecided,
        )
    if layout.table(batch_id, FILTER_DECISIONS.name).exists():
        return  # a re-decision sees exactly what its first decision saw
    later = sorted(
        path.parent.name
        for path in layout.batches_dir.glob(f"*/{FILTER_DECISIONS.name}.parquet")
        if path.parent.name > batch_id
    )
    if later:
        raise FilterOrderError(
            f"identity_filter for {batch_id}: later batches {later} were decided before it, without its "
            "acceptances; deciding it now would break the filter's key order: give new batches keys that sort "
            f"after {later[-1]}"
        )


def _valid_key(key: str) -> bool:
    """A partition key that can name a batch (others can never be sampled, so they wait for nothing)."""
    try:
        check_key(key)
    except ValueError:
        return False
    return True


@contextmanager
def decision_lock(layout: DatasetLayout, poll_seconds: float = 0.2) -> Iterator[None]:
    """One identity-filter decision at a time on a dataset, across processes on the machines sharing its files.

    The `identity_filter` pool admits one step at a time where the Dagster instance is shared; this lock holds
    even where it is not (another instance, a pool limit raised by hand). It is polled, not blocked on, so a
    waiting step still answers SIGTERM.
    """
    import fcntl

    layout.batches_dir.mkdir(parents=True, exist_ok=True)
    with open(layout.batches_dir / "identity_filter.lock", "a+b") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(poll_seconds)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _check_no_corrupted_documents(faces: Any, batch_id: str) -> None:
    """A document left out as corrupted would be decided as 'no face': refuse until it is made again."""
    corrupted = sorted(r["image_id"] for r in faces.iter_rows(named=True) if is_corrupted_error(r["error"]))
    if corrupted:
        raise MissingStepError(
            f"identity_filter for {batch_id}: document images {corrupted} are corrupted (their bytes changed after "
            "they were made) and were not embedded; rerun the batch: document_images makes them again from their "
            "recorded seeds, then the filter decides the batch"
        )


def _failed_documents(layout: DatasetLayout, batch_id: str) -> dict[str, str]:
    """identity -> the generation status of its document, for documents whose generator recorded a failure."""
    documents = read_table(layout, batch_id, DOCUMENTS, "identity_filter", ("identity_id", "params"))
    failed = ((r["identity_id"], generation_failed(r["params"])) for r in documents.iter_rows(named=True))
    return {identity: status for identity, status in failed if status is not None}


def _decision_rows(
    decisions: list[Any],
    leaks: dict[str, tuple[str, float]],
    failed: dict[str, str],
    batch_id: str,
    settings: FilterSettings,
) -> list[dict[str, Any]]:
    """Rows of the filter_decisions table: one per decided identity, then one per leak, then one per document
    whose generation failed."""
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
            "rejection_reason": None if d.accepted else "similar",
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
            "rejection_reason": "leak",
        }
        for identity, (match, similarity) in leaks.items()
    ]
    rows += [
        {
            **base,
            "identity_id": identity,
            "nearest_identity_id": None,
            "similarity": None,
            "accepted": False,
            "rejected_leak": False,
            "leak_match": None,
            "leak_similarity": None,
            "decision_order": None,
            "rejection_reason": "generation_failed",
        }
        for identity in sorted(failed)
    ]
    return rows


def filter_batch(
    layout: DatasetLayout,
    batch_id: str,
    store: EmbeddingStore,
    settings: FilterSettings,
    known_batches: Sequence[str] = (),
) -> dict[str, Any]:
    """Order-stable, incremental identity filter of one batch against every identity accepted before it.

    Decision order is batch key order, then index: a batch sees only the acceptances of batches whose key
    sorts before its own, so re-deciding it later gives the same decisions. Every earlier batch (sampled, or
    among `known_batches`, the partitions that exist) must therefore be decided first, else FilterOrderError;
    one decision runs at a time across processes (decision_lock). An identity whose face matches a reference
    gallery face above the threshold is rejected as a leak before the similarity rule runs; one whose document's
    generator recorded a failure (`generation_status` other than 'ok' in its params, e.g. Vec2Face+'s
    'attrop_failed') is rejected as 'generation_failed' before both, and never becomes an accepted vector.
    """
    if settings.mode not in ("strict", "fmr"):
        raise ValueError(f"identity filter mode {settings.mode!r} is not 'strict' or 'fmr'")
    if settings.mode == "fmr" and settings.target_fmr is None:
        raise ValueError("identity filter mode 'fmr' needs a target_fmr")
    with decision_lock(layout):
        _check_key_order(layout, batch_id, known_batches)
        return _decide(layout, batch_id, store, settings)


def _decide(layout: DatasetLayout, batch_id: str, store: EmbeddingStore, settings: FilterSettings) -> dict[str, Any]:
    from synid_assets.core.filtering.incremental import incremental_fmr_filter, strict_filter

    faces = read_table(
        layout, batch_id, DOCUMENT_FACES, "identity_filter", ("image_id", "identity_id", "face_detected", "error")
    )
    _check_no_corrupted_documents(faces, batch_id)
    embedded = store.vectors(DOCUMENT_TABLE, batch_id=batch_id, model_id=settings.model_id)
    by_image = dict(zip(embedded["image_id"], embedded["vector"], strict=True))
    embedded = [
        (r["identity_id"], by_image[r["image_id"]])
        for r in faces.sort("image_id").iter_rows(named=True)
        if r["face_detected"] and r["image_id"] in by_image
    ]
    failed_status = _failed_documents(layout, batch_id)
    failed = {identity: failed_status[identity] for identity, _ in embedded if identity in failed_status}
    candidates = [c for c in embedded if c[0] not in failed]
    # Re-deciding a batch must not see its own previous acceptances.
    store.delete_batch(ACCEPTED_TABLE, batch_id)
    leaks: dict[str, tuple[str, float]] = {}
    if settings.leak_gallery and candidates:
        from synid_assets.core.filtering.leakage import Gallery

        matches = Gallery(settings.leak_gallery).nearest(np.stack([c[1] for c in candidates]))
        leaks = {c[0]: m for c, m in zip(candidates, matches, strict=True) if m[1] > settings.threshold}
    kept = [c for c in candidates if c[0] not in leaks]
    ids = [c[0] for c in kept]
    dim = len(embedded[0][1]) if embedded else 0
    matrix = np.stack([c[1] for c in kept]) if kept else np.zeros((0, dim), np.float32)
    state = _filter_state(layout, batch_id)
    saturated = False  # fmr mode: some candidate had `neighbour_limit` earlier neighbours, all above threshold
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
        saturated = any(len(p) >= settings.neighbour_limit and p[-1][1] > settings.threshold for p in neighbours)
        decisions, edges_total = incremental_fmr_filter(
            ids, matrix, settings.threshold, float(settings.target_fmr), neighbours,
            state["accepted_total"], state["edges_total"],
        )
    accepted_count = sum(d.accepted for d in decisions)
    write_table(layout, batch_id, FILTER_DECISIONS, _decision_rows(decisions, leaks, failed, batch_id, settings))
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
        "candidates": len(embedded),
        "accepted": accepted_count,
        "rejected_similar": len(kept) - accepted_count,
        "rejected_leak": len(leaks),
        "rejected_generation_failed": len(failed),
        "no_face": faces.height - len(embedded),
        "acceptance_rate": accepted_count / max(1, len(embedded)),
        "dataset_accepted": accepted_total,
        "dataset_fmr": dataset_fmr(accepted_total, edges_total),
        # every candidate is compared with every earlier acceptance (flat LanceDB scan) and the batch's own
        # candidates (dense products): the figures are exact unless a neighbour list was cut at its limit
        "search": "exact",
        "figures": "lower bound" if saturated else "exact",
    }


def accepted_identities(layout: DatasetLayout, batch_id: str, needed_by: str) -> list[str]:
    """The identities the filter accepted in a batch, in decision order."""
    frame = read_table(layout, batch_id, FILTER_DECISIONS, needed_by, ("identity_id", "accepted", "decision_order"))
    return frame.filter(frame["accepted"]).sort("decision_order")["identity_id"].to_list()
