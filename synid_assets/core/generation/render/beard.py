"""Facial hair of the procedural renderer, painted on the head albedo around where the mouth was painted."""

from __future__ import annotations

import numpy as np

from synid_assets.core.generation.render.identity import Identity
from synid_assets.core.generation.render.raster import coverage, ellipse_field, paint, smoothstep


def paint_beard(alb: np.ndarray, ident: Identity, lx: np.ndarray, ly: np.ndarray, b: dict[str, float],
                line_y: np.ndarray, lo_top: np.ndarray, mw: float) -> None:
    """The beard style's components b (see BEARD_STYLES) around the lips: seam line_y, lower lip top lo_top,
    mouth half-width mw."""
    if b.get("stubble"):
        _paint_stubble(alb, ident, lx, ly, b["stubble"])
        return
    tex = 0.85 + 0.15 * np.sin(lx * 70 + ident.hair_phase[5]) * np.sin(ly * 75 + ident.hair_phase[6])
    hc = ident.beard_color * tex[..., None]
    if b.get("jaw") or b.get("cheeks"):
        _paint_jaw_and_cheeks(alb, ident, lx, ly, b, hc, line_y, lo_top, mw)
    if b.get("chin"):
        cw = mw * (0.75 if b.get("narrow") else 1.1)
        chin = np.minimum(cw - np.abs(lx), ly - (lo_top + ident.lip_lo * 0.8))
        chin = np.minimum(chin, ident.ry + b.get("length", 0.0) - ly)
        paint(alb, b["chin"] * coverage(chin), hc)
    if b.get("mustache"):
        _paint_mustache(alb, ident, lx, ly, b, hc, line_y, lo_top, mw)
    if b.get("soul"):
        sp = ellipse_field(lx, ly, 0.0, lo_top + ident.lip_lo + 0.05, 0.05, 0.035)
        paint(alb, 0.9 * coverage(sp), hc)


def _paint_stubble(alb: np.ndarray, ident: Identity, lx: np.ndarray, ly: np.ndarray, density: float) -> None:
    """A fine grain over the lower face."""
    region = smoothstep(ident.nose_tip + 0.1, ident.nose_tip + 0.25, ly) * smoothstep(
        ident.eye_y + 0.25, ident.eye_y + 0.4, ly
    )
    grain = 0.5 + 0.5 * np.sin(lx * 140 + ident.hair_phase[7]) * np.sin(ly * 150)
    paint(alb, 0.35 * density * region * grain, ident.beard_color)


def _paint_jaw_and_cheeks(alb: np.ndarray, ident: Identity, lx: np.ndarray, ly: np.ndarray, b: dict[str, float],
                          hc: np.ndarray, line_y: np.ndarray, lo_top: np.ndarray, mw: float) -> None:
    """Beard along the jaw and up the cheeks, leaving the lips bare."""
    lip_hole = np.minimum(np.minimum(ly - (line_y - ident.lip_up - 0.01), lo_top + ident.lip_lo + 0.01 - ly),
                          mw * 1.05 - np.abs(lx))
    keep_lips = 1.0 - np.clip(lip_hole * 40, 0, 1)
    # The beard's upper edge runs from the sideburn down the cheek to just below the mouth corners,
    # so the cheeks above it stay skin and the jaw outline still reads.
    edge_t = smoothstep(mw * 0.9, ident.rx * 0.85, np.abs(lx))
    center_top = line_y + 0.03
    cheek_top = ident.ear_y + 0.12 - 0.12 * b.get("cheeks", 0.0)
    top = center_top + (cheek_top - center_top) * edge_t
    region = 0.85 * smoothstep(top, top + 0.1, ly)
    if b.get("nochin"):
        region = region * smoothstep(mw * 0.9, mw * 1.4, np.abs(lx))
    dens = max(b.get("jaw", 0.0), b.get("cheeks", 0.0))
    paint(alb, dens * region * keep_lips, hc)


def _paint_mustache(alb: np.ndarray, ident: Identity, lx: np.ndarray, ly: np.ndarray, b: dict[str, float],
                    hc: np.ndarray, line_y: np.ndarray, lo_top: np.ndarray, mw: float) -> None:
    """Mustache above the upper lip (thin, thick or curled), with the bars of a horseshoe or circle beard."""
    thick = 0.05 if b.get("thin") else (0.1 if b.get("thick") else 0.075)
    mw2 = mw * (1.05 + 0.3 * b.get("curl", 0.0))
    xm = np.clip(lx / mw2, -1.2, 1.2)
    base = line_y - ident.lip_up - 0.005 + 0.04 * xm**2 * (1 - 2 * b.get("curl", 0.0))
    must = np.minimum(np.minimum(base - ly + 0.01, ly - (base - thick)), (mw2 - np.abs(lx)) * 0.5)
    paint(alb, b["mustache"] * coverage(must), hc)
    if b.get("horseshoe") or b.get("ring"):
        for side in (-1.0, 1.0):
            bar = np.minimum(0.04 - np.abs(lx - side * mw * 1.05), (lo_top + 0.18) - ly)
            bar = np.minimum(bar, ly - base + thick)
            paint(alb, b["mustache"] * coverage(bar), hc)
