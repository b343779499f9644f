"""Procedural face renderer: numpy + Pillow only, no weights, deterministic.

An identity (identity.py) holds everything about a person that stays fixed across their images, drawn
from the identity seed and steered by the attributes. A scene (scene.py) holds the capture conditions of
one image; rendering paints background, drape or long hair, shoulders and neck, ears, hair volume, the
lit head with its facial features (face.py, beard.py) and headwear, then blur and noise. Live images only
add pose, expression, lighting, background, blur and noise, all recorded in the variation dict.

Modules: palettes (colour tables), raster (coverage, painting, ray casting), identity, scene, face, beard.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from PIL import Image

from synid_assets.core.dataset.seeds import stream_seed
from synid_assets.core.generation.render.identity import Identity, build_identity
from synid_assets.core.generation.render.scene import BACKGROUNDS, EXPRESSIONS, Scene, render_scene

RENDERER_NAME = "procedural"
RENDERER_VERSION = "3"  # bump when output bytes change for the same inputs (and re-pin tests/test_render.py)

__all__ = [
    "BACKGROUNDS",
    "EXPRESSIONS",
    "RENDERER_NAME",
    "RENDERER_VERSION",
    "Identity",
    "build_identity",
    "draw_live_variation",
    "render_document",
    "render_live",
]

def render_document(attributes: Mapping[str, str], seed: int, size: int = 256) -> Image.Image:
    """A passport-like portrait: frontal, neutral, evenly lit, plain light background."""
    ident = build_identity(attributes, seed)
    sc = Scene(ambient=0.92, light_strength=0.15, bg_colors=(tuple(float(c) for c in ident.doc_background),))
    return render_scene(ident, sc, size)


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
    sc = Scene(
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
    return render_scene(ident, sc, size)
