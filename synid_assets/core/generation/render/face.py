"""Facial features of the procedural renderer, painted onto the head's albedo in its texture coordinates
(lx, ly: head units on the frontal ellipsoid), one step per feature: relief, nose, eyes, brows, mouth,
age lines, skin marks, facial hair and glasses. The steps run in this order: later ones paint over earlier.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from synid_assets.core.generation.render.beard import paint_beard
from synid_assets.core.generation.render.identity import Identity
from synid_assets.core.generation.render.palettes import Color
from synid_assets.core.generation.render.raster import coverage, ellipse_field, gauss, paint, smoothstep


class _MouthLine(NamedTuple):
    """Where the mouth was painted: what the age lines and the beard are placed around."""

    line_y: np.ndarray  # lip seam height per column
    lo_top: np.ndarray  # top of the lower lip (the seam plus the opening)
    width: float  # half-width of the mouth with the expression applied
    centre_y: float  # the mouth's rest height


def paint_face_features(alb: np.ndarray, ident: Identity, lx: np.ndarray, ly: np.ndarray, ex: dict[str, float],
                        gaze: float) -> None:
    """Paints the facial features onto the head albedo in texture coordinates."""
    dark = ident.skin * 0.55
    _paint_relief(alb, ident, lx, ly, ex, dark)
    _paint_nose(alb, ident, lx, ly, dark)
    for side in (-1.0, 1.0):
        _paint_eye(alb, ident, lx, ly, side, float(ex["eye_open"]), gaze, dark)
        _paint_brow(alb, ident, lx, ly, side, ex["brow"], ex["frown"])
    mouth = _paint_mouth(alb, ident, lx, ly, ex, dark)
    _paint_age_lines(alb, ident, lx, ly, ex["brow"], mouth, dark)
    _paint_skin_marks(alb, ident, lx, ly)
    if ident.beard:
        paint_beard(alb, ident, lx, ly, ident.beard, line_y=mouth.line_y, lo_top=mouth.lo_top, mw=mouth.width)
    if ident.glasses:
        _paint_glasses(alb, ident, lx, ly)


def _paint_relief(alb: np.ndarray, ident: Identity, lx: np.ndarray, ly: np.ndarray, ex: dict[str, float],
                  dark: Color) -> None:
    """Soft 3D cues: eye sockets, cheekbones, under-nose and under-lip shadows, chin."""
    smile, mopen = ex["smile"], ex["open"]
    for side in (-1.0, 1.0):
        sock = gauss(lx, ly, side * ident.eye_dx, ident.eye_y - 0.03, ident.eye_w * 1.5, 0.15)
        paint(alb, 0.5 * sock, dark)
        cheek = gauss(lx, ly, side * (ident.eye_dx + 0.05), ident.eye_y + 0.42 - 0.05 * smile, 0.2, 0.13)
        paint(alb, (0.25 + 0.25 * smile) * cheek, ident.cheek_color)
    paint(alb, 0.3 * gauss(lx, ly, 0.0, ident.mouth_y + ident.lip_lo + 0.09 + 0.1 * mopen, 0.18, 0.05), dark)


def _paint_nose(alb: np.ndarray, ident: Identity, lx: np.ndarray, ly: np.ndarray, dark: Color) -> None:
    """Nose: bridge side shading, tip, nostrils, shadow below."""
    skin = ident.skin
    tip_y = ident.nose_tip
    nw = ident.nose_w
    yy = np.clip((ly - ident.eye_y) / (tip_y - ident.eye_y), 0.0, 1.0)
    for side in (-1.0, 1.0):
        xline = side * (ident.nose_bridge + (nw * 0.55 - ident.nose_bridge) * yy**2)
        along = smoothstep(ident.eye_y + 0.1, tip_y - 0.05, ly) * smoothstep(tip_y + 0.06, tip_y - 0.05, ly)
        band = np.exp(-(((lx - xline) / 0.05) ** 2)) * along
        paint(alb, 0.5 * band, dark)
        wing = gauss(lx, ly, side * nw * 0.8, tip_y - 0.01, nw * 0.35, 0.06)
        paint(alb, 0.4 * wing, dark)
        nostril = ellipse_field(lx, ly, side * nw * 0.42, tip_y + 0.03 - 0.02 * ident.nose_up, nw * 0.26, 0.028)
        paint(alb, 0.85 * coverage(nostril), skin * 0.25)
    # Bridge ridge: a lit strip down the middle, the nose's main vertical edge pair with the side shading.
    ridge = np.exp(-((lx / (ident.nose_bridge * 0.8)) ** 2))
    ridge = ridge * smoothstep(ident.eye_y + 0.05, ident.eye_y + 0.2, ly) * smoothstep(tip_y + 0.02, tip_y - 0.08, ly)
    paint(alb, 0.3 * ridge, np.minimum(skin * 1.3, 1.0))
    tip = gauss(lx, ly, 0.0, tip_y - 0.05 + 0.03 * ident.nose_hook, nw * 0.45, 0.07)
    paint(alb, 0.3 * tip, np.minimum(skin * 1.2, 1.0))
    paint(alb, 0.55 * gauss(lx, ly, 0.0, tip_y + 0.08, nw * 0.9, 0.04), dark)


def _paint_eye(alb: np.ndarray, ident: Identity, lx: np.ndarray, ly: np.ndarray, side: float, openness: float,
               gaze: float, dark: Color) -> None:
    """One eye (side -1: image left): white, iris, pupil, glint, lash line and lid crease."""
    cxe = side * ident.eye_dx
    tilt = ident.eye_tilt * side
    dxe = lx - cxe
    dye = (ly - ident.eye_y) - np.tan(tilt) * dxe * side * side
    eh = ident.eye_h * openness
    # Almond: upper lid arcs higher than the lower lid.
    t = np.clip(1 - (dxe / ident.eye_w) ** 2, 0, 1)
    upper = -eh * 1.15 * np.sqrt(t) ** 1.2
    lower = eh * 0.75 * t
    eye_f = np.minimum(dye - upper, lower - dye)
    eye_f = np.minimum(eye_f, (ident.eye_w - np.abs(dxe)) * 0.3)
    cov = coverage(eye_f) if eh > 0.004 else np.zeros_like(lx)
    white = np.array([0.93, 0.92, 0.9]) * 0.95
    paint(alb, cov, white)
    ir = ident.eye_h * 0.95
    iris = ellipse_field(lx, ly, cxe + gaze * 0.03, ident.eye_y - eh * 0.1, ir, ir)
    paint(alb, cov * coverage(iris), ident.eye_color)
    pupil = ellipse_field(lx, ly, cxe + gaze * 0.03, ident.eye_y - eh * 0.1, ir * 0.45, ir * 0.45)
    paint(alb, cov * coverage(pupil), np.array([0.03, 0.02, 0.02]))
    glint = gauss(lx, ly, cxe + 0.02, ident.eye_y - eh * 0.4, 0.015, 0.015)
    paint(alb, cov * glint * 0.8, np.array([1.0, 1.0, 1.0]))
    # Lid line (lashes) along the upper lid: always present, even with closed eyes.
    lid_y = np.minimum(upper, -0.004) if eh > 0.004 else lower * 0.0
    lid = np.exp(-(((dye - lid_y) / 0.016) ** 2)) * smoothstep(ident.eye_w * 1.05, ident.eye_w * 0.6,
                                                                    np.abs(dxe))
    paint(alb, 0.85 * lid, np.array([0.06, 0.04, 0.04]))
    crease = np.exp(-(((dye + ident.eye_h * 1.9) / 0.025) ** 2)) * np.clip(t, 0, 1)
    paint(alb, 0.25 * crease, dark)


def _paint_brow(alb: np.ndarray, ident: Identity, lx: np.ndarray, ly: np.ndarray, side: float, brow_up: float,
                frown: float) -> None:
    """One brow, raised and arched by brow_up, its inner end lowered by a frown."""
    by0 = ident.eye_y - ident.brow_gap - 0.08 * brow_up
    bdx = lx - side * (ident.eye_dx + 0.02)
    bt = np.clip(bdx * side / ident.brow_len, -1.0, 1.0)
    arch = ident.brow_arch + 0.02 * brow_up
    by = by0 - arch * (1 - bt**2) + ident.brow_slope * bt + 0.04 * frown * (1 - bt) / 2
    thick = ident.brow_thick * (1.1 - 0.35 * (bt + 1) / 2)
    brow_f = np.minimum(thick - np.abs(ly - by), (ident.brow_len * 1.05 - np.abs(bdx)) * 0.5)
    paint(alb, 0.92 * coverage(brow_f), ident.brow_color)


def _paint_mouth(alb: np.ndarray, ident: Identity, lx: np.ndarray, ly: np.ndarray, ex: dict[str, float],
                 dark: Color) -> _MouthLine:
    """Lips shaped by smile and frown, the opening with teeth, the seam and the corners."""
    smile, mopen, frown = ex["smile"], ex["open"], ex["frown"]
    mw = ident.mouth_w * (1 + 0.15 * smile - 0.05 * frown)
    my = ident.mouth_y
    xm = np.clip(lx / mw, -1.3, 1.3)
    curve = (ident.lip_curve + 0.09 * smile - 0.05 * frown) * xm**2 + ident.lip_asym * xm
    line_y = my - curve
    open_h = 0.16 * mopen
    t = np.clip(1 - xm**2, 0, 1)
    up_f = np.minimum(line_y - ly, ly - (line_y - ident.lip_up * (0.4 + 0.6 * t) - open_h * 0.3 * t))
    up_f = np.minimum(up_f, (1 - np.abs(xm)) * mw * 0.3)
    lo_top = line_y + open_h * t
    lo_f = np.minimum(ly - lo_top, lo_top + ident.lip_lo * (0.3 + 0.7 * t**0.7) - ly)
    lo_f = np.minimum(lo_f, (1 - np.abs(xm)) * mw * 0.3)
    paint(alb, coverage(up_f), ident.lip_color * 0.85)
    paint(alb, coverage(lo_f), ident.lip_color)
    paint(alb, 0.25 * gauss(lx, ly, 0.0, lo_top + ident.lip_lo * 0.35, mw * 0.4, 0.02), np.minimum(
        ident.lip_color * 1.4, 1.0))
    if open_h > 0.005:
        inner = np.minimum(np.minimum(ly - line_y, lo_top - ly), (1 - np.abs(xm)) * mw * 0.3)
        paint(alb, coverage(inner), np.array([0.16, 0.05, 0.05]))
        if ex["teeth"] > 0:
            teeth = np.minimum(np.minimum(ly - line_y, line_y + open_h * 0.45 - ly), (0.75 - np.abs(xm)) * mw * 0.3)
            paint(alb, coverage(teeth), np.array([0.9, 0.88, 0.82]))
    seam = np.exp(-(((ly - line_y) / 0.012) ** 2)) * smoothstep(1.15, 0.85, np.abs(xm))
    paint(alb, 0.7 * seam, np.array([0.2, 0.07, 0.07]))
    for side in (-1.0, 1.0):  # mouth corners
        paint(alb, 0.4 * gauss(lx, ly, side * mw * 1.02, line_y + 0.005, 0.03, 0.025), dark)
    return _MouthLine(line_y=line_y, lo_top=lo_top, width=mw, centre_y=my)


def _paint_age_lines(alb: np.ndarray, ident: Identity, lx: np.ndarray, ly: np.ndarray, brow_up: float,
                     mouth: _MouthLine, dark: Color) -> None:
    """Age: forehead lines, nasolabial folds, crow's feet."""
    tip_y, nw, mw, my = ident.nose_tip, ident.nose_w, mouth.width, mouth.centre_y
    w = min(ident.wrinkles, 1.2)
    if w > 0.05:
        for k in range(3):
            fy = ident.eye_y - ident.brow_gap - 0.17 - 0.08 * k - 0.04 * brow_up
            line = np.exp(-(((ly - fy - 0.03 * (lx / 0.5) ** 2) / 0.01) ** 2)) * smoothstep(0.5, 0.2, np.abs(lx))
            paint(alb, 0.35 * w * line, dark)
        for side in (-1.0, 1.0):
            yy = np.clip((ly - tip_y) / (my - tip_y + 0.05), 0, 1)
            fx = side * (nw * 0.9 + (mw * 1.05 - nw * 0.9) * yy)
            fold = np.exp(-(((lx - fx) / 0.018) ** 2)) * smoothstep(tip_y - 0.05, tip_y + 0.05, ly) * \
                smoothstep(my + 0.12, my, ly)
            paint(alb, 0.5 * w * fold, dark)
            crow = gauss(lx, ly, side * (ident.eye_dx + ident.eye_w + 0.06), ident.eye_y, 0.05, 0.06)
            paint(alb, 0.3 * w * crow * (0.5 + 0.5 * np.sin(ly * 90) ** 2), dark)


