"""Two-point (eye) alignment to the 112x112 ArcFace template (numpy only, no OpenCV), for detectors without mouth
corners.

The 5-point alignment of a detector that gives all five points is insightface's `face_align.norm_crop` (the
InsightFace analyzer calls it); insightface has no alignment from two points, which the torch FRS analyzer needs
with dlib's landmarks (eye corners and nose base only), so that stays here.

The template is insightface's `arcface_dst` (python-package/insightface/utils/face_align.py): left eye, right
eye, nose tip, left mouth corner, right mouth corner, as they appear in the image (the "left" eye is the one
on the image's left). FLUXSynID's MTCNN aligned crop uses the same five reference points.

`estimate_similarity` is Umeyama's least-squares similarity (rotation + uniform scale + translation), which is
what insightface's `estimate_norm` computes with skimage's SimilarityTransform. `warp_affine` is numpy bilinear
sampling in OpenCV's pixel convention (integer coordinates are pixel centres; output pixel (x, y) samples the
source at M^-1 (x, y)), with zeros outside the source, i.e. what `cv2.warpAffine(img, M, (112, 112),
borderValue=0)` produces with INTER_LINEAR up to rounding (tests/test_alignment.py checks both against insightface
and OpenCV). Pillow's affine transform is not used because it puts pixel centres at +0.5, which would shift the
crop by half a pixel against the template.
"""

from __future__ import annotations

import numpy as np

ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],  # left eye
        [73.5318, 51.5014],  # right eye
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # left mouth corner
        [70.7299, 92.2041],  # right mouth corner
    ],
    dtype=np.float64,
)
TEMPLATE_SIZE = 112


def arcface_template(size: int = TEMPLATE_SIZE) -> np.ndarray:
    """The template scaled to a `size` x `size` crop (insightface: multiples of 112 scale, of 128 shift x by 8)."""
    if size % 112 == 0:
        return ARCFACE_TEMPLATE_112 * (size / 112.0)
    if size % 128 == 0:
        ratio = size / 128.0
        dst = ARCFACE_TEMPLATE_112 * ratio
        dst[:, 0] += 8.0 * ratio
        return dst
    raise ValueError(f"alignment size must be a multiple of 112 or 128, got {size}")


def estimate_similarity(src_points: np.ndarray, dst_points: np.ndarray) -> np.ndarray:
    """2x3 matrix M of the similarity transform that best maps src onto dst (least squares, Umeyama 1991).

    dst ~= M[:, :2] @ src + M[:, 2]. Needs at least two distinct points.
    """
    src = np.asarray(src_points, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst_points, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape:
        raise ValueError(f"point sets differ in shape: {src.shape} vs {dst.shape}")
    n = src.shape[0]
    if n < 2:
        raise ValueError("a similarity transform needs at least 2 points")
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_c = src - src_mean
    dst_c = dst - dst_mean
    src_var = float((src_c**2).sum() / n)
    if src_var <= 0.0:
        raise ValueError("source points are all identical; cannot estimate a similarity transform")
    cov = dst_c.T @ src_c / n
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # reflection: flip the smallest singular direction
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float((s * d).sum() / src_var)
    trans = dst_mean - scale * rot @ src_mean
    return np.hstack([scale * rot, trans[:, None]])


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to Nx2 points."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    m = np.asarray(matrix, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    a_inv = np.linalg.inv(m[:, :2])
    return np.hstack([a_inv, (-a_inv @ m[:, 2])[:, None]])


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Warp an HxW[xC] image with the 2x3 matrix (source -> output coordinates) to size (width, height).

    Bilinear, OpenCV pixel convention, zeros outside the source. Output dtype equals the input dtype (uint8
    results are rounded).
    """
    img = np.asarray(image)
    squeeze = img.ndim == 2
    if squeeze:
        img = img[:, :, None]
    h, w = img.shape[:2]
    out_w, out_h = int(size[0]), int(size[1])
    inv = invert_affine(matrix)
    ys, xs = np.mgrid[0:out_h, 0:out_w].astype(np.float64)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    x0 = np.floor(sx).astype(np.int64)
    y0 = np.floor(sy).astype(np.int64)
    fx = (sx - x0)[..., None]
    fy = (sy - y0)[..., None]
    src = img.astype(np.float32)
    out = np.zeros((out_h, out_w, img.shape[2]), dtype=np.float32)
    for dy, dx, weight in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        xi = x0 + dx
        yi = y0 + dy
        valid = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        vals = np.zeros_like(out)
        vals[valid] = src[yi[valid], xi[valid]]
        out += weight.astype(np.float32) * vals
    if np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    result = out.astype(img.dtype)
    return result[:, :, 0] if squeeze else result


def align_face_eyes(image_rgb: np.ndarray, left_eye: np.ndarray, right_eye: np.ndarray, size: int = 112) -> np.ndarray:
    """Align from the two eye centres only (an exact 2-point similarity onto the template's eyes).

    Used when a detector gives no mouth corners (dlib's 5-point model: 4 eye corners + the base of the nose);
    vertical placement then follows from the inter-ocular distance alone, so it is an approximation of the
    5-point alignment the FRS thresholds were calibrated with.
    """
    src = np.array([left_eye, right_eye], dtype=np.float64)
    matrix = estimate_similarity(src, arcface_template(size)[:2])
    return warp_affine(image_rgb, matrix, (size, size))
