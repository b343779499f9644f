import numpy as np
import pytest

from synid_assets.core.analysis.alignment import (
    ARCFACE_TEMPLATE_112,
    align_face,
    align_face_eyes,
    alignment_matrix,
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
    m = alignment_matrix(ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(m, [[1, 0, 0], [0, 1, 0]], atol=1e-9)


@pytest.mark.parametrize(("scale", "angle", "tx", "ty"), [(2.5, 17.0, 130.0, -40.0), (0.4, -63.0, 5.5, 301.25)])
def test_known_similarity_is_recovered(scale, angle, tx, ty):
    truth = _similarity(scale, angle, tx, ty)
    src = apply_transform(truth, ARCFACE_TEMPLATE_112)  # template moved into an "image"
    est = estimate_similarity(ARCFACE_TEMPLATE_112, src)
    np.testing.assert_allclose(est, truth, atol=1e-4)
    back = alignment_matrix(src)  # image landmarks -> template is the inverse
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
    aligned = align_face(img, pts)
    assert aligned.shape == (112, 112, 3) and aligned.dtype == np.uint8
    np.testing.assert_allclose(_dot_centroids(aligned, ARCFACE_TEMPLATE_112), ARCFACE_TEMPLATE_112, atol=0.35)


def test_two_eye_alignment_puts_eyes_on_the_template():
    truth = _similarity(1.5, -10.0, 60.0, 80.0)
    pts = apply_transform(truth, ARCFACE_TEMPLATE_112)
    img = _dot_image(pts, 300, 300, radius=4)
    aligned = align_face_eyes(img, pts[0], pts[1])
    np.testing.assert_allclose(_dot_centroids(aligned, ARCFACE_TEMPLATE_112)[:2], ARCFACE_TEMPLATE_112[:2], atol=0.35)


def test_bad_landmark_shape_is_rejected():
    with pytest.raises(ValueError, match="5"):
        alignment_matrix(np.zeros((4, 2)))
