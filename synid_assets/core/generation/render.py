"""Procedural face renderer: numpy + Pillow only, no weights, deterministic.

The head is a textured ellipsoid seen under orthographic projection. Every pixel's ray is intersected
with the (yawed, pitched) ellipsoid; facial features are painted in the ellipsoid's own frontal
"texture" coordinates, so pose foreshortens them consistently, and the surface normal drives lighting.
A second, larger ellipsoid carries the hair volume. Neck, shoulders, ears, long hair and headwear are
simple screen-space shapes.

All identity geometry comes from one Generator seeded by the identity seed and is drawn in a fixed
order whatever the attributes, so a document and every live image of an identity share it exactly.
Attributes then steer the drawn values deterministically. Live images only add pose, expression,
lighting, background, blur and noise, all recorded in the variation dict.

Masks are anti-aliased analytically: for a field f that is positive inside a shape,
coverage = clip(f / |grad f| + 0.5) approximates the pixel-area coverage of the edge.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from synid_assets.core.dataset.seeds import stream_seed

RENDERER_NAME = "procedural"
RENDERER_VERSION = "2"  # bump when output bytes change for the same inputs

Color = np.ndarray

# --------------------------------------------------------------------------------------------- palettes

# Skin tones from light to dark (sRGB 0..1); a tone index t in [0, 1] interpolates along them.
_SKIN_PALETTE = np.array(
    [
        [0.96, 0.83, 0.74],
        [0.91, 0.74, 0.62],
        [0.82, 0.62, 0.48],
        [0.70, 0.50, 0.36],
        [0.55, 0.37, 0.25],
        [0.42, 0.27, 0.18],
        [0.30, 0.19, 0.13],
    ],
    dtype=np.float32,
)

# origin -> (mean tone index, spread)
_ORIGIN_TONE = {
    "North European": (0.06, 0.05),
    "West European": (0.12, 0.07),
    "East European": (0.10, 0.06),
    "South European": (0.25, 0.08),
    "North American": (0.30, 0.25),
    "Central American": (0.45, 0.10),
    "South American": (0.42, 0.15),
    "East Asian": (0.22, 0.07),
    "Southeast Asian": (0.42, 0.09),
    "South Asian": (0.55, 0.12),
    "Central Asian": (0.28, 0.08),
    "West Asian": (0.33, 0.08),
    "North African": (0.45, 0.10),
    "East African": (0.80, 0.08),
    "West African": (0.88, 0.06),
    "Middle African": (0.88, 0.06),
    "South African": (0.75, 0.15),
}

_HAIR_COLORS = {
    "Black": (0.07, 0.06, 0.05),
    "Brown": (0.30, 0.18, 0.10),
    "Blonde": (0.86, 0.72, 0.46),
    "Red": (0.58, 0.20, 0.08),
    "Gray": (0.55, 0.55, 0.55),
    "White": (0.92, 0.92, 0.90),
    "Silver": (0.76, 0.77, 0.81),
    "Blue": (0.14, 0.28, 0.74),
    "Green": (0.18, 0.52, 0.24),
    "Pink": (0.94, 0.50, 0.70),
    "Purple": (0.44, 0.20, 0.60),
    "Orange": (0.90, 0.45, 0.10),
    "Yellow": (0.95, 0.85, 0.25),
}
_NATURAL_HAIR = ("Black", "Brown", "Blonde", "Red")

_EYE_COLORS = np.array(
    [[0.30, 0.18, 0.09], [0.20, 0.12, 0.07], [0.35, 0.42, 0.55], [0.32, 0.42, 0.25], [0.45, 0.33, 0.18]],
    dtype=np.float32,
)

_AGE_MID = {
    "15-19": 17,
    "20-29": 25,
    "30-39": 35,
    "40-49": 45,
    "50-59": 55,
    "60-69": 65,
    "70-79": 75,
    "80+": 84,
}

EXPRESSIONS = ("neutral", "smile", "open_smile", "open_mouth", "raised_brows", "eyes_closed", "frown", "surprise")
BACKGROUNDS = ("plain", "gradient", "blobs")

# Facial-hair styles -> components (mustache, chin, jaw, cheeks, soul patch, density, length)
_BEARD_STYLES: dict[str, dict[str, float]] = {
    "Clean-shaven": {},
    "Stubble": {"stubble": 1.0},
    "Barely-there beard": {"stubble": 0.6},
    "Light beard": {"mustache": 0.6, "chin": 0.6, "jaw": 0.6, "cheeks": 0.3, "length": 0.05},
    "Full beard": {"mustache": 0.9, "chin": 0.9, "jaw": 0.9, "cheeks": 0.8, "length": 0.18},
    "Ducktail beard": {"mustache": 0.9, "chin": 0.9, "jaw": 0.85, "cheeks": 0.6, "length": 0.32},
    "Mustache": {"mustache": 0.9},
    "Handlebar mustache": {"mustache": 0.9, "curl": 1.0},
    "Pencil mustache": {"mustache": 0.9, "thin": 1.0},
    "Chevron mustache": {"mustache": 1.0, "thick": 1.0},
    "Imperial mustache": {"mustache": 0.9, "curl": 0.6, "thick": 0.6},
    "Horseshoe mustache": {"mustache": 0.9, "horseshoe": 1.0},
    "Goatee": {"chin": 0.9, "mustache": 0.8, "narrow": 1.0},
    "Circle beard": {"chin": 0.9, "mustache": 0.85, "narrow": 1.0, "ring": 1.0},
    "Van Dyke beard": {"chin": 0.9, "mustache": 0.85, "narrow": 1.0, "length": 0.12},
    "Balbo beard": {"chin": 0.9, "mustache": 0.85, "length": 0.05},
    "Anchor beard": {"chin": 0.9, "mustache": 0.8, "jaw": 0.4, "narrow": 0.5, "length": 0.1},
    "Soul patch": {"soul": 1.0},
    "Mutton chops": {"cheeks": 0.9, "jaw": 0.7, "nochin": 1.0},
}


def _c(*rgb: float) -> Color:
    return np.array(rgb, dtype=np.float32)


def _lerp(a: Color, b: Color, t: float) -> Color:
    return (a + (b - a) * np.float32(t)).astype(np.float32)


def _skin_color(tone: float) -> Color:
    pos = float(np.clip(tone, 0.0, 1.0)) * (len(_SKIN_PALETTE) - 1)
    i = min(int(pos), len(_SKIN_PALETTE) - 2)
    return _lerp(_SKIN_PALETTE[i], _SKIN_PALETTE[i + 1], pos - i)


# ---------------------------------------------------------------------------------------- identity


@dataclass
class Identity:
    """Everything about a person that stays fixed across their images (head units: half-width ~1)."""

    rx: float
    ry: float
    rz: float
    taper: float
    jaw_power: float
    eye_y: float
    eye_dx: float
    eye_w: float
    eye_h: float
    eye_tilt: float
    eye_color: Color
    brow_gap: float
    brow_thick: float
    brow_arch: float
    brow_len: float
    brow_slope: float
    brow_color: Color
    nose_tip: float
    nose_w: float
    nose_bridge: float
    nose_hook: float
    nose_up: float
    mouth_y: float
    mouth_w: float
    lip_up: float
    lip_lo: float
    lip_curve: float
    lip_asym: float
    lip_color: Color
    ear_y: float
    ear_h: float
    ear_w: float
    skin: Color
    cheek_color: Color
    hair: Color
    hair2: Color
    hair_style: str
    hair_len: float
    hairline: float
    hair_part: float
    fringe: float
    hair_volume: float
    hair_freq: float
    hair_phase: np.ndarray
    beard: dict[str, float]
    beard_color: Color
    glasses: bool
    glasses_shape: float
    glasses_color: Color
    headwear: str | None
    cloth_color: Color
    shirt_color: Color
    neck_w: float
    shoulder_w: float
    wrinkles: float
    skin_type: str
    marks: np.ndarray  # (n, 4): x, y, radius, strength for freckles / moles / birthmark
    gender: str
    oily: float
    doc_background: Color
    tone: float = 0.0
    exposure: float = 1.0


def _pick(rng_value: float, options: tuple[str, ...] | list[str]) -> str:
    return options[min(int(rng_value * len(options)), len(options) - 1)]


def build_identity(attributes: Mapping[str, str], seed: int) -> Identity:
    """Identity geometry and colours from the identity seed, steered by the attributes."""
    rng = np.random.default_rng(stream_seed(int(seed), "render-identity"))
    # One fixed block of draws, consumed by name below, so missing attributes never shift the stream.
    n = np.clip(rng.standard_normal(64), -2.2, 2.2)  # wide spread, but no broken faces from the tails
    u = rng.random(64)
    marks_raw = rng.random((40, 4))
    hair_phase = rng.random(8) * 2 * np.pi

    a = {k: str(v) for k, v in attributes.items() if v is not None and str(v) != ""}
    gender = a.get("genders") or _pick(u[0], ("Male", "Female", "Female", "Male", "Non-binary"))
    masc = {"Male": 1.0, "Female": 0.0}.get(gender, 0.5)
    age = _AGE_MID.get(a.get("ages", ""), 18 + int(u[1] * 60))
    body = a.get("body_type", "Average weight")
    face_shape = a.get("face_shape") or _pick(u[2], ("Oval", "Oval", "Round", "Square", "Long"))

    # Head proportions.
    ry = {"Oval": 1.36, "Round": 1.24, "Square": 1.28, "Long": 1.46}[face_shape] + 0.1 * n[0]
    rx = {"Oval": 1.0, "Round": 1.07, "Square": 1.05, "Long": 0.95}[face_shape]
    rx *= {"Underweight": 0.95, "Overweight": 1.07}.get(body, 1.0) * (1 + 0.07 * n[1]) * (1 + 0.03 * masc)
    taper = {"Oval": 0.32, "Round": 0.25, "Square": 0.16, "Long": 0.32}[face_shape] + 0.06 * n[2]
    taper -= 0.04 * masc + (0.04 if body == "Overweight" else 0.0)
    taper = max(taper, 0.14)  # a jaw that narrows to the chin: the U-shaped outline detectors key on
    jaw_power = {"Square": 3.4, "Round": 2.2}.get(face_shape, 2.0) + 0.25 * abs(n[3])

    # Eyes.
    eye_shape = a.get("eye_shape", "")
    eye_y = -0.03 + 0.07 * n[4]
    eye_dx = 0.41 + 0.055 * n[5] + {"Close-Set": -0.05, "Wide-Set": 0.05}.get(eye_shape, 0.0)
    eye_w = 0.19 + 0.025 * n[6]
    eye_h = 0.085 + 0.011 * n[7]
    eye_h += {"Round": 0.02, "Protruding": 0.02, "Monolid": -0.02, "Hooded": -0.015, "Almond": -0.005}.get(
        eye_shape, 0.0
    )
    eye_tilt = math.radians(3.0 * n[8] + {"Upturned": 7.0, "Downturned": -7.0}.get(eye_shape, 0.0))
    tone_mean, tone_sd = _ORIGIN_TONE.get(a.get("origins", ""), (0.4, 0.28))
    tone = float(np.clip(tone_mean + tone_sd * n[9], 0.0, 1.0))
    eye_idx = 0 if tone > 0.45 else min(int(u[3] * len(_EYE_COLORS)), len(_EYE_COLORS) - 1)
    eye_color = _EYE_COLORS[eye_idx] * np.float32(0.85 + 0.3 * u[4])

    # Skin.
    skin = _skin_color(tone) * _c(1 + 0.03 * n[10], 1 + 0.025 * n[11], 1 + 0.03 * n[12])
    skin = np.clip(skin, 0, 1).astype(np.float32)
    cheek_color = _lerp(skin, _c(0.85, 0.35, 0.35), 0.12 + 0.06 * u[5])

    # Hair colour: attribute, else drawn (dark hair dominates, lighter for light tones).
    hair_name = a.get("hair_colors")
    if hair_name is None:
        hair_name = _pick(u[6], ("Black", "Black", "Brown", "Brown", "Blonde", "Red")) if tone < 0.3 else (
            "Black" if u[6] < 0.8 else "Brown"
        )
    if hair_name == "Multicolored":
        hair = _c(*_HAIR_COLORS[_pick(u[7], ("Blue", "Pink", "Purple", "Green"))])
        hair2 = _c(*_HAIR_COLORS[_pick(u[8], ("Blonde", "Yellow", "Orange", "Pink"))])
    else:
        hair = _c(*_HAIR_COLORS.get(hair_name, _HAIR_COLORS["Brown"])) * np.float32(0.9 + 0.2 * u[7])
        hair2 = hair
    if "hair_colors" not in a and age > 45:  # greying only when the colour is not prescribed
        grey = min(1.0, (age - 45) / 30.0)
        hair = _lerp(hair, _c(0.72, 0.72, 0.72), grey)
        hair2 = hair
    hair = np.clip(hair, 0, 1).astype(np.float32)
    hair2 = np.clip(hair2, 0, 1).astype(np.float32)
    brow_base = hair if hair_name in _NATURAL_HAIR or hair_name in ("Gray", "White", "Silver") else _c(
        0.12, 0.09, 0.07
    )
    brow_color = _lerp(brow_base, _c(0.05, 0.04, 0.03), 0.45)
    if tone > 0.6:
        brow_color = _c(0.06, 0.05, 0.04)

    # Brows.
    brow_gap = 0.23 + 0.05 * n[13]
    brow_thick = 0.047 + 0.013 * n[14] + 0.012 * masc
    brow_arch = 0.05 + 0.025 * n[15]
    brow_len = 0.25 + 0.025 * n[16]
    brow_slope = 0.04 * n[17]

    # Nose.
    nose_shape = a.get("nose_shape", "")
    nose_tip = 0.42 + 0.075 * n[18] + {"Long and straight": 0.06, "Upturned": -0.04}.get(nose_shape, 0.0)
    nose_w = 0.15 + 0.038 * n[19] + 0.015 * masc + {"Wide and flat": 0.05, "Small and narrow": -0.035}.get(
        nose_shape, 0.0
    )
    nose_w += 0.02 * (tone > 0.7)
    nose_bridge = 0.045 + 0.01 * n[20]
    nose_hook = {"Hooked": 1.0, "Rounded tip": 0.5}.get(nose_shape, 0.2 * u[9])
    nose_up = {"Upturned": 1.0}.get(nose_shape, 0.3 * u[10])

    # Mouth.
    lip_shape = a.get("lip_shape", "")
    mouth_y = 0.76 + 0.06 * n[21] + (nose_tip - 0.42) * 0.5
    mouth_w = 0.4 + 0.06 * n[22]
    lip_up = 0.058 + 0.012 * n[23] + {"Full": 0.015, "Thin": -0.018, "Bow-Shaped": 0.008}.get(lip_shape, 0.0)
    lip_lo = 0.08 + 0.014 * n[24] + {"Full": 0.02, "Thin": -0.022, "Round": 0.01}.get(lip_shape, 0.0)
    lip_curve = 0.01 * n[25] + {"Upturned": 0.025, "Downturned": -0.025}.get(lip_shape, 0.0)
    lip_asym = 0.02 * n[26] + (0.04 if lip_shape == "Asymmetrical" else 0.0)
    lip_color = _lerp(skin * _c(0.85, 0.6, 0.6), _c(0.55, 0.18, 0.22), 0.3 + 0.3 * (1 - masc) * u[11])

    # Ears.
    ear_y = eye_y + 0.17 + 0.03 * n[27]
    ear_h = 0.27 + 0.03 * n[28]
    ear_w = 0.12 + 0.02 * n[29]

    # Hair style.
    style = a.get("hair_styles")
    if style is None:
        style = _pick(u[12], ("Straight", "Wavy", "Curly", "Messy", "Buzzed")) if masc < 0.75 else _pick(
            u[12], ("Buzzed", "Straight", "Messy", "Wavy", "Curly", "Bald")
        )
    long_p = {1.0: 0.12, 0.0: 0.8}.get(masc, 0.5)
    hair_len = 0.0
    if style in ("Braided", "Dreadlocked") or (style in ("Straight", "Wavy", "Curly", "Coily", "Messy")
                                                and u[13] < long_p):
        hair_len = 0.6 + 0.9 * u[14]
    hairline = -0.74 + 0.05 * n[30] + (0.06 if age > 50 and masc > 0.7 else 0.0)
    hair_part = 0.5 * n[31]
    fringe = min(max(0.0, 0.2 * n[32]), 0.2) if style in ("Straight", "Wavy", "Messy") else 0.0
    brow_top = eye_y - brow_gap - brow_arch - brow_thick
    fringe = max(0.0, min(fringe, brow_top - 0.2 - hairline))
    hair_volume = {"Curly": 0.22, "Coily": 0.3, "Messy": 0.13, "Wavy": 0.11, "Dreadlocked": 0.16}.get(
        style, 0.06
    ) + 0.03 * u[15]
    hair_freq = 14.0 + 8.0 * u[16]

    # Facial hair: female never; unspecified men get a drawn default.
    beard_name = a.get("facial_hair")
    if gender == "Female" or (beard_name is None and masc < 0.75):
        beard_name = "Clean-shaven"
    elif beard_name is None:
        beard_name = _pick(u[17], ("Clean-shaven",) * 5 + ("Stubble", "Light beard", "Mustache", "Full beard"))
    beard = dict(_BEARD_STYLES.get(beard_name, {"mustache": 0.6, "chin": 0.6}))
    beard_color = _lerp(hair if hair_name in _NATURAL_HAIR or "hair_colors" not in a else brow_color,
                        _c(0.04, 0.03, 0.03), 0.25)

    headwear = a.get("headwear")
    cloth_color = _c(*(0.15 + 0.7 * u[18:21]))
    shirt_color = _c(*(0.1 + 0.75 * u[21:24]))

    glasses = "eyewear" in a
    glasses_shape = float(u[24])
    glasses_color = _c(0.08, 0.07, 0.07) if u[25] < 0.6 else _c(0.45, 0.30, 0.15) * np.float32(0.6 + 0.5 * u[26])

    neck_w = 0.48 + 0.04 * n[33] + 0.06 * masc + {"Overweight": 0.08, "Underweight": -0.05}.get(body, 0.0)
    shoulder_w = 2.1 + 0.15 * n[34] + 0.35 * masc + {"Overweight": 0.3, "Underweight": -0.2}.get(body, 0.0)

    skin_type = a.get("skin_type", "")
    wrinkles = float(np.clip((age - 32) / 45.0, 0.0, 1.0)) + (0.35 if skin_type == "Wrinkled" else 0.0)
    marks = marks_raw.copy()
    oily = 0.5 if skin_type == "Oily" else 0.12

    exposure = 1.0 + 0.55 * max(tone - 0.35, 0.0)  # photographers expose for the face: dark skin keeps contrast
    doc_background = _c(0.86, 0.88, 0.90) + _c(*(0.04 * (u[27:30] - 0.5)))

    return Identity(
        rx=float(rx), ry=float(ry), rz=float(rx) * 0.95, taper=float(taper), jaw_power=float(jaw_power),
        eye_y=float(eye_y), eye_dx=float(eye_dx), eye_w=float(eye_w), eye_h=float(eye_h),
        eye_tilt=float(eye_tilt), eye_color=eye_color.astype(np.float32),
        brow_gap=float(brow_gap), brow_thick=float(brow_thick), brow_arch=float(brow_arch),
        brow_len=float(brow_len), brow_slope=float(brow_slope), brow_color=brow_color,
        nose_tip=float(nose_tip), nose_w=float(nose_w), nose_bridge=float(nose_bridge),
        nose_hook=float(nose_hook), nose_up=float(nose_up),
        mouth_y=float(mouth_y), mouth_w=float(mouth_w), lip_up=float(max(lip_up, 0.015)),
        lip_lo=float(max(lip_lo, 0.02)), lip_curve=float(lip_curve), lip_asym=float(lip_asym),
        lip_color=lip_color, ear_y=float(ear_y), ear_h=float(ear_h), ear_w=float(ear_w),
        skin=skin, cheek_color=cheek_color, hair=hair, hair2=hair2, hair_style=style, hair_len=float(hair_len),
        hairline=float(hairline), hair_part=float(hair_part), fringe=float(fringe),
        hair_volume=float(hair_volume), hair_freq=float(hair_freq), hair_phase=hair_phase,
        beard=beard, beard_color=beard_color, glasses=glasses, glasses_shape=glasses_shape,
        glasses_color=glasses_color, headwear=headwear, cloth_color=cloth_color, shirt_color=shirt_color,
        neck_w=float(neck_w), shoulder_w=float(shoulder_w), wrinkles=float(wrinkles), skin_type=skin_type,
        marks=marks, gender=gender, oily=float(oily), doc_background=doc_background,
        tone=float(tone), exposure=float(exposure),
    )


# ----------------------------------------------------------------------------------------- helpers


def _coverage(f: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of {f > 0}: signed distance estimate f/|grad f| in pixels, clipped."""
    gy, gx = np.gradient(f)
    g = np.sqrt(gx * gx + gy * gy) + 1e-6
    return np.clip(f / g + 0.5, 0.0, 1.0)


