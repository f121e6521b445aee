"""Five-point similarity alignment (docs/methods.md §9): templates, Umeyama fit, the numpy warp against OpenCV."""

from __future__ import annotations

import numpy as np
import pytest

from facesphere.data.align import (
    ARCFACE_112x112,
    SPHEREFACE_112x96,
    align_face,
    estimate_similarity,
    get_template,
    landmarks_68_to_5,
    template_for,
    transform_points,
    warp_affine,
)
from facesphere.errors import DataError, InvalidOptionError
from tests.helpers import DATA


def _rotation(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def _reference_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Independent reference: the non-reflective similarity [[a, -b, tx], [b, a, ty]] is linear in (a, b, tx, ty),
    so the least-squares fit is an ordinary linear least-squares problem."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        rhs += [u, v]
    (a, b, tx, ty), *_ = np.linalg.lstsq(np.array(rows, float), np.array(rhs, float), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


# ------------------------------------------------------------------------------------------------------------------
# docs/methods.md §9 test vectors


@pytest.mark.parametrize("template", [ARCFACE_112x112, SPHEREFACE_112x96])
def test_template_to_itself_is_identity(template):
    np.testing.assert_allclose(estimate_similarity(template, template), [[1, 0, 0], [0, 1, 0]], atol=1e-12)


def test_double_size_and_shift():
    src = 2 * ARCFACE_112x112 + np.array([10, 20])
    np.testing.assert_allclose(estimate_similarity(src, ARCFACE_112x112), [[0.5, 0, -5], [0, 0.5, -10]], atol=1e-12)


def test_rotated_scaled_shifted_example():
    src = 1.3 * ARCFACE_112x112 @ _rotation(10).T + np.array([5, -7])
    matrix = estimate_similarity(src, ARCFACE_112x112)
    assert np.abs(transform_points(src, matrix) - ARCFACE_112x112).max() <= 1e-9
    np.testing.assert_allclose(matrix, [[0.757544, 0.133576, -2.852693], [-0.133576, 0.757544, 5.970689]],
                               atol=1e-6)


def test_arcface_is_sphereface_plus_8():
    np.testing.assert_allclose(ARCFACE_112x112 - SPHEREFACE_112x96, np.tile([8.0, 0.0], (5, 1)), atol=1e-12)


# ------------------------------------------------------------------------------------------------------------------
# the fit


def test_matches_linear_least_squares_on_noisy_points():
    rng = np.random.default_rng(0)
    for _ in range(20):
        src = rng.uniform(0, 250, size=(5, 2))
        dst = rng.uniform(0, 112, size=(5, 2))
        np.testing.assert_allclose(estimate_similarity(src, dst), _reference_similarity(src, dst), atol=1e-9)


def test_no_reflection_even_when_a_mirror_fits_exactly():
    mirrored = ARCFACE_112x112 * np.array([-1.0, 1.0]) + np.array([200.0, 0.0])
    matrix = estimate_similarity(mirrored, ARCFACE_112x112)
    assert np.linalg.det(matrix[:, :2]) > 0  # a rotation + scale, not a reflection
    # ... and it is the best non-reflective fit
    np.testing.assert_allclose(matrix, _reference_similarity(mirrored, ARCFACE_112x112), atol=1e-9)
    linear = matrix[:, :2]
    np.testing.assert_allclose(linear @ linear.T, np.eye(2) * (linear[0] @ linear[0]), atol=1e-12)  # no shear


def test_fit_errors():
    with pytest.raises(DataError, match="shape"):
        estimate_similarity(np.zeros((4, 2)), ARCFACE_112x112)
    with pytest.raises(DataError, match=r"\(N, 2\)"):
        estimate_similarity(np.zeros((5, 3)), np.zeros((5, 3)))
    bad = ARCFACE_112x112.copy()
    bad[2, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        estimate_similarity(bad, ARCFACE_112x112)
    with pytest.raises(DataError, match="coincide"):
        estimate_similarity(np.ones((5, 2)), ARCFACE_112x112)
    image = np.zeros((50, 50), np.uint8)
    with pytest.raises(DataError, match="5"):
        align_face(image, ARCFACE_112x112[:4])
    with pytest.raises(DataError, match="NaN"):
        align_face(image, bad)


# ------------------------------------------------------------------------------------------------------------------
# templates


def test_template_sizes():
    assert get_template("arcface").size == (112, 112)
    assert get_template("sphereface").size == (112, 96)
    np.testing.assert_allclose(template_for(112).points, ARCFACE_112x112)
    np.testing.assert_allclose(template_for(224).points, 2 * ARCFACE_112x112)
    np.testing.assert_allclose(template_for((112, 96)).points, SPHEREFACE_112x96)
    np.testing.assert_allclose(template_for((224, 192)).points, 2 * SPHEREFACE_112x96)
    # multiples of 128: arcface * S/128, then x += 8 S/128
    np.testing.assert_allclose(template_for(128).points, ARCFACE_112x112 + np.array([8.0, 0.0]))
    np.testing.assert_allclose(template_for(256).points, 2 * ARCFACE_112x112 + np.array([16.0, 0.0]))
    # 896 is a multiple of both: the 112 rule comes first (insightface estimate_norm)
    np.testing.assert_allclose(template_for(896).points, 8 * ARCFACE_112x112)
    for bad in (100, (112, 100), 0, "nose"):
        with pytest.raises(InvalidOptionError):
            get_template(bad)


def test_landmarks_68_to_5():
    points = np.arange(136, dtype=float).reshape(68, 2)
    five = landmarks_68_to_5(points)
    np.testing.assert_allclose(five[0], (points[36] + points[39]) / 2)
    np.testing.assert_allclose(five[1], (points[42] + points[45]) / 2)
    np.testing.assert_allclose(five[2:], points[[30, 48, 54]])
    assert landmarks_68_to_5(np.stack([points, points])).shape == (2, 5, 2)
    with pytest.raises(DataError):
        landmarks_68_to_5(np.zeros((5, 2)))


# ------------------------------------------------------------------------------------------------------------------
# the warp


def test_warp_identity_and_integer_shift_are_copies():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    np.testing.assert_array_equal(warp_affine(image, np.array([[1.0, 0, 0], [0, 1, 0]]), (40, 50)), image)
    # M maps source -> destination: shifting by (+3, +2) moves source pixel (x, y) to (x + 3, y + 2)
    out = warp_affine(image, np.array([[1.0, 0, 3], [0, 1, 2]]), (40, 50), border=7)
    np.testing.assert_array_equal(out[2:, 3:], image[:-2, :-3])
    assert (out[:2] == 7).all() and (out[:, :3] == 7).all()


def test_warp_half_pixel_is_the_rounded_mean():
    image = np.array([[0, 10, 21, 255]], dtype=np.uint8)
    out = warp_affine(image, np.array([[1.0, 0, -0.5], [0, 1, 0]]), (1, 3))  # dst x samples source x + 0.5
    np.testing.assert_array_equal(out, [[5, 16, 138]])  # 5.0, 15.5 -> 16, 138.0


def test_warp_errors():
    with pytest.raises(DataError, match="uint8"):
        warp_affine(np.zeros((4, 4), np.float32), np.eye(2, 3), (4, 4))
    with pytest.raises(DataError, match="singular"):
        warp_affine(np.zeros((4, 4), np.uint8), np.zeros((2, 3)), (4, 4))
    with pytest.raises(DataError):
        warp_affine(np.zeros((4, 4), np.uint8), np.eye(3), (4, 4))
    with pytest.raises(InvalidOptionError):
        warp_affine(np.zeros((4, 4), np.uint8), np.eye(2, 3), (4, 4), border=300)


def _test_images() -> list[np.ndarray]:
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, size=(60, 70, 3), dtype=np.uint8),
              rng.integers(0, 256, size=(45, 33), dtype=np.uint8)]
    lfw = sorted((DATA / "lfw" / "images").glob("A*/*.jpg"))[:1]
    if lfw:
        from facesphere.data.image import read_image

        images.append(read_image(lfw[0]))
    return images


def test_warp_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(3)
    worst = 0
    for image in _test_images():
        h, w = image.shape[:2]
        for trial in range(25):
            scale = rng.uniform(0.3, 2.5)
            linear = scale * _rotation(rng.uniform(-180, 180))
            if trial % 5 == 4:  # a general affine map too
                linear = linear + rng.normal(0, 0.2, size=(2, 2))
            matrix = np.hstack([linear, rng.uniform(-w / 2, w / 2, size=(2, 1))])
            border = int(rng.integers(0, 256)) if trial % 2 else 0
            out_h, out_w = int(rng.integers(20, 120)), int(rng.integers(20, 120))
            ours = warp_affine(image, matrix, (out_h, out_w), border=border)
            theirs = cv2.warpAffine(image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=(border,) * 3)
            assert ours.shape == theirs.shape
            worst = max(worst, int(np.abs(ours.astype(int) - theirs.astype(int)).max()))
    assert worst <= 1


def test_align_face_puts_marked_landmarks_on_the_template():
    """Five bright dots drawn at known landmarks of a rotated, scaled face land on the template after alignment."""
    rng = np.random.default_rng(4)
    for template in ("arcface", "sphereface"):
        spec = get_template(template)
        landmarks = 1.7 * spec.points @ _rotation(rng.uniform(-30, 30)).T + rng.uniform(20, 40, size=2)
        image = np.zeros((260, 240, 3), np.uint8)
        ys, xs = np.mgrid[0:260, 0:240]
        for x, y in landmarks:
            image[(xs - x) ** 2 + (ys - y) ** 2 <= 9] = 255
        crop = align_face(image, landmarks, template)
        assert crop.shape == (*spec.size, 3) and crop.dtype == np.uint8
        grey = crop[:, :, 0].astype(float)
        cy, cx = np.mgrid[0:spec.size[0], 0:spec.size[1]]
        for x, y in spec.points:
            near = (cx - x) ** 2 + (cy - y) ** 2 <= 16
            weights = grey * near
            centroid = np.array([(weights * cx).sum(), (weights * cy).sum()]) / weights.sum()
            assert np.linalg.norm(centroid - (x, y)) < 0.5
        assert align_face(image[:, :, 0], landmarks, template).shape == spec.size  # grey in, grey out
