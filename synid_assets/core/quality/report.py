"""The dataset quality report: score distributions, EER, DET, U_class, C_intra, demographic groups, galleries.

Reads the manifest (read-only), the LanceDB embeddings and, when one exists, evaluation.duckdb (read-only);
writes a static HTML report with its plots, and its own DuckDB file (`quality.duckdb`, report_tables.py; the
manifest keeps its single writer). `synid query` attaches it as the schema `quality`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synid_assets.core.dataset.layout import DatasetLayout, atomic_write_bytes
from synid_assets.core.dataset.manifest import check_manifest
from synid_assets.core.dataset.schemas import (
    MANIFEST_FILTER_DECISIONS,
    MANIFEST_IDENTITIES,
    MANIFEST_IDENTITY_ATTRIBUTES,
    MANIFEST_IMAGES,
)
from synid_assets.core.dataset.vectorstore import DOCUMENT_TABLE, LIVE_TABLE, EmbeddingStore
from synid_assets.core.filtering.similarity import unit_rows
from synid_assets.core.quality.calibration import DEFAULT_FMRS, eer, impostor_thresholds
from synid_assets.core.quality.demographics import demographic_classes, demographic_rows
from synid_assets.core.quality.det import det_curve
from synid_assets.core.quality.fr_evaluations import latest_fr_evaluations
from synid_assets.core.quality.galleries import (
    GALLERY_PAIRS,
    accepted_gallery,
    contact_sheet,
    most_similar_pairs,
    pair_jpeg,
    rejected_gallery,
)
from synid_assets.core.quality.report_html import report_html
from synid_assets.core.quality.report_plots import attribute_plot, demographics_png, det_png, score_plot
from synid_assets.core.quality.report_tables import write_quality_duckdb
from synid_assets.core.quality.scores import fnmr_at, impostor_scores, u_class, within_identity_scores


def _read_manifest(layout: DatasetLayout) -> dict[str, Any]:
    """Everything the report needs from manifest.duckdb, in one read-only connection."""
    import duckdb

    if not layout.manifest_path.exists():
        raise FileNotFoundError(f"{layout.manifest_path} does not exist; materialize dataset_manifest first")
    with duckdb.connect(str(layout.manifest_path), read_only=True) as con:
        # The tables read below, with every column schemas.py gives them (not a manifest of an older SynID).
        check_manifest(con, layout.manifest_path, (MANIFEST_IDENTITIES, MANIFEST_IMAGES, MANIFEST_IDENTITY_ATTRIBUTES,
                                                   MANIFEST_FILTER_DECISIONS))
        return {
            "status_by_identity": dict(con.execute("SELECT identity_id, status FROM identities").fetchall()),
            "live_vs_doc": con.execute(
                "SELECT identity_id, similarity_to_document FROM images WHERE kind = 'live' "
                "AND similarity_to_document IS NOT NULL ORDER BY image_id").fetchall(),
            "detection": con.execute(
                "SELECT kind, generator, count(*), count(*) FILTER (WHERE NOT face_detected) "
                "FROM images GROUP BY 1, 2 ORDER BY 1, 2").fetchall(),
            "attributes": con.execute(
                "SELECT a.identity_id, a.attribute, a.value, i.status "
                "FROM identity_attributes a JOIN identities i USING (identity_id)").fetchall(),
            "decisions": con.execute(
                "SELECT identity_id, nearest_identity_id, similarity, threshold, accepted, "
                "coalesce(rejected_leak, false) FROM filter_decisions ORDER BY identity_id").fetchall(),
            # The face crop the embedder compared, where there is one: what a reviewer should judge.
            "document_paths": dict(con.execute(
                "SELECT identity_id, coalesce(aligned_path, path) FROM images WHERE kind = 'document'").fetchall()),
        }


def build_quality_report(
    layout: DatasetLayout,
    store: EmbeddingStore,
    model_id: str,
    threshold: float,
    threshold_fmr: float,
    spec: Any | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Compute every figure, write reports/quality.html, reports/*.png and quality.duckdb; return the summary.

    The summary also carries, under `det`, `demographics`, `gallery`, `fr_evaluations` and `contact_sheets`,
    the rows and JPEGs that the Dagster asset shows in its metadata.
    """
    manifest = _read_manifest(layout)
    status_by_identity: dict[str, str] = manifest["status_by_identity"]
    status: dict[str, int] = {}
    for state in status_by_identity.values():
        status[state] = status.get(state, 0) + 1
    accepted_ids = {i for i, s in status_by_identity.items() if s == "accepted"}

    docs = store.vectors(DOCUMENT_TABLE, model_id=model_id)
    lives = store.vectors(LIVE_TABLE, model_id=model_id)
    all_documents = dict(zip(docs["identity_id"], docs["vector"], strict=True))
    doc_by_identity = {i: v for i, v in all_documents.items() if i in accepted_ids}
    live_by_identity: dict[str, list[np.ndarray]] = {}
    for identity, vector in zip(lives["identity_id"], lives["vector"], strict=True):
        if identity in accepted_ids:
            live_by_identity.setdefault(identity, []).append(vector)

    # Genuine pairs per identity: live vs its document (from the manifest), and live vs live within accepted ones.
    genuine_by_identity: dict[str, list[float]] = {}
    for identity, similarity in manifest["live_vs_doc"]:
        genuine_by_identity.setdefault(identity, []).append(similarity)
    live_vs_doc = np.array([s for _, s in manifest["live_vs_doc"]], dtype=np.float32)
    live_live = {identity: within_identity_scores(vectors) for identity, vectors in live_by_identity.items()}
    for identity, scores in live_live.items():
        genuine_by_identity.setdefault(identity, []).extend(scores.tolist())
    live_vs_live = np.concatenate([*live_live.values(), np.zeros(0, np.float32)]).astype(np.float32)
    impostor = impostor_scores(np.stack(list(doc_by_identity.values())) if doc_by_identity else np.zeros((0, 1)),
                               seed=seed)

    summary: dict[str, Any] = {
        "identities": len(status_by_identity),
        "status": status,
        "model_id": model_id,
        "threshold": threshold,
        "threshold_fmr": threshold_fmr,
        "genuine_live_vs_document": int(live_vs_doc.size),
        "genuine_live_vs_live": int(live_vs_live.size),
        "impostor_pairs": int(impostor.size),
        "rejected_leak": int(status.get("rejected_leak", 0)),
        "generation_failed": int(status.get("generation_failed", 0)),
    }
    genuine_all = np.concatenate([live_vs_doc, live_vs_live])
    if genuine_all.size and impostor.size:
        rate, at = eer(genuine_all, impostor)
        summary["eer"], summary["eer_threshold"] = rate, at
        for fmr, t in impostor_thresholds(impostor, DEFAULT_FMRS).items():
            # An FMR of f is only measurable with at least 1/f impostor pairs.
            enough = impostor.size * fmr >= 1.0
            summary[f"threshold_at_fmr_{fmr:g}"] = t if enough else float("nan")
            summary[f"fnmr_at_fmr_{fmr:g}"] = fnmr_at(genuine_all, t) if enough else float("nan")
    summary["fnmr_at_threshold"] = fnmr_at(genuine_all, threshold)

    # U_class over identity centres; C_intra: images within the threshold of their own centre.
    centres, intra_hits, intra_total = [], 0, 0
    for identity, doc in doc_by_identity.items():
        members = unit_rows(np.stack([doc, *live_by_identity.get(identity, [])]))
        centre = unit_rows(members.mean(axis=0)[None])[0]
        centres.append(centre)
        intra_hits += int((members @ centre > threshold).sum())
        intra_total += len(members)
    summary["u_class"] = u_class(np.stack(centres), threshold) if centres else float("nan")
    summary["c_intra"] = intra_hits / intra_total if intra_total else float("nan")

    det = det_curve(genuine_all, impostor, also_at=(threshold,))
    values_by_identity: dict[str, dict[str, str]] = {}
    for identity, attribute, value, _ in manifest["attributes"]:
        values_by_identity.setdefault(identity, {})[attribute] = value
    classes = demographic_classes(spec, {a for _, a, _, _ in manifest["attributes"]})
    demographics = demographic_rows(
        classes, values_by_identity, status_by_identity,
        {identity: bool(accepted) for identity, _, _, _, accepted, _ in manifest["decisions"]},
        {i: np.asarray(s, np.float32) for i, s in genuine_by_identity.items()},
        all_documents, threshold, threshold_fmr, seed,
    )
    paths = manifest["document_paths"]
    accepted_ids_sorted = sorted(doc_by_identity)
    gallery = {
        "accepted": accepted_gallery(
            most_similar_pairs(accepted_ids_sorted, np.stack([doc_by_identity[i] for i in accepted_ids_sorted])
                               if accepted_ids_sorted else np.zeros((0, 1)), GALLERY_PAIRS),
            threshold, paths),
        "rejected": rejected_gallery(manifest["decisions"], paths, GALLERY_PAIRS),
    }
    evaluations = latest_fr_evaluations(layout.home)
    summary["fr_evaluation"] = evaluations.note

    rows = {
        "attribute_balance": _attribute_balance([(a, v, s) for _, a, v, s in manifest["attributes"]], status, spec),
        "detection": [
            {"kind": k, "generator": g, "images": n, "failures": f, "failure_rate": f / n if n else 0.0}
            for k, g, n, f in manifest["detection"]
        ],
        "det": det,
        "demographics": demographics,
        "gallery": [p.row() for pairs in gallery.values() for p in pairs],
    }
    plots = {
        "scores": score_plot(
            {"genuine live-doc": live_vs_doc, "genuine live-live": live_vs_live, "impostor doc-doc": impostor},
            threshold,
        ),
        "det": det_png(det, threshold, int(genuine_all.size), int(impostor.size)),
    }
    if rows["attribute_balance"]:
        plots["attributes"] = attribute_plot(rows["attribute_balance"])
    if demographics:
        plots["demographics"] = demographics_png(demographics)
    layout.reports_dir.mkdir(parents=True, exist_ok=True)
    for name, data in plots.items():
        atomic_write_bytes(layout.reports_dir / f"quality_{name}.png", data)
    thumbnails = {kind: [(p, pair_jpeg(layout.home, p)) for p in pairs] for kind, pairs in gallery.items()}
    page = report_html(summary, plots, rows, thumbnails, evaluations.rows, evaluations.note)
    atomic_write_bytes(layout.reports_dir / "quality.html", page.encode("utf-8"))
    write_quality_duckdb(layout, summary, {"genuine_live_vs_document": live_vs_doc,
                                           "genuine_live_vs_live": live_vs_live, "impostor_document": impostor},
                         rows, evaluations.rows)
    return {
        **summary,
        "plots": {k: str(layout.reports_dir / f"quality_{k}.png") for k in plots},
        "html": str(layout.reports_dir / "quality.html"),
        "det": det,
        "demographics": demographics,
        "gallery": rows["gallery"],
        "contact_sheets": {kind: contact_sheet(layout.home, pairs) for kind, pairs in gallery.items()},
        "fr_evaluations": evaluations.rows,
    }


def _attribute_balance(
    attributes: list[tuple[str, str, str]], status: dict[str, int], spec: Any | None
) -> list[dict[str, Any]]:
    from synid_assets.core.spec.checks import spec_expectations

    expected = spec_expectations(spec) if spec is not None else {}
    total = sum(status.values())
    accepted = status.get("accepted", 0)
    counts: dict[tuple[str, str], list[int]] = {}
    for attribute, value, state in attributes:
        entry = counts.setdefault((attribute, value), [0, 0])
        entry[0] += 1
        entry[1] += state == "accepted"
    keys = set(counts) | {(a, v) for a, probs in expected.items() for v in probs if v != "<not used>"}
    rows = []
    for attribute, value in sorted(keys):
        sampled, kept = counts.get((attribute, value), [0, 0])
        rows.append({
            "attribute": attribute,
            "value": value,
            "expected": float(expected.get(attribute, {}).get(value, float("nan"))),
            "sampled_share": sampled / total if total else 0.0,
            "accepted_share": kept / accepted if accepted else 0.0,
            "sampled": sampled,
            "accepted": kept,
        })
    return rows
