"""Raster primitives of the procedural renderer: analytic coverage, alpha painting, shape fields, ray casting.

Masks are anti-aliased analytically: for a field f that is positive inside a shape,
coverage = clip(f / |grad f| + 0.5) approximates the pixel-area coverage of the edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def coverage(f: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of {f > 0}: signed distance estimate f/|grad f| in pixels, clipped."""
    gy, gx = np.gradient(f)
    g = np.sqrt(gx * gx + gy * gy) + 1e-6
    return np.clip(f / g + 0.5, 0.0, 1.0)


def paint(img: np.ndarray, alpha: np.ndarray, color) -> None:
    """In-place alpha blend of a colour (3,) or image (H, W, 3) over img (only where alpha matters)."""
    m = alpha > 0.002  # most features are small: blending only their pixels is much cheaper
    if not m.any():
        return
    c = color[m] if np.ndim(color) == 3 else np.asarray(color, dtype=np.float32)
    px = img[m]
    img[m] = px + alpha[m][:, None].astype(np.float32) * (c - px)


def ellipse_field(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float, p: float = 2.0):
    """Positive inside an (super)ellipse, scaled to be roughly a distance in units of the smaller radius."""
    d = (np.abs(x - cx) / ax) ** p + (np.abs(y - cy) / ay) ** p
    return (1.0 - d ** (1.0 / p)) * min(ax, ay)


def gauss(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-(((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def rotation(yaw: float, pitch: float) -> np.ndarray:
    """Local -> world rotation (x right, y down, z towards camera); yaw turns the face to its left."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return r_pitch @ r_yaw


@dataclass
class Surface:
    inside: np.ndarray  # field positive inside the silhouette
    lx: np.ndarray
    ly: np.ndarray
    lz: np.ndarray
    nw: tuple[np.ndarray, np.ndarray, np.ndarray]  # world normal


def ray_cast_ellipsoid(x: np.ndarray, y: np.ndarray, rot: np.ndarray, radii: tuple[float, float, float]) -> Surface:
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
    inside = disc / (4 * a)  # ~ proportional to (1 - r^2), fine for coverage
    return Surface(inside=inside, lx=lx, ly=ly, lz=lz, nw=(wx, wy, wz))


def project(rot: np.ndarray, p: tuple[float, float, float]) -> tuple[float, float, float]:
    v = rot @ np.array(p, dtype=np.float64)
    return float(v[0]), float(v[1]), float(v[2])

