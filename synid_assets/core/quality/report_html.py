"""The static HTML quality report: one self-contained page (plots as base64 PNG, thumbnails as base64 JPEG)."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from typing import Any

from synid_assets.core.quality.demographics import MAX_GROUP_IMPOSTOR_PAIRS, MIN_DECISIONS, MIN_GENUINE_PAIRS
from synid_assets.core.quality.galleries import GalleryPair

STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}figure{display:inline-block;margin:4px}"
    "figcaption{font-size:80%}tr.thin td{color:#888}"
)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in sorted(value.items()))
    return str(value)


def table(rows: Sequence[Mapping[str, Any]], thin_key: str | None = None) -> str:
    """An HTML table of dict rows; rows whose `thin_key` is false are greyed (kept, not hidden)."""
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join(
        ("<tr class='thin'>" if thin_key and not row[thin_key] else "<tr>")
        + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in row.values())
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _png(name: str, data: bytes) -> str:
    return (f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
            f"<figcaption>{html.escape(name)}</figcaption></figure>")


def _gallery(pairs: Sequence[tuple[GalleryPair, bytes]], empty: str) -> str:
    if not pairs:
        return f"<p>{html.escape(empty)}</p>"
    return "".join(
        f'<figure><img alt="{html.escape(p.identity_id)} and {html.escape(p.other_identity_id)}" '
        f'src="data:image/jpeg;base64,{base64.b64encode(jpeg).decode()}"><figcaption>'
        f"{html.escape(p.identity_id)} | {html.escape(p.other_identity_id)}<br>"
        f"similarity {p.similarity:.4f} (threshold {p.threshold:.4f})</figcaption></figure>"
        for p, jpeg in pairs
    )


def report_html(
    summary: Mapping[str, Any],
    plots: Mapping[str, bytes],
    rows: Mapping[str, list[dict[str, Any]]],
    gallery: Mapping[str, Sequence[tuple[GalleryPair, bytes]]],
    fr_evaluations: list[dict[str, Any]],
    fr_note: str,
) -> str:
    """The whole page. `rows`: attribute_balance, detection, demographics; `gallery`: accepted and rejected."""
    attributes = rows.get("attribute_balance", [])
    worst = sorted(attributes, key=lambda r: -abs(r["accepted_share"] - (r["expected"] or 0.0)))[:40]
    summary_rows = [{"metric": k, "value": v} for k, v in summary.items()]
    general = "".join(_png(name, plots[name]) for name in ("scores", "attributes") if name in plots)
    threshold = summary["threshold"]
    det = _png("det", plots["det"]) if "det" in plots else "<p>no genuine or no impostor scores</p>"
    demographics = _png("demographics", plots["demographics"]) if "demographics" in plots else ""
    evaluations = (f"<p>{html.escape(fr_note)}</p>" + table(fr_evaluations)) if fr_evaluations \
        else f"<p>{html.escape(fr_note)}</p>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>SynID quality report</title>"
        f"<style>{STYLE}</style></head><body><h1>SynID dataset quality report</h1>"
        f"<h2>Summary</h2>{table(summary_rows)}<h2>Plots</h2>{general}"
        "<h2>DET curve</h2><p>FNMR (genuine live-document and live-live pairs at or below the threshold) against "
        "FMR (impostor pairs of accepted documents above it), log axes; the dot is the operating threshold "
        f"{threshold:.4f}. A rate of zero is drawn at half of one pair. In strict filter mode no accepted pair lies "
        f"above the threshold, so the impostor side ends there.</p>{det}"
        "<h2>Demographic groups</h2><p>One row per value of each demographic class of the spec. Genuine pairs: "
        "the group's live-document and live-live pairs. Impostor pairs: document pairs of two distinct identities "
        "of the same group, over every embedded document (before the filter: the generator's FMR) and over "
        f"accepted identities only (the dataset's FMR); all pairs, or a seeded sample of "
        f"{MAX_GROUP_IMPOSTOR_PAIRS} above that. FMR and FNMR at the global threshold {threshold:.4f}. Grey rows "
        f"are too thin to compare (fewer than {MIN_GENUINE_PAIRS} genuine pairs, {MIN_DECISIONS} filter decisions,"
        f" or 1/FMR impostor pairs); the note says which.</p>{demographics}"
        f"{table(rows.get('demographics', []), thin_key='sufficient')}"
        "<h2>Most similar accepted pairs</h2>"
        f"{_gallery(gallery.get('accepted', ()), 'fewer than two accepted identities')}"
        "<h2>Rejected identities nearest the threshold</h2><p>Left: the rejected identity; right: the accepted "
        "identity it matched.</p>"
        f"{_gallery(gallery.get('rejected', ()), 'no identity was rejected for similarity')}"
        f"<h2>Face recognition evaluation</h2>{evaluations}"
        f"<h2>Detection failures per generator</h2>{table(rows.get('detection', []))}"
        "<h2>Attribute balance (largest gaps between accepted identities and the spec first)</h2>"
        f"{table(worst)}</body></html>"
    )
