"""Colour palettes and attribute tables of the procedural renderer (sRGB 0..1)."""

from __future__ import annotations

import numpy as np

Color = np.ndarray


# Skin tones from light to dark (sRGB 0..1); a tone index t in [0, 1] interpolates along them.
SKIN_PALETTE = np.array(
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
ORIGIN_TONE = {
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

HAIR_COLORS = {
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
NATURAL_HAIR = ("Black", "Brown", "Blonde", "Red")

EYE_COLORS = np.array(
    [[0.30, 0.18, 0.09], [0.20, 0.12, 0.07], [0.35, 0.42, 0.55], [0.32, 0.42, 0.25], [0.45, 0.33, 0.18]],
    dtype=np.float32,
)

AGE_MID = {
    "15-19": 17,
    "20-29": 25,
    "30-39": 35,
    "40-49": 45,
    "50-59": 55,
    "60-69": 65,
    "70-79": 75,
    "80+": 84,
}

# Facial-hair styles -> components (mustache, chin, jaw, cheeks, soul patch, density, length)
BEARD_STYLES: dict[str, dict[str, float]] = {
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


def rgb(*channels: float) -> Color:
    """A float32 colour from its channels."""
    return np.array(channels, dtype=np.float32)


def lerp(a: Color, b: Color, t: float) -> Color:
    """Linear interpolation between two colours (float32)."""
    return (a + (b - a) * np.float32(t)).astype(np.float32)


def skin_color(tone: float) -> Color:
    """The skin palette at tone index `tone` in [0, 1] (light to dark)."""
    pos = float(np.clip(tone, 0.0, 1.0)) * (len(SKIN_PALETTE) - 1)
    i = min(int(pos), len(SKIN_PALETTE) - 2)
    return lerp(SKIN_PALETTE[i], SKIN_PALETTE[i + 1], pos - i)

