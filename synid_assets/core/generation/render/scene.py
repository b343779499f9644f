"""One render of an identity: the scene (pose, expression, lighting, background, camera noise) and the
painting steps that compose it back to front.

The head is a textured ellipsoid seen under orthographic projection. Every pixel's ray is intersected
with the (yawed, pitched) ellipsoid; facial features are painted in the ellipsoid's own frontal
"texture" coordinates, so pose foreshortens them consistently, and the surface normal drives lighting.
A second, larger ellipsoid carries the hair volume. Neck, shoulders, ears, long hair and headwear are
simple screen-space shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from synid_assets.core.generation.render.face import paint_face_features
from synid_assets.core.generation.render.identity import Identity
from synid_assets.core.generation.render.raster import (
    Surface,
    coverage,
    ellipse_field,
    gauss,
    paint,
    project,
    ray_cast_ellipsoid,
    rotation,
    smoothstep,
)

EXPRESSIONS = ("neutral", "smile", "open_smile", "open_mouth", "raised_brows", "eyes_closed", "frown", "surprise")
BACKGROUNDS = ("plain", "gradient", "blobs")


@dataclass
class Scene:
    """Capture conditions of one image; the defaults are a frontal, neutral, evenly lit portrait."""

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    scale: float = 0.175  # head half-width as a share of the image size
    cx: float = 0.5
    cy: float = 0.46
    light_az: float = 0.0
    light_el: float = 20.0
    light_strength: float = 0.45
    ambient: float = 0.62
    expression: str = "neutral"
    strength: float = 0.0
    background: str = "plain"
    bg_colors: tuple = ()
    bg_angle: float = 0.0
    bg_blobs: tuple = ()
    blur_sigma: float = 0.0
    noise_sigma: float = 0.0
    noise_seed: int = 0
    gaze: float = 0.0


def expression_deltas(expr: str, s: float) -> dict[str, float]:
    """How an expression of strength s moves the face: smile, mouth opening, brows, eye opening, frown, teeth."""
    d = {"smile": 0.0, "open": 0.0, "brow": 0.0, "eye_open": 1.0, "frown": 0.0, "teeth": 0.0}
    if expr == "smile":
        d.update(smile=s, eye_open=1 - 0.25 * s)
    elif expr == "open_smile":
        d.update(smile=s, open=0.6 * s, teeth=1.0, eye_open=1 - 0.3 * s)
    elif expr == "open_mouth":
        d.update(open=s)
    elif expr == "raised_brows":
        d.update(brow=s, eye_open=1 + 0.2 * s)
    elif expr == "eyes_closed":
        d.update(eye_open=max(0.0, 1 - s) * 0.3)
    elif expr == "frown":
        d.update(frown=s, brow=-0.6 * s, eye_open=1 - 0.15 * s)
    elif expr == "surprise":
        d.update(brow=s, open=0.8 * s, eye_open=1 + 0.25 * s)
    return d


@dataclass
class _Frame:
    """Per-pixel coordinates of one render."""

    size: int
    gx: np.ndarray  # image coordinates in [0, 1]
    gy: np.ndarray
    wx0: np.ndarray  # head-centred coordinates in head units, as on screen (body and drapes)
    wy0: np.ndarray
    wx: np.ndarray  # the same with the head's roll undone
    wy: np.ndarray
    cos_roll: float
    sin_roll: float
    pivot: float  # height of the roll pivot (the neck) in head units


def _frame(ident: Identity, sc: Scene, size: int) -> _Frame:
    s = int(size)
    px = np.arange(s, dtype=np.float64) + 0.5
    gx, gy = np.meshgrid((px / s).astype(np.float32), (px / s).astype(np.float32))  # image coords in [0, 1]
    unit = sc.scale  # one head unit in image fractions
    # Head-centred world coordinates in head units, with roll undone.
    wx0 = (gx - sc.cx) / unit
    wy0 = (gy - sc.cy) / unit
    cr, sr = math.cos(math.radians(sc.roll)), math.sin(math.radians(sc.roll))
    # Roll pivots at the neck so the head tilts over the shoulders.
    piv = ident.ry * 0.9
    wx = cr * wx0 + sr * (wy0 - piv)
    wy = -sr * wx0 + cr * (wy0 - piv) + piv
    return _Frame(size=s, gx=gx, gy=gy, wx0=wx0, wy0=wy0, wx=wx, wy=wy, cos_roll=cr, sin_roll=sr, pivot=piv)


@dataclass
class _Lighting:
    """One directional light plus ambient light."""

    direction: np.ndarray
    ambient: float
    strength: float

    @classmethod
    def of(cls, sc: Scene) -> _Lighting:
        direction = np.array(
            [
                math.sin(math.radians(sc.light_az)) * math.cos(math.radians(sc.light_el)),
                -math.sin(math.radians(sc.light_el)),
                math.cos(math.radians(sc.light_az)) * math.cos(math.radians(sc.light_el)),
            ]
        )
        return cls(direction=direction, ambient=sc.ambient, strength=sc.light_strength)

    def lambert(self, nw: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        d = self.direction
        return np.maximum(nw[0] * d[0] + nw[1] * d[1] + nw[2] * d[2], 0.0)

    def shade(self, nw: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        return self.ambient + self.strength * self.lambert(nw)


def render_scene(ident: Identity, sc: Scene, size: int) -> Image.Image:
    """The identity under the scene's conditions, painted back to front."""
    fr = _frame(ident, sc, size)
    rot = rotation(math.radians(sc.yaw), math.radians(sc.pitch)).astype(np.float32)
    ex = expression_deltas(sc.expression, sc.strength)
    lighting = _Lighting.of(sc)

    img = np.empty((fr.size, fr.size, 3), dtype=np.float32)
    _paint_background(img, sc, fr.gx, fr.gy)
    hair_tex_base = np.sin(fr.wx * ident.hair_freq + ident.hair_phase[0]) * np.sin(
        fr.wy * ident.hair_freq * 0.5 + ident.hair_phase[1]
    )
    yaw_shift = math.sin(math.radians(sc.yaw)) * 0.2
    _paint_drape_or_long_hair(img, ident, fr, yaw_shift)
    _paint_shoulders_and_neck(img, ident, fr, yaw_shift)

    # Everything from here to the turban lies in a box around the head: work on that crop only.
    box = _head_box(ident, sc, fr)
    crop, wx, wy = img[box], fr.wx[box], fr.wy[box]
    _paint_ears(crop, ident, rot, wx, wy)
    _paint_hair_shell(crop, ident, rot, wx, wy, lighting)
    _paint_head(crop, ident, sc, rot, wx, wy, ex, lighting, hair_tex_base[box])
    _paint_turban_crown(crop, ident, rot, wx, wy)
    return _finish(img, sc)