def _paint_skin_marks(alb: np.ndarray, ident: Identity, lx: np.ndarray, ly: np.ndarray) -> None:
    """Freckles, a mole, a birthmark, a scar, or rough skin, placed by the identity's drawn marks."""
    skin = ident.skin
    kind = ident.skin_type
    m = ident.marks
    if kind == "Freckled":
        for i in range(30):
            fx = (m[i, 0] - 0.5) * 1.2
            fy = ident.nose_tip - 0.25 + m[i, 1] * 0.3
            paint(alb, 0.45 * gauss(lx, ly, fx, fy, 0.018, 0.018), skin * 0.6 * np.array([1.0, 0.85, 0.7]))
    elif kind == "Mole":
        fx, fy = (m[0, 0] - 0.5) * 1.2, 0.1 + m[0, 1] * 0.6
        paint(alb, coverage(ellipse_field(lx, ly, fx, fy, 0.03, 0.03)), skin * 0.3)
    elif kind == "Birthmark":
        fx, fy = (m[0, 0] - 0.5) * 1.2, -0.4 + m[0, 1] * 1.0
        paint(alb, 0.5 * gauss(lx, ly, fx, fy, 0.12, 0.09), np.array([0.6, 0.25, 0.25]))
    elif kind == "Scarred":
        fx, fy = (m[0, 0] - 0.5) * 1.0, -0.3 + m[0, 1] * 0.8
        ang = m[0, 2] * np.pi
        d = (lx - fx) * math.sin(ang) - (ly - fy) * math.cos(ang)
        along = (lx - fx) * math.cos(ang) + (ly - fy) * math.sin(ang)
        scar = np.exp(-((d / 0.012) ** 2)) * smoothstep(0.2, 0.12, np.abs(along))
        paint(alb, 0.6 * scar, np.minimum(skin * np.array([1.1, 0.85, 0.85]), 1.0))
    elif kind in ("Rough", "Dry"):
        rough = np.sin(lx * 61 + m[1, 0] * 6) * np.sin(ly * 57 + m[1, 1] * 6)
        alb *= (1 + 0.035 * rough)[..., None]


def _paint_glasses(alb: np.ndarray, ident: Identity, lx: np.ndarray, ly: np.ndarray) -> None:
    """Glasses, painted on the face surface: they sit close to it."""
    gw, gh = ident.eye_w * 1.45, ident.eye_h * 2.6 + 0.03
    p = 2.5 + 3.0 * ident.glasses_shape
    for side in (-1.0, 1.0):
        cxg = side * (ident.eye_dx + 0.01)
        d = ((np.abs(lx - cxg) / gw) ** p + (np.abs(ly - ident.eye_y - 0.01) / gh) ** p) ** (1 / p)
        ring = 0.013 - np.abs(d - 1.0) * gh  # thin frames: the eyes and brows must stay readable
        paint(alb, 0.85 * coverage(ring), ident.glasses_color)
        temple = np.minimum(0.012 - np.abs(ly - ident.eye_y + 0.05), side * (lx - cxg) - gw * 0.98)
        paint(alb, 0.9 * coverage(temple), ident.glasses_color)
    bridge = np.minimum(0.011 - np.abs(ly - ident.eye_y + 0.04), ident.eye_dx - gw * 0.95 - np.abs(lx))
    paint(alb, 0.95 * coverage(bridge), ident.glasses_color)
