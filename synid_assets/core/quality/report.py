"""The dataset quality report: score distributions, EER, U_class, C_intra, attribute balance, detection.

Reads the manifest (read-only) and the LanceDB embeddings, writes a static HTML report with its plots, and
its own DuckDB file (`quality.duckdb`; the manifest keeps its single writer). `synid query` attaches it as
the schema `quality`.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from synid_assets.core.dataset.layout import DatasetLayout, atomic_write_bytes
from synid_assets.core.dataset.manifest import check_manifest
from synid_assets.core.dataset.schemas import MANIFEST_IDENTITIES, MANIFEST_IDENTITY_ATTRIBUTES, MANIFEST_IMAGES
from synid_assets.core.dataset.vectorstore import DOCUMENT_TABLE, LIVE_TABLE, EmbeddingStore
from synid_assets.core.filtering.similarity import unit_rows
from synid_assets.core.quality.calibration import eer, impostor_thresholds

FMRS = (1e-3, 1e-4)
MAX_IMPOSTOR_PAIRS = 500_000  # sampled above this, with a recorded seed


def impostor_scores(vectors: np.ndarray, seed: int = 0, max_pairs: int = MAX_IMPOSTOR_PAIRS) -> np.ndarray:
    """Cosine scores of distinct-identity document pairs: all pairs, or a seeded sample of them."""
    n = len(vectors)
    if n < 2:
        return np.zeros(0, np.float32)
    unit = unit_rows(vectors)
    total = n * (n - 1) // 2
    if total <= max_pairs:
        rows, cols = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(seed)
        rows = rng.integers(0, n, size=max_pairs * 2)
        cols = rng.integers(0, n, size=max_pairs * 2)
        keep = rows != cols
        rows, cols = rows[keep][:max_pairs], cols[keep][:max_pairs]
    return np.einsum("ij,ij->i", unit[rows], unit[cols]).astype(np.float32)


def fnmr_at(genuine: np.ndarray, threshold: float) -> float:
    return float(np.mean(genuine <= threshold)) if genuine.size else float("nan")


def u_class(centres: np.ndarray, threshold: float, block: int = 4096) -> float:
    """Share of identity centres with no other centre above the threshold (DCFace's uniqueness)."""
    n = len(centres)
    if n == 0:
        return float("nan")
    unit = unit_rows(centres)
    unique = np.ones(n, dtype=bool)
    for start in range(0, n, block):
        sims = unit[start : start + block] @ unit.T
        np.fill_diagonal(sims[:, start : start + block], -1.0)
        unique[start : start + block] = sims.max(axis=1) <= threshold
    return float(unique.mean())


def _plot_png(draw) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.0), dpi=80)
    draw(ax)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _score_plot(scores: dict[str, np.ndarray], threshold: float) -> bytes:
    def draw(ax) -> None:
        for label, values in scores.items():
            if values.size:
                ax.hist(values, bins=60, density=True, histtype="step", label=f"{label} (n={values.size})")
        ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label=f"threshold {threshold:.3f}")
        ax.set_xlabel("cosine similarity")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)

    return _plot_png(draw)


def _attribute_plot(rows: list[dict[str, Any]]) -> bytes:
    classes = sorted({r["attribute"] for r in rows})

    def draw(ax) -> None:
        gaps = [
            max((abs(r["accepted_share"] - r["expected"]) for r in rows if r["attribute"] == c), default=0.0)
            for c in classes
        ]
        ax.barh(classes, gaps)
        ax.set_xlabel("largest |accepted share - spec probability|")
        ax.tick_params(labelsize=7)

    return _plot_png(draw)