def _paint_background(img: np.ndarray, sc: Scene, gx: np.ndarray, gy: np.ndarray) -> None:
    c0 = np.array(sc.bg_colors[0], dtype=np.float64)
    img[:] = c0
    if sc.background == "gradient" and len(sc.bg_colors) > 1:
        ang = math.radians(sc.bg_angle)
        t = np.clip((gx - 0.5) * math.cos(ang) + (gy - 0.5) * math.sin(ang) + 0.5, 0, 1)
        paint(img, t, np.array(sc.bg_colors[1], dtype=np.float64))
    elif sc.background == "blobs":
        for bx, by, br, r, g, b in sc.bg_blobs:
            paint(img, 0.8 * np.exp(-((gx - bx) ** 2 + (gy - by) ** 2) / (br * br)), np.array([r, g, b]))


def _covered(ident: Identity) -> bool:
    """Headwear that hides the hair and ears."""
    return ident.headwear in ("Hijab", "Turban")


def _paint_drape_or_long_hair(img: np.ndarray, ident: Identity, fr: _Frame, yaw_shift: float) -> None:
    """Long hair / hijab drape behind the neck (screen space)."""
    wx0, wy0, wx, wy = fr.wx0, fr.wy0, fr.wx, fr.wy
    if ident.headwear == "Hijab":
        drape = np.minimum(
            ellipse_field(wx0, wy0, yaw_shift, 0.2, ident.rx * 1.35, ident.ry * 1.35),
            (ident.ry * 2.6 - wy0) * 0.5,
        )
        drape = np.maximum(drape, ellipse_field(wx0, wy0, 0.0, ident.ry * 1.7, ident.rx * 1.6, 0.9))
        cloth = ident.cloth_color * (0.85 + 0.1 * np.sin(wx0 * 6 + wy0 * 3))[..., None]
        paint(img, coverage(drape), cloth)
    elif ident.hair_len > 0 and not _covered(ident):
        top = -0.2
        bottom = ident.ry + ident.hair_len
        hw = ident.rx * (1.12 + ident.hair_volume)
        back = np.minimum(
            np.minimum(hw - np.abs(wx - yaw_shift * 0.5), bottom - wy), wy - top + 2.0
        )
        back = np.minimum(back, ellipse_field(wx, wy, yaw_shift * 0.5, (top + bottom) / 2, hw * 1.05,
                                              (bottom - top) / 2 + 0.6, 4.0))
        tex = 0.82 + 0.12 * np.sin(wx * ident.hair_freq * 1.3 + ident.hair_phase[2] + 0.8 * np.sin(wy * 5))
        paint(img, coverage(back), ident.hair * tex[..., None] * 0.8)