def _paint(img: np.ndarray, alpha: np.ndarray, color) -> None:
    """In-place alpha blend of a colour (3,) or image (H, W, 3) over img (only where alpha matters)."""
    m = alpha > 0.002  # most features are small: blending only their pixels is much cheaper
    if not m.any():
        return
    c = color[m] if np.ndim(color) == 3 else np.asarray(color, dtype=np.float32)
    px = img[m]
    img[m] = px + alpha[m][:, None].astype(np.float32) * (c - px)


def _ellipse_f(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float, p: float = 2.0):
    """Positive inside an (super)ellipse, scaled to be roughly a distance in units of the smaller radius."""
    d = (np.abs(x - cx) / ax) ** p + (np.abs(y - cy) / ay) ** p
    return (1.0 - d ** (1.0 / p)) * min(ax, ay)


def _gauss(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-(((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _rotation(yaw: float, pitch: float) -> np.ndarray:
    """Local -> world rotation (x right, y down, z towards camera); yaw turns the face to its left."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return r_pitch @ r_yaw


@dataclass
class _Surface:
    inside: np.ndarray  # field positive inside the silhouette
    lx: np.ndarray
    ly: np.ndarray
    lz: np.ndarray
    nw: tuple[np.ndarray, np.ndarray, np.ndarray]  # world normal


def _ellipsoid(x: np.ndarray, y: np.ndarray, rot: np.ndarray, radii: tuple[float, float, float]) -> _Surface:
    """Ray-cast (orthographic, along -z) an ellipsoid centred at the origin."""
    inv = rot.T.astype(np.float32)  # float32 keeps every per-pixel array at half the memory traffic
    d = inv[:, 2]
    dd = np.array([1.0 / r**2 for r in radii], dtype=np.float32)
    ox = inv[0, 0] * x + inv[0, 1] * y
    oy = inv[1, 0] * x + inv[1, 1] * y
    oz = inv[2, 0] * x + inv[2, 1] * y
    a = float(np.sum(d * d * dd))
    b = 2.0 * (ox * d[0] * dd[0] + oy * d[1] * dd[1] + oz * d[2] * dd[2])
    c = ox * ox * dd[0] + oy * oy * dd[1] + oz * oz * dd[2] - 1.0
    disc = b * b - 4 * a * c
    t = (-b + np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
    t = t.astype(np.float32)
    lx, ly, lz = ox + d[0] * t, oy + d[1] * t, oz + d[2] * t
    nx, ny, nz = lx * dd[0], ly * dd[1], lz * dd[2]
    norm = np.sqrt(nx * nx + ny * ny + nz * nz) + 1e-9
    nx, ny, nz = nx / norm, ny / norm, nz / norm
    wx = rot[0, 0] * nx + rot[0, 1] * ny + rot[0, 2] * nz
    wy = rot[1, 0] * nx + rot[1, 1] * ny + rot[1, 2] * nz
    wz = rot[2, 0] * nx + rot[2, 1] * ny + rot[2, 2] * nz
    inside = disc / (4 * a)  # ~ proportional to (1 - r^2), fine for _coverage
    return _Surface(inside=inside, lx=lx, ly=ly, lz=lz, nw=(wx, wy, wz))


def _project(rot: np.ndarray, p: tuple[float, float, float]) -> tuple[float, float, float]:
    v = rot @ np.array(p, dtype=np.float64)
    return float(v[0]), float(v[1]), float(v[2])


# ------------------------------------------------------------------------------------------- scene


@dataclass
class _Scene:
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


def _expression_deltas(expr: str, s: float) -> dict[str, float]:
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


def _render(ident: Identity, sc: _Scene, size: int) -> Image.Image:
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

    rot = _rotation(math.radians(sc.yaw), math.radians(sc.pitch)).astype(np.float32)
    ex = _expression_deltas(sc.expression, sc.strength)
    L = np.array(
        [
            math.sin(math.radians(sc.light_az)) * math.cos(math.radians(sc.light_el)),
            -math.sin(math.radians(sc.light_el)),
            math.cos(math.radians(sc.light_az)) * math.cos(math.radians(sc.light_el)),
        ]
    )

    def shade(nw) -> np.ndarray:
        lam = np.maximum(nw[0] * L[0] + nw[1] * L[1] + nw[2] * L[2], 0.0)
        return sc.ambient + sc.light_strength * lam

    img = np.empty((s, s, 3), dtype=np.float32)
    _paint_background(img, sc, gx, gy)

    hair_col = ident.hair
    hair_tex_base = np.sin(wx * ident.hair_freq + ident.hair_phase[0]) * np.sin(
        wy * ident.hair_freq * 0.5 + ident.hair_phase[1]
    )
    covered = ident.headwear in ("Hijab", "Turban")

    # Long hair / hijab drape behind the neck (screen space).
    yaw_shift = math.sin(math.radians(sc.yaw)) * 0.2
    if ident.headwear == "Hijab":
        drape = np.minimum(
            _ellipse_f(wx0, wy0, yaw_shift, 0.2, ident.rx * 1.35, ident.ry * 1.35),
            (ident.ry * 2.6 - wy0) * 0.5,
        )
        drape = np.maximum(drape, _ellipse_f(wx0, wy0, 0.0, ident.ry * 1.7, ident.rx * 1.6, 0.9))
        cloth = ident.cloth_color * (0.85 + 0.1 * np.sin(wx0 * 6 + wy0 * 3))[..., None]
        _paint(img, _coverage(drape), cloth)
    elif ident.hair_len > 0 and not covered:
        top = -0.2
        bottom = ident.ry + ident.hair_len
        hw = ident.rx * (1.12 + ident.hair_volume)
        back = np.minimum(
            np.minimum(hw - np.abs(wx - yaw_shift * 0.5), bottom - wy), wy - top + 2.0
        )
        back = np.minimum(back, _ellipse_f(wx, wy, yaw_shift * 0.5, (top + bottom) / 2, hw * 1.05,
                                           (bottom - top) / 2 + 0.6, 4.0))
        tex = 0.82 + 0.12 * np.sin(wx * ident.hair_freq * 1.3 + ident.hair_phase[2] + 0.8 * np.sin(wy * 5))
        _paint(img, _coverage(back), hair_col * tex[..., None] * 0.8)

    # Shoulders and neck (screen space, not rolled with the head).
    sh = _ellipse_f(wx0, wy0, 0.0, ident.ry * 1.75 + 1.0, ident.shoulder_w, 1.1, 2.4)
    shirt = ident.shirt_color * (0.75 + 0.25 * _smoothstep(ident.ry * 3.2, ident.ry * 1.9, wy0))[..., None]
    _paint(img, _coverage(sh), shirt)
    neck_x = wx - yaw_shift * 0.3
    neck = np.minimum(ident.neck_w * (1 + 0.3 * _smoothstep(ident.ry * 1.55, ident.ry * 1.95, wy0)) - np.abs(neck_x),
                      ident.ry * 2.3 - wy0)
    neck = np.minimum(neck, wy + 0.3)
    neck_shade = 0.52 + 0.4 * _smoothstep(ident.ry * 0.9, ident.ry * 1.5, wy) - 0.15 * (
        np.abs(neck_x) / ident.neck_w
    ) ** 2
    neck_color = ident.skin * neck_shade[..., None]
    if ident.headwear == "Hijab":
        neck_color = ident.cloth_color * (neck_shade[..., None] * 0.3 + 0.65)
    _paint(img, _coverage(neck), neck_color)

    # Everything from here to the turban lies in a box around the head: work on that crop only.
    extra = 0.5 if ident.headwear == "Turban" or ident.hair_style == "Bun" else 0.0
    reach = (max(ident.rx * (1.05 + ident.hair_volume) + ident.ear_w, ident.ry * (1.02 + ident.hair_volume))
             + 0.2 + extra) * unit * s
    # Screen position of the head centre once the roll about the neck pivot is applied.
    ccx = (sc.cx + sr * piv * unit) * s
    ccy = (sc.cy + piv * (1 - cr) * unit) * s
    y0, y1 = max(int(ccy - reach), 0), min(int(ccy + reach) + 1, s)
    x0, x1 = max(int(ccx - reach), 0), min(int(ccx + reach) + 1, s)
    box = (slice(y0, y1), slice(x0, x1))
    wx, wy, img_full, img = wx[box], wy[box], img, img[box]
    hair_tex_base = hair_tex_base[box]
    # Ears (behind the head, projected from the head's sides).
    if not covered:
        for side in (-1.0, 1.0):
            ex_, ey_, ez_ = _project(rot, (side * ident.rx * 0.96, ident.ear_y, -0.1))
            vis = abs(rot[2, 0] * side * 1.0) * 0.6 + 0.55  # wider when turned towards the camera
            ear_f = _ellipse_f(wx, wy, ex_ + side * ident.ear_w * 0.45, ey_, ident.ear_w * vis,
                               ident.ear_h)
            inner = _gauss(wx, wy, ex_ + side * ident.ear_w * 0.45, ey_, ident.ear_w * 0.5, ident.ear_h * 0.6)
            ear_col = ident.skin[None, None, :] * (0.85 - 0.2 * inner)[..., None]
            _paint(img, _coverage(ear_f), ear_col)

    # Hair volume shell behind the face.
    vol = ident.hair_volume
    has_hair = ident.hair_style not in ("Bald",) and not covered
    if has_hair and ident.hair_style != "Buzzed":
        shell = _ellipsoid(wx, wy + 0.08, rot, (ident.rx * (1.05 + vol), ident.ry * (1.02 + vol * 0.6),
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
        mix = _smoothstep(-1.0, 1.0, shell.ly)[..., None]
        hc = hair_col + (ident.hair2 - hair_col) * mix
        _paint(img, _coverage(shell_f), hc * (tex * shade(shell.nw) * 0.85)[..., None])
        if ident.hair_style == "Bun":
            bx, by, _ = _project(rot, (0.0, -ident.ry * 1.0, -0.3))
            _paint(img, _coverage(_ellipse_f(wx, wy, bx, by, 0.45, 0.35)), hair_col * 0.8)

    # Head carrier.
    head = _ellipsoid(wx, wy, rot, (ident.rx, ident.ry, ident.rz))
    lx, ly = head.lx, head.ly
    v = np.clip(ly / ident.ry, 0.0, 1.0)
    half_w = ident.rx * (1 - ident.taper * v**2) * np.clip(1 - v**ident.jaw_power, 0, 1) ** (
        1 / ident.jaw_power
    )
    chin_drop = 0.06 * ex["open"]  # opening the mouth lowers the jaw slightly
    face_f = np.where(ly > 0, half_w * (1 + chin_drop * v) - np.abs(lx), 10.0)
    face_f = np.minimum(face_f, head.inside * 2.0)

    alb = np.broadcast_to(ident.skin, wx.shape + (3,)).copy()
    aa = _skin_details(alb, ident, lx, ly, ex, sc)
    del aa

    # Hair on the scalp.
    if has_hair or (ident.hair_style == "Bald" and not covered):
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
            hc = hair_col * (tex)[..., None]
            _paint(alb, _coverage(scalp) * hair_alpha, hc)

    # Headwear on the scalp.
    if ident.headwear == "Hijab":
        cover = np.maximum(ident.hairline + 0.18 - ly, np.abs(lx) - ident.rx * 0.78)
        _paint(alb, _coverage(cover), ident.cloth_color)
    elif ident.headwear == "Turban":
        cover = ident.hairline + 0.12 - ly + 0.06 * np.abs(lx)
        folds = 0.85 + 0.12 * np.sin((ly + 0.5 * np.abs(lx)) * 18)
        _paint(alb, _coverage(cover), ident.cloth_color * folds[..., None])
    elif ident.headwear == "Kippah":
        cover = _ellipse_f(lx, ly, 0.0, -ident.ry * 0.95, 0.45, 0.25)
        _paint(alb, _coverage(cover), ident.cloth_color)

    light = shade(head.nw) * np.float32(ident.exposure)
    # Specular sheen (stronger for oily skin) and edge darkening for a rounded look.
    spec = np.maximum(head.nw[0] * L[0] + head.nw[1] * L[1] + head.nw[2] * L[2], 0.0) ** 18 * ident.oily
    rim = 1.0 - 0.6 * (1 - np.clip(head.nw[2], 0, 1)) ** 1.5
    col = alb * (light * rim)[..., None] + spec[..., None] * 0.5
    _paint(img, _coverage(face_f), col)

    # Turban volume above the head.
    if ident.headwear == "Turban":
        tx, ty, _ = _project(rot, (0.0, -ident.ry * 0.8, 0.1))
        tf = _ellipse_f(wx, wy, tx, ty - 0.1, ident.rx * 1.25, 0.75, 2.5)
        tf = np.minimum(tf, (ident.hairline + 0.05 - (wy - ty + ident.ry * 0.8)) * 0.5 + 0.2)
        folds = 0.8 + 0.15 * np.sin((wy - ty) * 16 + 2.0 * wx)
        _paint(img, _coverage(tf), ident.cloth_color * folds[..., None])

    img = img_full
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


def _paint_background(img: np.ndarray, sc: _Scene, gx: np.ndarray, gy: np.ndarray) -> None:
    c0 = np.array(sc.bg_colors[0], dtype=np.float64)
    img[:] = c0
    if sc.background == "gradient" and len(sc.bg_colors) > 1:
        ang = math.radians(sc.bg_angle)
        t = np.clip((gx - 0.5) * math.cos(ang) + (gy - 0.5) * math.sin(ang) + 0.5, 0, 1)
        _paint(img, t, np.array(sc.bg_colors[1], dtype=np.float64))
    elif sc.background == "blobs":
        for bx, by, br, r, g, b in sc.bg_blobs:
            _paint(img, 0.8 * np.exp(-((gx - bx) ** 2 + (gy - by) ** 2) / (br * br)), np.array([r, g, b]))


def _skin_details(alb: np.ndarray, ident: Identity, lx: np.ndarray, ly: np.ndarray, ex: dict, sc: _Scene):
    """Paints the facial features onto the head albedo in texture coordinates."""
    skin = ident.skin
    dark = skin * 0.55
    smile, mopen, brow_up, frown = ex["smile"], ex["open"], ex["brow"], ex["frown"]

    # Soft 3D cues: eye sockets, cheekbones, under-nose and under-lip shadows, chin.
    for side in (-1.0, 1.0):
        sock = _gauss(lx, ly, side * ident.eye_dx, ident.eye_y - 0.03, ident.eye_w * 1.5, 0.15)
        _paint(alb, 0.5 * sock, dark)
        cheek = _gauss(lx, ly, side * (ident.eye_dx + 0.05), ident.eye_y + 0.42 - 0.05 * smile, 0.2, 0.13)
        _paint(alb, (0.25 + 0.25 * smile) * cheek, ident.cheek_color)
    _paint(alb, 0.3 * _gauss(lx, ly, 0.0, ident.mouth_y + ident.lip_lo + 0.09 + 0.1 * mopen, 0.18, 0.05), dark)

    # Nose: bridge side shading, tip, nostrils, shadow below.
    tip_y = ident.nose_tip
    nw = ident.nose_w
    yy = np.clip((ly - ident.eye_y) / (tip_y - ident.eye_y), 0.0, 1.0)
    for side in (-1.0, 1.0):
        xline = side * (ident.nose_bridge + (nw * 0.55 - ident.nose_bridge) * yy**2)
        along = _smoothstep(ident.eye_y + 0.1, tip_y - 0.05, ly) * _smoothstep(tip_y + 0.06, tip_y - 0.05, ly)
        band = np.exp(-(((lx - xline) / 0.05) ** 2)) * along
        _paint(alb, 0.5 * band, dark)
        wing = _gauss(lx, ly, side * nw * 0.8, tip_y - 0.01, nw * 0.35, 0.06)
        _paint(alb, 0.4 * wing, dark)
        nostril = _ellipse_f(lx, ly, side * nw * 0.42, tip_y + 0.03 - 0.02 * ident.nose_up, nw * 0.26, 0.028)
        _paint(alb, 0.85 * _coverage(nostril), skin * 0.25)
    # Bridge ridge: a lit strip down the middle, the nose's main vertical edge pair with the side shading.
    ridge = np.exp(-((lx / (ident.nose_bridge * 0.8)) ** 2))
    ridge = ridge * _smoothstep(ident.eye_y + 0.05, ident.eye_y + 0.2, ly) * _smoothstep(tip_y + 0.02, tip_y - 0.08, ly)
    _paint(alb, 0.3 * ridge, np.minimum(skin * 1.3, 1.0))
    tip = _gauss(lx, ly, 0.0, tip_y - 0.05 + 0.03 * ident.nose_hook, nw * 0.45, 0.07)
    _paint(alb, 0.3 * tip, np.minimum(skin * 1.2, 1.0))
    _paint(alb, 0.55 * _gauss(lx, ly, 0.0, tip_y + 0.08, nw * 0.9, 0.04), dark)

    # Eyes.
    openness = float(ex["eye_open"])
    for side in (-1.0, 1.0):
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
        cov = _coverage(eye_f) if eh > 0.004 else np.zeros_like(lx)
        white = np.array([0.93, 0.92, 0.9]) * 0.95
        _paint(alb, cov, white)
        ir = ident.eye_h * 0.95
        iris = _ellipse_f(lx, ly, cxe + sc.gaze * 0.03, ident.eye_y - eh * 0.1, ir, ir)
        _paint(alb, cov * _coverage(iris), ident.eye_color)
        pupil = _ellipse_f(lx, ly, cxe + sc.gaze * 0.03, ident.eye_y - eh * 0.1, ir * 0.45, ir * 0.45)
        _paint(alb, cov * _coverage(pupil), np.array([0.03, 0.02, 0.02]))
        glint = _gauss(lx, ly, cxe + 0.02, ident.eye_y - eh * 0.4, 0.015, 0.015)
        _paint(alb, cov * glint * 0.8, np.array([1.0, 1.0, 1.0]))
        # Lid line (lashes) along the upper lid: always present, even with closed eyes.
        lid_y = np.minimum(upper, -0.004) if eh > 0.004 else lower * 0.0
        lid = np.exp(-(((dye - lid_y) / 0.016) ** 2)) * _smoothstep(ident.eye_w * 1.05, ident.eye_w * 0.6,
                                                                        np.abs(dxe))
        _paint(alb, 0.85 * lid, np.array([0.06, 0.04, 0.04]))
        crease = np.exp(-(((dye + ident.eye_h * 1.9) / 0.025) ** 2)) * np.clip(t, 0, 1)
        _paint(alb, 0.25 * crease, dark)

        # Brow.
        by0 = ident.eye_y - ident.brow_gap - 0.08 * brow_up
        bdx = lx - side * (ident.eye_dx + 0.02)
        bt = np.clip(bdx * side / ident.brow_len, -1.0, 1.0)
        arch = ident.brow_arch + 0.02 * brow_up
        by = by0 - arch * (1 - bt**2) + ident.brow_slope * bt + 0.04 * frown * (1 - bt) / 2
        thick = ident.brow_thick * (1.1 - 0.35 * (bt + 1) / 2)
        brow_f = np.minimum(thick - np.abs(ly - by), (ident.brow_len * 1.05 - np.abs(bdx)) * 0.5)
        _paint(alb, 0.92 * _coverage(brow_f), ident.brow_color)

    # Mouth.
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
    _paint(alb, _coverage(up_f), ident.lip_color * 0.85)
    _paint(alb, _coverage(lo_f), ident.lip_color)
    _paint(alb, 0.25 * _gauss(lx, ly, 0.0, lo_top + ident.lip_lo * 0.35, mw * 0.4, 0.02), np.minimum(
        ident.lip_color * 1.4, 1.0))
    if open_h > 0.005:
        inner = np.minimum(np.minimum(ly - line_y, lo_top - ly), (1 - np.abs(xm)) * mw * 0.3)
        _paint(alb, _coverage(inner), np.array([0.16, 0.05, 0.05]))
        if ex["teeth"] > 0:
            teeth = np.minimum(np.minimum(ly - line_y, line_y + open_h * 0.45 - ly), (0.75 - np.abs(xm)) * mw * 0.3)
            _paint(alb, _coverage(teeth), np.array([0.9, 0.88, 0.82]))
    seam = np.exp(-(((ly - line_y) / 0.012) ** 2)) * _smoothstep(1.15, 0.85, np.abs(xm))
    _paint(alb, 0.7 * seam, np.array([0.2, 0.07, 0.07]))
    for side in (-1.0, 1.0):  # mouth corners
        _paint(alb, 0.4 * _gauss(lx, ly, side * mw * 1.02, line_y + 0.005, 0.03, 0.025), dark)

    # Age: forehead lines, nasolabial folds, crow's feet.
    w = min(ident.wrinkles, 1.2)
    if w > 0.05:
        for k in range(3):
            fy = ident.eye_y - ident.brow_gap - 0.17 - 0.08 * k - 0.04 * brow_up
            line = np.exp(-(((ly - fy - 0.03 * (lx / 0.5) ** 2) / 0.01) ** 2)) * _smoothstep(0.5, 0.2, np.abs(lx))
            _paint(alb, 0.35 * w * line, dark)
        for side in (-1.0, 1.0):
            yy = np.clip((ly - tip_y) / (my - tip_y + 0.05), 0, 1)
            fx = side * (nw * 0.9 + (mw * 1.05 - nw * 0.9) * yy)
            fold = np.exp(-(((lx - fx) / 0.018) ** 2)) * _smoothstep(tip_y - 0.05, tip_y + 0.05, ly) * \
                _smoothstep(my + 0.12, my, ly)
            _paint(alb, 0.5 * w * fold, dark)
            crow = _gauss(lx, ly, side * (ident.eye_dx + ident.eye_w + 0.06), ident.eye_y, 0.05, 0.06)
            _paint(alb, 0.3 * w * crow * (0.5 + 0.5 * np.sin(ly * 90) ** 2), dark)

    # Skin marks.
    kind = ident.skin_type
    m = ident.marks
    if kind == "Freckled":
        for i in range(30):
            fx = (m[i, 0] - 0.5) * 1.2
            fy = ident.nose_tip - 0.25 + m[i, 1] * 0.3
            _paint(alb, 0.45 * _gauss(lx, ly, fx, fy, 0.018, 0.018), skin * 0.6 * np.array([1.0, 0.85, 0.7]))
    elif kind == "Mole":
        fx, fy = (m[0, 0] - 0.5) * 1.2, 0.1 + m[0, 1] * 0.6
        _paint(alb, _coverage(_ellipse_f(lx, ly, fx, fy, 0.03, 0.03)), skin * 0.3)
    elif kind == "Birthmark":
        fx, fy = (m[0, 0] - 0.5) * 1.2, -0.4 + m[0, 1] * 1.0
        _paint(alb, 0.5 * _gauss(lx, ly, fx, fy, 0.12, 0.09), np.array([0.6, 0.25, 0.25]))
    elif kind == "Scarred":
        fx, fy = (m[0, 0] - 0.5) * 1.0, -0.3 + m[0, 1] * 0.8
        ang = m[0, 2] * np.pi
        d = (lx - fx) * math.sin(ang) - (ly - fy) * math.cos(ang)
        along = (lx - fx) * math.cos(ang) + (ly - fy) * math.sin(ang)
        scar = np.exp(-((d / 0.012) ** 2)) * _smoothstep(0.2, 0.12, np.abs(along))
        _paint(alb, 0.6 * scar, np.minimum(skin * np.array([1.1, 0.85, 0.85]), 1.0))
    elif kind in ("Rough", "Dry"):
        rough = np.sin(lx * 61 + m[1, 0] * 6) * np.sin(ly * 57 + m[1, 1] * 6)
        alb *= (1 + 0.035 * rough)[..., None]

    # Facial hair.
    b = ident.beard
    if b:
        _paint_beard(alb, ident, lx, ly, b, line_y=line_y, lo_top=lo_top, mw=mw, half_open=open_h)

    # Glasses (painted on the face surface: they sit close to it).
    if ident.glasses:
        gw, gh = ident.eye_w * 1.45, ident.eye_h * 2.6 + 0.03
        p = 2.5 + 3.0 * ident.glasses_shape
        for side in (-1.0, 1.0):
            cxg = side * (ident.eye_dx + 0.01)
            d = ((np.abs(lx - cxg) / gw) ** p + (np.abs(ly - ident.eye_y - 0.01) / gh) ** p) ** (1 / p)
            ring = 0.013 - np.abs(d - 1.0) * gh  # thin frames: the eyes and brows must stay readable
            _paint(alb, 0.85 * _coverage(ring), ident.glasses_color)
            temple = np.minimum(0.012 - np.abs(ly - ident.eye_y + 0.05), side * (lx - cxg) - gw * 0.98)
            _paint(alb, 0.9 * _coverage(temple), ident.glasses_color)
        bridge = np.minimum(0.011 - np.abs(ly - ident.eye_y + 0.04), ident.eye_dx - gw * 0.95 - np.abs(lx))
        _paint(alb, 0.95 * _coverage(bridge), ident.glasses_color)
    return None


def _paint_beard(alb, ident: Identity, lx, ly, b: dict[str, float], line_y, lo_top, mw, half_open) -> None:
    col = ident.beard_color
    tex = 0.85 + 0.15 * np.sin(lx * 70 + ident.hair_phase[5]) * np.sin(ly * 75 + ident.hair_phase[6])
    hc = col * tex[..., None]
    if b.get("stubble"):
        region = _smoothstep(ident.nose_tip + 0.1, ident.nose_tip + 0.25, ly) * _smoothstep(
            ident.eye_y + 0.25, ident.eye_y + 0.4, ly
        )
        grain = 0.5 + 0.5 * np.sin(lx * 140 + ident.hair_phase[7]) * np.sin(ly * 150)
        _paint(alb, 0.35 * b["stubble"] * region * grain, col)
        return
    length = b.get("length", 0.0)
    lip_hole = np.minimum(np.minimum(ly - (line_y - ident.lip_up - 0.01), lo_top + ident.lip_lo + 0.01 - ly),
                          mw * 1.05 - np.abs(lx))
    keep_lips = 1.0 - np.clip(lip_hole * 40, 0, 1)
    if b.get("jaw") or b.get("cheeks"):
        # The beard's upper edge runs from the sideburn down the cheek to just below the mouth corners,
        # so the cheeks above it stay skin and the jaw outline still reads.
        edge_t = _smoothstep(mw * 0.9, ident.rx * 0.85, np.abs(lx))
        center_top = line_y + 0.03
        cheek_top = ident.ear_y + 0.12 - 0.12 * b.get("cheeks", 0.0)
        top = center_top + (cheek_top - center_top) * edge_t
        region = 0.85 * _smoothstep(top, top + 0.1, ly)
        if b.get("nochin"):
            region = region * _smoothstep(mw * 0.9, mw * 1.4, np.abs(lx))
        dens = max(b.get("jaw", 0.0), b.get("cheeks", 0.0))
        _paint(alb, dens * region * keep_lips, hc)
    if b.get("chin"):
        cw = mw * (0.75 if b.get("narrow") else 1.1)
        chin = np.minimum(cw - np.abs(lx), ly - (lo_top + ident.lip_lo * 0.8))
        chin = np.minimum(chin, ident.ry + length - ly)
        _paint(alb, b["chin"] * _coverage(chin), hc)
    if b.get("mustache"):
        thick = 0.05 if b.get("thin") else (0.1 if b.get("thick") else 0.075)
        mw2 = mw * (1.05 + 0.3 * b.get("curl", 0.0))
        xm = np.clip(lx / mw2, -1.2, 1.2)
        base = line_y - ident.lip_up - 0.005 + 0.04 * xm**2 * (1 - 2 * b.get("curl", 0.0))
        must = np.minimum(np.minimum(base - ly + 0.01, ly - (base - thick)), (mw2 - np.abs(lx)) * 0.5)
        _paint(alb, b["mustache"] * _coverage(must), hc)
        if b.get("horseshoe") or b.get("ring"):
            for side in (-1.0, 1.0):
                bar = np.minimum(0.04 - np.abs(lx - side * mw * 1.05), (lo_top + 0.18) - ly)
                bar = np.minimum(bar, ly - base + thick)
                _paint(alb, b["mustache"] * _coverage(bar), hc)
    if b.get("soul"):
        sp = _ellipse_f(lx, ly, 0.0, lo_top + ident.lip_lo + 0.05, 0.05, 0.035)
        _paint(alb, 0.9 * _coverage(sp), hc)


# ------------------------------------------------------------------------------------------ public API


def render_document(attributes: Mapping[str, str], seed: int, size: int = 256) -> Image.Image:
    """A passport-like portrait: frontal, neutral, evenly lit, plain light background."""
    ident = build_identity(attributes, seed)
    sc = _Scene(ambient=0.92, light_strength=0.15, bg_colors=(tuple(float(c) for c in ident.doc_background),))
    return _render(ident, sc, size)


def draw_live_variation(seed: int) -> dict[str, object]:
    """All capture conditions of one live image, drawn from its own seed (JSON-serialisable)."""
    rng = np.random.default_rng(stream_seed(int(seed), "live-variation"))
    v = rng.random(32)
    expression = EXPRESSIONS[int(v[0] * len(EXPRESSIONS)) % len(EXPRESSIONS)]
    background = BACKGROUNDS[int(v[1] * len(BACKGROUNDS)) % len(BACKGROUNDS)]
    colors = [[round(float(0.25 + 0.7 * c), 4) for c in rng.random(3)] for _ in range(2)]
    blobs = [
        [round(float(x), 4) for x in (rng.random(), rng.random(), 0.15 + 0.3 * rng.random(), *rng.random(3))]
        for _ in range(3)
    ]
    return {
        "yaw": round(float((v[2] * 2 - 1) * 10.0), 3),
        "pitch": round(float((v[3] * 2 - 1) * 5.0), 3),
        "roll": round(float((v[4] * 2 - 1) * 6.0), 3),
        "expression": expression,
        "expression_strength": round(float(0.2 + 0.5 * v[5]), 3),
        "lighting": {
            "azimuth": round(float((v[6] * 2 - 1) * 30.0), 3),
            "elevation": round(float(0.0 + 35.0 * v[7]), 3),
            "strength": round(float(0.15 + 0.3 * v[8]), 3),
            "ambient": round(float(0.7 + 0.2 * v[9]), 3),
        },
        "background": {"kind": background, "rgb": colors[0], "rgb2": colors[1],
                       "angle": round(float(v[10] * 360.0), 3), "blobs": blobs},
        "scale": round(float(0.18 + 0.04 * v[11]), 4),
        "offset": [round(float((v[12] * 2 - 1) * 0.04), 4), round(float((v[13] * 2 - 1) * 0.03), 4)],
        "gaze": round(float(v[14] * 2 - 1), 3),
        "blur_sigma": round(float(0.9 * v[15] ** 2), 3),
        "noise_sigma": round(float(3.0 * v[16]), 3),
        "noise_seed": int(stream_seed(int(seed), "live-noise")),
    }


def render_live(
    attributes: Mapping[str, str], seed: int, variation: Mapping[str, object], size: int = 256
) -> Image.Image:
    """The identity of `seed` under the capture conditions of `variation` (a draw_live_variation dict)."""
    ident = build_identity(attributes, seed)
    light = dict(variation.get("lighting", {}))  # type: ignore[arg-type]
    bg = dict(variation.get("background", {}))  # type: ignore[arg-type]
    offset = list(variation.get("offset", [0.0, 0.0]))  # type: ignore[arg-type]
    sc = _Scene(
        yaw=float(variation.get("yaw", 0.0)),
        pitch=float(variation.get("pitch", 0.0)),
        roll=float(variation.get("roll", 0.0)),
        scale=float(variation.get("scale", 0.2)),
        cx=0.5 + float(offset[0]),
        cy=0.46 + float(offset[1]),
        light_az=float(light.get("azimuth", 0.0)),
        light_el=float(light.get("elevation", 20.0)),
        light_strength=float(light.get("strength", 0.45)),
        ambient=float(light.get("ambient", 0.62)),
        expression=str(variation.get("expression", "neutral")),
        strength=float(variation.get("expression_strength", 0.0)),
        background=str(bg.get("kind", "plain")),
        bg_colors=(tuple(bg.get("rgb", (0.8, 0.8, 0.8))), tuple(bg.get("rgb2", bg.get("rgb", (0.8, 0.8, 0.8))))),
        bg_angle=float(bg.get("angle", 0.0)),
        bg_blobs=tuple(tuple(b) for b in bg.get("blobs", ())),
        blur_sigma=float(variation.get("blur_sigma", 0.0)),
        noise_sigma=float(variation.get("noise_sigma", 0.0)),
        noise_seed=int(variation.get("noise_seed", 0)),
        gaze=float(variation.get("gaze", 0.0)),
    )
    return _render(ident, sc, size)