def build_quality_report(
    layout: DatasetLayout,
    store: EmbeddingStore,
    model_id: str,
    threshold: float,
    threshold_fmr: float,
    spec: Any | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Compute every figure, write reports/quality.html, reports/*.png and quality.duckdb; return the summary."""
    import duckdb

    if not layout.manifest_path.exists():
        raise FileNotFoundError(f"{layout.manifest_path} does not exist; materialize dataset_manifest first")
    with duckdb.connect(str(layout.manifest_path), read_only=True) as con:
        # The tables read below, with every column schemas.py gives them (not a manifest of an older SynID).
        check_manifest(con, layout.manifest_path, (MANIFEST_IDENTITIES, MANIFEST_IMAGES, MANIFEST_IDENTITY_ATTRIBUTES))
        status = dict(con.execute("SELECT status, count(*) FROM identities GROUP BY 1").fetchall())
        live_vs_doc = np.array(
            [s for (s,) in con.execute("SELECT similarity_to_document FROM images WHERE kind = 'live' "
                                       "AND similarity_to_document IS NOT NULL").fetchall()], dtype=np.float32)
        detection = con.execute(
            "SELECT kind, generator, count(*), count(*) FILTER (WHERE NOT face_detected) "
            "FROM images GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        accepted_ids = {i for (i,) in con.execute("SELECT identity_id FROM identities WHERE status = 'accepted'")
                        .fetchall()}
        attributes = con.execute(
            "SELECT a.attribute, a.value, i.status FROM identity_attributes a JOIN identities i USING (identity_id)"
        ).fetchall()
        n_identities = con.execute("SELECT count(*) FROM identities").fetchone()[0]

    docs = store.vectors(DOCUMENT_TABLE, model_id=model_id)
    lives = store.vectors(LIVE_TABLE, model_id=model_id)
    doc_by_identity = {i: v for i, v in zip(docs["identity_id"], docs["vector"], strict=True) if i in accepted_ids}
    live_by_identity: dict[str, list[np.ndarray]] = {}
    for identity, vector in zip(lives["identity_id"], lives["vector"], strict=True):
        if identity in accepted_ids:
            live_by_identity.setdefault(identity, []).append(vector)

    # Genuine live-vs-live pairs within an identity.
    live_vs_live = []
    for vectors in live_by_identity.values():
        unit = unit_rows(np.stack(vectors))
        rows, cols = np.triu_indices(len(unit), k=1)
        live_vs_live.extend((unit[rows] * unit[cols]).sum(axis=1).tolist())
    live_vs_live_arr = np.asarray(live_vs_live, dtype=np.float32)
    impostor = impostor_scores(np.stack(list(doc_by_identity.values())) if doc_by_identity else np.zeros((0, 1)),
                               seed=seed)

    summary: dict[str, Any] = {
        "identities": n_identities,
        "status": status,
        "model_id": model_id,
        "threshold": threshold,
        "threshold_fmr": threshold_fmr,
        "genuine_live_vs_document": int(live_vs_doc.size),
        "genuine_live_vs_live": int(live_vs_live_arr.size),
        "impostor_pairs": int(impostor.size),
        "rejected_leak": int(status.get("rejected_leak", 0)),
    }
    genuine_all = np.concatenate([live_vs_doc, live_vs_live_arr])
    if genuine_all.size and impostor.size:
        rate, at = eer(genuine_all, impostor)
        summary["eer"], summary["eer_threshold"] = rate, at
        for fmr, t in impostor_thresholds(impostor, FMRS).items():
            # An FMR of f is only measurable with at least 1/f impostor pairs.
            enough = impostor.size * fmr >= 1.0
            summary[f"threshold_at_fmr_{fmr:g}"] = t if enough else float("nan")
            summary[f"fnmr_at_fmr_{fmr:g}"] = fnmr_at(genuine_all, t) if enough else float("nan")

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

    # Attribute balance: shares among all sampled and among accepted identities against the spec.
    attribute_rows = _attribute_balance(attributes, status, spec)
    detection_rows = [
        {"kind": k, "generator": g, "images": n, "failures": f, "failure_rate": f / n if n else 0.0}
        for k, g, n, f in detection
    ]

    plots = {
        "scores": _score_plot(
            {"genuine live-doc": live_vs_doc, "genuine live-live": live_vs_live_arr, "impostor doc-doc": impostor},
            threshold,
        ),
    }
    if attribute_rows:
        plots["attributes"] = _attribute_plot(attribute_rows)
    layout.reports_dir.mkdir(parents=True, exist_ok=True)
    for name, data in plots.items():
        atomic_write_bytes(layout.reports_dir / f"quality_{name}.png", data)
    atomic_write_bytes(
        layout.reports_dir / "quality.html",
        _html(summary, attribute_rows, detection_rows, plots).encode("utf-8"),
    )
    _write_duckdb(layout, summary, attribute_rows, detection_rows,
                  {"genuine_live_vs_document": live_vs_doc, "genuine_live_vs_live": live_vs_live_arr,
                   "impostor_document": impostor})
    summary["plots"] = {k: str(layout.reports_dir / f"quality_{k}.png") for k in plots}
    summary["html"] = str(layout.reports_dir / "quality.html")
    return summary


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


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in sorted(value.items()))
    return str(value)


def _html(summary: dict[str, Any], attributes: list[dict], detection: list[dict], plots: dict[str, bytes]) -> str:
    def table(rows: list[dict]) -> str:
        if not rows:
            return "<p>none</p>"
        head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row.values()) + "</tr>" for row in rows
        )
        return f"<table><tr>{head}</tr>{body}</table>"

    images = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        f"<figcaption>{name}</figcaption></figure>"
        for name, data in plots.items()
    )
    summary_rows = [{"metric": k, "value": v} for k, v in summary.items() if k not in ("plots", "html")]
    worst = sorted(attributes, key=lambda r: -abs(r["accepted_share"] - (r["expected"] or 0.0)))[:40]
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>SynID quality report</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}figure{display:inline-block}</style></head>"
        "<body><h1>SynID dataset quality report</h1>"
        f"<h2>Summary</h2>{table(summary_rows)}<h2>Plots</h2>{images}"
        f"<h2>Detection failures per generator</h2>{table(detection)}"
        "<h2>Attribute balance (largest gaps between accepted identities and the spec first)</h2>"
        f"{table(worst)}</body></html>"
    )


def _write_duckdb(
    layout: DatasetLayout,
    summary: dict[str, Any],
    attributes: list[dict],
    detection: list[dict],
    scores: dict[str, np.ndarray],
) -> None:
    """quality.duckdb, rebuilt into a temp file and renamed: this asset is its only writer."""
    import duckdb
    import pyarrow as pa

    fd, tmp_name = tempfile.mkstemp(dir=layout.home, prefix=".quality.", suffix=".duckdb")
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        con = duckdb.connect(str(tmp))
        try:
            metrics = pa.table({
                "metric": [k for k in summary if k not in ("plots", "html")],
                "value": [json.dumps(v) if isinstance(v, dict) else str(v)
                          for k, v in summary.items() if k not in ("plots", "html")],
            })
            con.register("metrics_src", metrics)
            con.execute("CREATE TABLE summary AS SELECT * FROM metrics_src")
            kinds, values = [], []
            for kind, array in scores.items():
                kinds += [kind] * int(array.size)
                values.append(np.asarray(array, dtype=np.float64))
            score_table = pa.table({
                "kind": pa.array(kinds, pa.string()),
                "score": pa.array(np.concatenate(values) if values else np.zeros(0), pa.float64()),
            })
            con.register("scores_src", score_table)
            con.execute("CREATE TABLE scores AS SELECT * FROM scores_src")
            for name, rows in (("attribute_balance", attributes), ("detection", detection)):
                if rows:
                    con.register(f"{name}_src", pa.Table.from_pylist(rows))
                    con.execute(f"CREATE TABLE {name} AS SELECT * FROM {name}_src")
        finally:
            con.close()
        os.replace(tmp, layout.home / "quality.duckdb")
    finally:
        tmp.unlink(missing_ok=True)