def _paint_shoulders_and_neck(img: np.ndarray, ident: Identity, fr: _Frame, yaw_shift: float) -> None:
    """Shoulders (screen space, not rolled with the head) and the neck joining them to the head."""
    wx0, wy0, wx, wy = fr.wx0, fr.wy0, fr.wx, fr.wy
    sh = ellipse_field(wx0, wy0, 0.0, ident.ry * 1.75 + 1.0, ident.shoulder_w, 1.1, 2.4)
    shirt = ident.shirt_color * (0.75 + 0.25 * smoothstep(ident.ry * 3.2, ident.ry * 1.9, wy0))[..., None]
    paint(img, coverage(sh), shirt)
    neck_x = wx - yaw_shift * 0.3
    neck = np.minimum(ident.neck_w * (1 + 0.3 * smoothstep(ident.ry * 1.55, ident.ry * 1.95, wy0)) - np.abs(neck_x),
                      ident.ry * 2.3 - wy0)
    neck = np.minimum(neck, wy + 0.3)
    neck_shade = 0.52 + 0.4 * smoothstep(ident.ry * 0.9, ident.ry * 1.5, wy) - 0.15 * (
        np.abs(neck_x) / ident.neck_w
    ) ** 2
    neck_color = ident.skin * neck_shade[..., None]
    if ident.headwear == "Hijab":
        neck_color = ident.cloth_color * (neck_shade[..., None] * 0.3 + 0.65)
    paint(img, coverage(neck), neck_color)


def _head_box(ident: Identity, sc: Scene, fr: _Frame) -> tuple[slice, slice]:
    """The pixel box that holds the head, its hair and headwear."""
    s, unit, piv = fr.size, sc.scale, fr.pivot
    extra = 0.5 if ident.headwear == "Turban" or ident.hair_style == "Bun" else 0.0
    reach = (max(ident.rx * (1.05 + ident.hair_volume) + ident.ear_w, ident.ry * (1.02 + ident.hair_volume))
             + 0.2 + extra) * unit * s
    # Screen position of the head centre once the roll about the neck pivot is applied.
    ccx = (sc.cx + fr.sin_roll * piv * unit) * s
    ccy = (sc.cy + piv * (1 - fr.cos_roll) * unit) * s
    y0, y1 = max(int(ccy - reach), 0), min(int(ccy + reach) + 1, s)
    x0, x1 = max(int(ccx - reach), 0), min(int(ccx + reach) + 1, s)
    return (slice(y0, y1), slice(x0, x1))


def _paint_ears(img: np.ndarray, ident: Identity, rot: np.ndarray, wx: np.ndarray, wy: np.ndarray) -> None:
    """Ears (behind the head, projected from the head's sides)."""
    if _covered(ident):
        return
    for side in (-1.0, 1.0):
        ex_, ey_, ez_ = project(rot, (side * ident.rx * 0.96, ident.ear_y, -0.1))
        vis = abs(rot[2, 0] * side * 1.0) * 0.6 + 0.55  # wider when turned towards the camera
        ear_f = ellipse_field(wx, wy, ex_ + side * ident.ear_w * 0.45, ey_, ident.ear_w * vis,
                              ident.ear_h)
        inner = gauss(wx, wy, ex_ + side * ident.ear_w * 0.45, ey_, ident.ear_w * 0.5, ident.ear_h * 0.6)
        ear_col = ident.skin[None, None, :] * (0.85 - 0.2 * inner)[..., None]
        paint(img, coverage(ear_f), ear_col)


