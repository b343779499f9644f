import hashlib

import numpy as np
import pytest

from synid_assets.core.analysis.alignment import (
    ARCFACE_TEMPLATE_112,
    align_face_eyes,
    apply_transform,
    arcface_template,
    estimate_similarity,
    warp_affine,
)


def _similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array(
        [[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]], dtype=np.float64
    )


def test_template_is_insightface_arcface_dst():
    assert ARCFACE_TEMPLATE_112.shape == (5, 2)
    assert ARCFACE_TEMPLATE_112[0].tolist() == [38.2946, 51.6963]
    assert ARCFACE_TEMPLATE_112[4].tolist() == [70.7299, 92.2041]
    np.testing.assert_allclose(arcface_template(224), ARCFACE_TEMPLATE_112 * 2)
    np.testing.assert_allclose(arcface_template(128)[:, 0], ARCFACE_TEMPLATE_112[:, 0] + 8.0)


def test_template_landmarks_map_to_identity():
    m = estimate_similarity(ARCFACE_TEMPLATE_112, ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(m, [[1, 0, 0], [0, 1, 0]], atol=1e-9)


def test_template_and_similarity_are_insightfaces():
    from insightface.utils import face_align

    np.testing.assert_allclose(ARCFACE_TEMPLATE_112, face_align.arcface_dst, atol=1e-5)  # theirs is float32
    rng = np.random.default_rng(5)
    for size in (112, 128, 224):
        lmk = ARCFACE_TEMPLATE_112 * rng.uniform(1.5, 3.0) + rng.uniform(20, 200, size=2) + rng.normal(0, 2, (5, 2))
        theirs = face_align.estimate_norm(lmk, image_size=size)
        np.testing.assert_allclose(estimate_similarity(lmk, arcface_template(size)), theirs, atol=1e-4)


def test_warp_matches_opencv_within_one_level():
    import cv2

    img = np.random.default_rng(1).integers(0, 256, size=(240, 200, 3), dtype=np.uint8)
    matrix = _similarity(0.47, 12.0, -20.0, -35.0)
    ours = warp_affine(img, matrix, (112, 112)).astype(np.int16)
    theirs = cv2.warpAffine(img, matrix, (112, 112), borderValue=0.0).astype(np.int16)
    assert np.abs(ours - theirs).max() <= 1  # OpenCV's fixed-point bilinear weights round differently


@pytest.mark.parametrize(("scale", "angle", "tx", "ty"), [(2.5, 17.0, 130.0, -40.0), (0.4, -63.0, 5.5, 301.25)])
def test_known_similarity_is_recovered(scale, angle, tx, ty):
    truth = _similarity(scale, angle, tx, ty)
    src = apply_transform(truth, ARCFACE_TEMPLATE_112)  # template moved into an "image"
    est = estimate_similarity(ARCFACE_TEMPLATE_112, src)
    np.testing.assert_allclose(est, truth, atol=1e-4)
    back = estimate_similarity(src, ARCFACE_TEMPLATE_112)  # image landmarks -> template is the inverse
    np.testing.assert_allclose(apply_transform(back, src), ARCFACE_TEMPLATE_112, atol=1e-4)


def test_similarity_ignores_reflection_and_rejects_degenerate_points():
    src = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    dst = src * [1, -1]  # mirrored: the best similarity is not a reflection
    m = estimate_similarity(src, dst)
    assert np.linalg.det(m[:, :2]) > 0
    with pytest.raises(ValueError):
        estimate_similarity(np.ones((5, 2)), ARCFACE_TEMPLATE_112)


def test_warp_with_identity_is_a_copy_and_zero_outside():
    img = np.random.default_rng(0).integers(0, 256, size=(112, 112, 3), dtype=np.uint8)
    out = warp_affine(img, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (112, 112))
    np.testing.assert_array_equal(out, img)
    shifted = warp_affine(img, np.array([[1.0, 0, 50], [0, 1.0, 0]]), (112, 112))
    assert (shifted[:, :50] == 0).all()
    np.testing.assert_array_equal(shifted[:, 50:], img[:, :62])


def _dot_image(points: np.ndarray, height: int, width: int, radius: int = 3) -> np.ndarray:
    img = np.zeros((height, width, 3), dtype=np.uint8)
    ys, xs = np.mgrid[0:height, 0:width]
    for i, (x, y) in enumerate(points):
        mask = (xs - x) ** 2 + (ys - y) ** 2 <= radius**2
        img[mask] = (255, 40 * i, 0)
    return img


def _dot_centroids(img: np.ndarray, template: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    weight = img[:, :, 0].astype(np.float64)
    found = []
    for x, y in template:
        near = ((xs - x) ** 2 + (ys - y) ** 2 <= 8**2) * weight
        found.append([(near * xs).sum() / near.sum(), (near * ys).sum() / near.sum()])
    return np.array(found)


def test_warping_puts_dots_back_on_the_template():
    truth = _similarity(2.2, 25.0, 90.0, 40.0)
    pts = apply_transform(truth, ARCFACE_TEMPLATE_112)
    img = _dot_image(pts, 400, 360, radius=5)
    aligned = warp_affine(img, estimate_similarity(pts, ARCFACE_TEMPLATE_112), (112, 112))
    assert aligned.shape == (112, 112, 3) and aligned.dtype == np.uint8
    np.testing.assert_allclose(_dot_centroids(aligned, ARCFACE_TEMPLATE_112), ARCFACE_TEMPLATE_112, atol=0.35)


def test_two_eye_alignment_puts_eyes_on_the_template():
    truth = _similarity(1.5, -10.0, 60.0, 80.0)
    pts = apply_transform(truth, ARCFACE_TEMPLATE_112)
    img = _dot_image(pts, 300, 300, radius=4)
    aligned = align_face_eyes(img, pts[0], pts[1])
    np.testing.assert_allclose(_dot_centroids(aligned, ARCFACE_TEMPLATE_112)[:2], ARCFACE_TEMPLATE_112[:2], atol=0.35)


def test_two_eye_alignment_bytes_are_unchanged():
    # sha256 of align_face_eyes on a fixed image, recorded before the 5-point path moved to insightface (64a1151)
    img = np.random.default_rng(7).integers(0, 256, size=(300, 260, 3), dtype=np.uint8)
    out = align_face_eyes(img, np.array([101.3, 130.8]), np.array([166.9, 121.4]))
    digest = hashlib.sha256(out.tobytes()).hexdigest()
    assert digest == "133ea868ebcd7238c7660f0074c51e84621af2d18ec2cff3777e0d6db090b38e"


def test_mismatched_point_sets_are_rejected():
    with pytest.raises(ValueError, match="differ in shape"):
        estimate_similarity(np.zeros((4, 2)), ARCFACE_TEMPLATE_112)
