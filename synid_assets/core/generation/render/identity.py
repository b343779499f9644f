"""An identity of the procedural renderer: everything about a person that stays fixed across their images.

All identity geometry comes from one Generator seeded by the identity seed and is drawn in a fixed
order whatever the attributes, so a document and every live image of an identity share it exactly.
Attributes then steer the drawn values deterministically, one step per part of the face below.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from synid_assets.core.dataset.seeds import stream_seed
from synid_assets.core.generation.render.palettes import (
    AGE_MID,
    BEARD_STYLES,
    EYE_COLORS,
    HAIR_COLORS,
    NATURAL_HAIR,
    ORIGIN_TONE,
    Color,
    lerp,
    rgb,
    skin_color,
)

Fields = dict[str, Any]  # Identity fields made by one step of build_identity


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
    age = AGE_MID.get(a.get("ages", ""), 18 + int(u[1] * 60))
    body = a.get("body_type", "Average weight")
    tone_mean, tone_sd = ORIGIN_TONE.get(a.get("origins", ""), (0.4, 0.28))
    tone = float(np.clip(tone_mean + tone_sd * n[9], 0.0, 1.0))

    fields: Fields = {"gender": gender, "tone": tone, "hair_phase": hair_phase}
    fields |= _head_shape(a, n, u, masc, body)
    fields |= _eyes(a, n, u, tone)
    fields |= _skin(n, u, tone)
    hair_name, hair_fields = _hair_colors(a, u, tone, age)
    fields |= hair_fields
    fields |= _brows(n, masc)
    fields |= _nose(a, n, u, masc, tone)
    fields |= _mouth(a, n, u, masc, fields["skin"], fields["nose_tip"])
    fields |= _ears(n, fields["eye_y"])
    fields |= _hair_style(a, n, u, masc, age, fields)
    fields |= _facial_hair(a, u, gender, masc, hair_name, fields["hair"], fields["brow_color"])
    fields |= _clothes_and_eyewear(a, u)
    fields |= _body(n, masc, body)
    fields |= _skin_texture(a, age, marks_raw)
    fields |= _capture(u, tone)
    return Identity(**fields)


def _head_shape(a: Mapping[str, str], n: np.ndarray, u: np.ndarray, masc: float, body: str) -> Fields:
    """Head proportions: radii of the head ellipsoid and how the jaw narrows to the chin."""
    face_shape = a.get("face_shape") or _pick(u[2], ("Oval", "Oval", "Round", "Square", "Long"))
    ry = {"Oval": 1.36, "Round": 1.24, "Square": 1.28, "Long": 1.46}[face_shape] + 0.1 * n[0]
    rx = {"Oval": 1.0, "Round": 1.07, "Square": 1.05, "Long": 0.95}[face_shape]
    rx *= {"Underweight": 0.95, "Overweight": 1.07}.get(body, 1.0) * (1 + 0.07 * n[1]) * (1 + 0.03 * masc)
    taper = {"Oval": 0.32, "Round": 0.25, "Square": 0.16, "Long": 0.32}[face_shape] + 0.06 * n[2]
    taper -= 0.04 * masc + (0.04 if body == "Overweight" else 0.0)
    taper = max(taper, 0.14)  # a jaw that narrows to the chin: the U-shaped outline detectors key on
    jaw_power = {"Square": 3.4, "Round": 2.2}.get(face_shape, 2.0) + 0.25 * abs(n[3])
    rx, ry = _not_squat(float(rx), float(ry))
    return {"rx": float(rx), "ry": float(ry), "rz": float(rx) * 0.95, "taper": float(taper),
            "jaw_power": float(jaw_power)}


_MIN_ASPECT = 1.15  # the least head height / width: dlib misses squatter faces
_ASPECT_KNEE = 1.3  # aspects above this are kept as drawn


def _not_squat(rx: float, ry: float) -> tuple[float, float]:
    """Head radii with the height/width aspect softly floored at _MIN_ASPECT.

    A short head on a wide draw (a round or overweight face with a low height draw) reads as wider than
    tall: on the renderer benchmark's 576 identities (dataset seeds 0, 1, 4242) dlib's frontal detector
    missed 17 of the 50 documents with an aspect under 1.05, 2 of 79 in [1.05, 1.15), 4 of 156 in
    [1.15, 1.3) and 1 of 291 from 1.3 up. Aspects under the knee are compressed towards the floor, keeping
    their order, and the correction is shared: the head gets taller and narrower alike."""
    aspect = ry / rx
    if aspect >= _ASPECT_KNEE:
        return rx, ry
    span = _ASPECT_KNEE - _MIN_ASPECT
    target = _ASPECT_KNEE - span * (1.0 - math.exp(-(_ASPECT_KNEE - aspect) / span))
    stretch = math.sqrt(target / aspect)
    return rx / stretch, ry * stretch


def _eyes(a: Mapping[str, str], n: np.ndarray, u: np.ndarray, tone: float) -> Fields:
    """Eye placement, size, tilt and iris colour (dark irises for darker skin tones)."""
    eye_shape = a.get("eye_shape", "")
    eye_y = -0.03 + 0.07 * n[4]
    eye_dx = 0.41 + 0.055 * n[5] + {"Close-Set": -0.05, "Wide-Set": 0.05}.get(eye_shape, 0.0)
    eye_w = 0.19 + 0.025 * n[6]
    eye_h = 0.085 + 0.011 * n[7]
    eye_h += {"Round": 0.02, "Protruding": 0.02, "Monolid": -0.02, "Hooded": -0.015, "Almond": -0.005}.get(
        eye_shape, 0.0
    )
    eye_tilt = math.radians(3.0 * n[8] + {"Upturned": 7.0, "Downturned": -7.0}.get(eye_shape, 0.0))
    eye_idx = 0 if tone > 0.45 else min(int(u[3] * len(EYE_COLORS)), len(EYE_COLORS) - 1)
    eye_color = EYE_COLORS[eye_idx] * np.float32(0.85 + 0.3 * u[4])
    return {"eye_y": float(eye_y), "eye_dx": float(eye_dx), "eye_w": float(eye_w), "eye_h": float(eye_h),
            "eye_tilt": float(eye_tilt), "eye_color": eye_color.astype(np.float32)}


def _skin(n: np.ndarray, u: np.ndarray, tone: float) -> Fields:
    """Skin colour from the tone index, with a small per-channel drawn tint, and the cheek blush."""
    skin = skin_color(tone) * rgb(1 + 0.03 * n[10], 1 + 0.025 * n[11], 1 + 0.03 * n[12])
    skin = np.clip(skin, 0, 1).astype(np.float32)
    cheek_color = lerp(skin, rgb(0.85, 0.35, 0.35), 0.12 + 0.06 * u[5])
    return {"skin": skin, "cheek_color": cheek_color}


def _hair_colors(a: Mapping[str, str], u: np.ndarray, tone: float, age: int) -> tuple[str, Fields]:
    """Hair colour: attribute, else drawn (dark hair dominates, lighter for light tones); brows follow it."""
    hair_name = a.get("hair_colors")
    if hair_name is None:
        hair_name = _pick(u[6], ("Black", "Black", "Brown", "Brown", "Blonde", "Red")) if tone < 0.3 else (
            "Black" if u[6] < 0.8 else "Brown"
        )
    if hair_name == "Multicolored":
        hair = rgb(*HAIR_COLORS[_pick(u[7], ("Blue", "Pink", "Purple", "Green"))])
        hair2 = rgb(*HAIR_COLORS[_pick(u[8], ("Blonde", "Yellow", "Orange", "Pink"))])
    else:
        hair = rgb(*HAIR_COLORS.get(hair_name, HAIR_COLORS["Brown"])) * np.float32(0.9 + 0.2 * u[7])
        hair2 = hair
    if "hair_colors" not in a and age > 45:  # greying only when the colour is not prescribed
        grey = min(1.0, (age - 45) / 30.0)
        hair = lerp(hair, rgb(0.72, 0.72, 0.72), grey)
        hair2 = hair
    hair = np.clip(hair, 0, 1).astype(np.float32)
    hair2 = np.clip(hair2, 0, 1).astype(np.float32)
    brow_base = hair if hair_name in NATURAL_HAIR or hair_name in ("Gray", "White", "Silver") else rgb(
        0.12, 0.09, 0.07
    )
    brow_color = lerp(brow_base, rgb(0.05, 0.04, 0.03), 0.45)
    if tone > 0.6:
        brow_color = rgb(0.06, 0.05, 0.04)
    return hair_name, {"hair": hair, "hair2": hair2, "brow_color": brow_color}


def _brows(n: np.ndarray, masc: float) -> Fields:
    """Brow gap above the eyes, thickness (heavier for men), arch, length and slope."""
    brow_gap = 0.23 + 0.05 * n[13]
    brow_thick = 0.047 + 0.013 * n[14] + 0.012 * masc
    brow_arch = 0.05 + 0.025 * n[15]
    brow_len = 0.25 + 0.025 * n[16]
    brow_slope = 0.04 * n[17]
    return {"brow_gap": float(brow_gap), "brow_thick": float(brow_thick), "brow_arch": float(brow_arch),
            "brow_len": float(brow_len), "brow_slope": float(brow_slope)}


def _nose(a: Mapping[str, str], n: np.ndarray, u: np.ndarray, masc: float, tone: float) -> Fields:
    """Nose length, width, bridge, hook and upturn."""
    nose_shape = a.get("nose_shape", "")
    nose_tip = 0.42 + 0.075 * n[18] + {"Long and straight": 0.06, "Upturned": -0.04}.get(nose_shape, 0.0)
    nose_w = 0.15 + 0.038 * n[19] + 0.015 * masc + {"Wide and flat": 0.05, "Small and narrow": -0.035}.get(
        nose_shape, 0.0
    )
    nose_w += 0.02 * (tone > 0.7)
    nose_bridge = 0.045 + 0.01 * n[20]
    nose_hook = {"Hooked": 1.0, "Rounded tip": 0.5}.get(nose_shape, 0.2 * u[9])
    nose_up = {"Upturned": 1.0}.get(nose_shape, 0.3 * u[10])
    return {"nose_tip": float(nose_tip), "nose_w": float(nose_w), "nose_bridge": float(nose_bridge),
            "nose_hook": float(nose_hook), "nose_up": float(nose_up)}


def _mouth(a: Mapping[str, str], n: np.ndarray, u: np.ndarray, masc: float, skin: Color, nose_tip: float) -> Fields:
    """Mouth height (following the nose), width, lip thickness, curve, asymmetry and colour."""
    lip_shape = a.get("lip_shape", "")
    mouth_y = 0.76 + 0.06 * n[21] + (nose_tip - 0.42) * 0.5
    mouth_w = 0.4 + 0.06 * n[22]
    lip_up = 0.058 + 0.012 * n[23] + {"Full": 0.015, "Thin": -0.018, "Bow-Shaped": 0.008}.get(lip_shape, 0.0)
    lip_lo = 0.08 + 0.014 * n[24] + {"Full": 0.02, "Thin": -0.022, "Round": 0.01}.get(lip_shape, 0.0)
    lip_curve = 0.01 * n[25] + {"Upturned": 0.025, "Downturned": -0.025}.get(lip_shape, 0.0)
    lip_asym = 0.02 * n[26] + (0.04 if lip_shape == "Asymmetrical" else 0.0)
    lip_color = lerp(skin * rgb(0.85, 0.6, 0.6), rgb(0.55, 0.18, 0.22), 0.3 + 0.3 * (1 - masc) * u[11])
    return {"mouth_y": float(mouth_y), "mouth_w": float(mouth_w), "lip_up": float(max(lip_up, 0.015)),
            "lip_lo": float(max(lip_lo, 0.02)), "lip_curve": float(lip_curve), "lip_asym": float(lip_asym),
            "lip_color": lip_color}


def _ears(n: np.ndarray, eye_y: float) -> Fields:
    """Ear height (just below the eyes) and size."""
    ear_y = eye_y + 0.17 + 0.03 * n[27]
    ear_h = 0.27 + 0.03 * n[28]
    ear_w = 0.12 + 0.02 * n[29]
    return {"ear_y": float(ear_y), "ear_h": float(ear_h), "ear_w": float(ear_w)}


def _hair_style(a: Mapping[str, str], n: np.ndarray, u: np.ndarray, masc: float, age: int, face: Fields) -> Fields:
    """Hair style, length, hairline, parting, fringe (kept clear of the brows), volume and texture frequency."""
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
    brow_top = face["eye_y"] - face["brow_gap"] - face["brow_arch"] - face["brow_thick"]
    fringe = max(0.0, min(fringe, brow_top - 0.2 - hairline))
    hair_volume = {"Curly": 0.22, "Coily": 0.3, "Messy": 0.13, "Wavy": 0.11, "Dreadlocked": 0.16}.get(
        style, 0.06
    ) + 0.03 * u[15]
    hair_freq = 14.0 + 8.0 * u[16]
    return {"hair_style": style, "hair_len": float(hair_len), "hairline": float(hairline),
            "hair_part": float(hair_part), "fringe": float(fringe), "hair_volume": float(hair_volume),
            "hair_freq": float(hair_freq)}


def _facial_hair(a: Mapping[str, str], u: np.ndarray, gender: str, masc: float, hair_name: str, hair: Color,
                 brow_color: Color) -> Fields:
    """Facial hair: female never; unspecified men get a drawn default. Its colour follows natural hair."""
    beard_name = a.get("facial_hair")
    if gender == "Female" or (beard_name is None and masc < 0.75):
        beard_name = "Clean-shaven"
    elif beard_name is None:
        beard_name = _pick(u[17], ("Clean-shaven",) * 5 + ("Stubble", "Light beard", "Mustache", "Full beard"))
    beard = dict(BEARD_STYLES.get(beard_name, {"mustache": 0.6, "chin": 0.6}))
    beard_color = lerp(hair if hair_name in NATURAL_HAIR or "hair_colors" not in a else brow_color,
                       rgb(0.04, 0.03, 0.03), 0.25)
    return {"beard": beard, "beard_color": beard_color}


def _clothes_and_eyewear(a: Mapping[str, str], u: np.ndarray) -> Fields:
    """Headwear, clothing colours and glasses (shape and frame colour)."""
    glasses_color = rgb(0.08, 0.07, 0.07) if u[25] < 0.6 else rgb(0.45, 0.30, 0.15) * np.float32(0.6 + 0.5 * u[26])
    return {"headwear": a.get("headwear"), "cloth_color": rgb(*(0.15 + 0.7 * u[18:21])),
            "shirt_color": rgb(*(0.1 + 0.75 * u[21:24])), "glasses": "eyewear" in a,
            "glasses_shape": float(u[24]), "glasses_color": glasses_color}


def _body(n: np.ndarray, masc: float, body: str) -> Fields:
    """Neck and shoulder widths."""
    neck_w = 0.48 + 0.04 * n[33] + 0.06 * masc + {"Overweight": 0.08, "Underweight": -0.05}.get(body, 0.0)
    shoulder_w = 2.1 + 0.15 * n[34] + 0.35 * masc + {"Overweight": 0.3, "Underweight": -0.2}.get(body, 0.0)
    return {"neck_w": float(neck_w), "shoulder_w": float(shoulder_w)}


def _skin_texture(a: Mapping[str, str], age: int, marks_raw: np.ndarray) -> Fields:
    """Wrinkles from age, skin marks and shine from the skin type."""
    skin_type = a.get("skin_type", "")
    wrinkles = float(np.clip((age - 32) / 45.0, 0.0, 1.0)) + (0.35 if skin_type == "Wrinkled" else 0.0)
    oily = 0.5 if skin_type == "Oily" else 0.12
    return {"skin_type": skin_type, "wrinkles": float(wrinkles), "marks": marks_raw.copy(), "oily": float(oily)}


def _capture(u: np.ndarray, tone: float) -> Fields:
    """Exposure for the face and the document's light background."""
    exposure = 1.0 + 0.55 * max(tone - 0.35, 0.0)  # photographers expose for the face: dark skin keeps contrast
    doc_background = rgb(0.86, 0.88, 0.90) + rgb(*(0.04 * (u[27:30] - 0.5)))
    return {"exposure": float(exposure), "doc_background": doc_background}