def _paint_hair_shell(img: np.ndarray, ident: Identity, rot: np.ndarray, wx: np.ndarray, wy: np.ndarray,
                      lighting: _Lighting) -> None:
    """Hair volume shell behind the face, and the bun on top of it."""
    if ident.hair_style in ("Bald", "Buzzed") or _covered(ident):
        return
    hair_col = ident.hair
    vol = ident.hair_volume
    shell = ray_cast_ellipsoid(wx, wy + 0.08, rot, (ident.rx * (1.05 + vol), ident.ry * (1.02 + vol * 0.6),
                                                    ident.rz * (1.05 + vol)))
    # Hair covers the shell down to about ear level.
    lim = ident.ear_y + (0.35 if ident.hair_len > 0 else -0.05)
    shell_f = np.minimum(shell.inside, (lim - shell.ly) * 0.3)
    tex = 0.8 + 0.15 * np.sin(shell.lx * ident.hair_freq + ident.hair_phase[3]) * np.sin(
        shell.ly * ident.hair_freq + ident.hair_phase[4]
    )
    if ident.hair_style in ("Curly", "Coily"):
        f = ident.hair_freq * 1.6
        tex = 0.75 + 0.2 * np.abs(np.sin(shell.lx * f) * np.sin(shell.ly * f))
    mix = smoothstep(-1.0, 1.0, shell.ly)[..., None]
    hc = hair_col + (ident.hair2 - hair_col) * mix
    paint(img, coverage(shell_f), hc * (tex * lighting.shade(shell.nw) * 0.85)[..., None])
    if ident.hair_style == "Bun":
        bx, by, _ = project(rot, (0.0, -ident.ry * 1.0, -0.3))
        paint(img, coverage(ellipse_field(wx, wy, bx, by, 0.45, 0.35)), hair_col * 0.8)


def _paint_head(img: np.ndarray, ident: Identity, sc: Scene, rot: np.ndarray, wx: np.ndarray, wy: np.ndarray,
                ex: dict[str, float], lighting: _Lighting, hair_tex_base: np.ndarray) -> None:
    """The head carrier: face features, scalp hair and headwear on its albedo, then lit and composited."""
    head = ray_cast_ellipsoid(wx, wy, rot, (ident.rx, ident.ry, ident.rz))
    face_f = _face_outline(ident, head, ex)
    alb = np.broadcast_to(ident.skin, wx.shape + (3,)).copy()
    paint_face_features(alb, ident, head.lx, head.ly, ex, sc.gaze)
    _paint_scalp_hair(alb, ident, head.lx, head.ly, hair_tex_base)
    _paint_scalp_headwear(alb, ident, head.lx, head.ly)
    paint(img, coverage(face_f), _lit_head(alb, ident, head, lighting))


def _face_outline(ident: Identity, head: Surface, ex: dict[str, float]) -> np.ndarray:
    """Field of the face silhouette: the head ellipsoid, narrowed below the eyes into jaw and chin."""
    lx, ly = head.lx, head.ly
    v = np.clip(ly / ident.ry, 0.0, 1.0)
    half_w = ident.rx * (1 - ident.taper * v**2) * np.clip(1 - v**ident.jaw_power, 0, 1) ** (
        1 / ident.jaw_power
    )
    chin_drop = 0.06 * ex["open"]  # opening the mouth lowers the jaw slightly
    face_f = np.where(ly > 0, half_w * (1 + chin_drop * v) - np.abs(lx), 10.0)
    return np.minimum(face_f, head.inside * 2.0)


def _paint_scalp_hair(alb: np.ndarray, ident: Identity, lx: np.ndarray, ly: np.ndarray,
                      hair_tex_base: np.ndarray) -> None:
    """Hair on the scalp down to the hairline (and the temples above the ears)."""
    if _covered(ident):
        return
    part = ident.hair_part * 0.1
    line = ident.hairline + ident.fringe + 0.12 * (lx / ident.rx) ** 2 + part * np.tanh(lx * 4)
    if ident.hair_style == "Bald":
        line = ident.hairline - 0.5 + 0.6 * (lx / ident.rx) ** 2  # receded crown, hair at the sides
        hair_alpha = 0.0
    else:
        hair_alpha = 0.55 if ident.hair_style == "Buzzed" else 1.0
    # Temples: hair also covers the sides above the ears.
    side = (np.abs(lx) - ident.rx * 0.8) - 0.25 * np.maximum(ly - (ident.ear_y - 0.25), 0) ** 2 * 8
    scalp = np.maximum(line - ly, side)
    tex = 0.85 + 0.12 * hair_tex_base
    if hair_alpha > 0:
        hc = ident.hair * (tex)[..., None]
        paint(alb, coverage(scalp) * hair_alpha, hc)


def _paint_scalp_headwear(alb: np.ndarray, ident: Identity, lx: np.ndarray, ly: np.ndarray) -> None:
    """Hijab, turban band or kippah on the scalp."""
    if ident.headwear == "Hijab":
        cover = np.maximum(ident.hairline + 0.18 - ly, np.abs(lx) - ident.rx * 0.78)
        paint(alb, coverage(cover), ident.cloth_color)
    elif ident.headwear == "Turban":
        cover = ident.hairline + 0.12 - ly + 0.06 * np.abs(lx)
        folds = 0.85 + 0.12 * np.sin((ly + 0.5 * np.abs(lx)) * 18)
        paint(alb, coverage(cover), ident.cloth_color * folds[..., None])
    elif ident.headwear == "Kippah":
        cover = ellipse_field(lx, ly, 0.0, -ident.ry * 0.95, 0.45, 0.25)
        paint(alb, coverage(cover), ident.cloth_color)


def _lit_head(alb: np.ndarray, ident: Identity, head: Surface, lighting: _Lighting) -> np.ndarray:
    """The albedo under the light, exposed for the skin tone, with sheen and rounded edges."""
    light = lighting.shade(head.nw) * np.float32(ident.exposure)
    # Specular sheen (stronger for oily skin) and edge darkening for a rounded look.
    spec = lighting.lambert(head.nw) ** 18 * ident.oily
    rim = 1.0 - 0.6 * (1 - np.clip(head.nw[2], 0, 1)) ** 1.5
    return alb * (light * rim)[..., None] + spec[..., None] * 0.5


def _paint_turban_crown(img: np.ndarray, ident: Identity, rot: np.ndarray, wx: np.ndarray, wy: np.ndarray) -> None:
    """Turban volume above the head."""
    if ident.headwear != "Turban":
        return
    tx, ty, _ = project(rot, (0.0, -ident.ry * 0.8, 0.1))
    tf = ellipse_field(wx, wy, tx, ty - 0.1, ident.rx * 1.25, 0.75, 2.5)
    tf = np.minimum(tf, (ident.hairline + 0.05 - (wy - ty + ident.ry * 0.8)) * 0.5 + 0.2)
    folds = 0.8 + 0.15 * np.sin((wy - ty) * 16 + 2.0 * wx)
    paint(img, coverage(tf), ident.cloth_color * folds[..., None])


def _finish(img: np.ndarray, sc: Scene) -> Image.Image:
    """8-bit image with the camera's blur and sensor noise."""
    s = img.shape[0]
    out = np.clip(img, 0.0, 1.0)
    arr = np.round(out * 255.0).astype(np.uint8)
    pil = Image.fromarray(arr, "RGB")
    if sc.blur_sigma > 0.05:
        pil = pil.filter(ImageFilter.GaussianBlur(radius=float(sc.blur_sigma)))
    if sc.noise_sigma > 0.05:
        noise = np.random.default_rng(int(sc.noise_seed)).normal(0.0, float(sc.noise_sigma), (s, s, 1))
        arr = np.clip(np.asarray(pil, dtype=np.float64) + noise, 0, 255)
        pil = Image.fromarray(np.round(arr).astype(np.uint8), "RGB")
    return pil
