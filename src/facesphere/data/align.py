"""Five-point similarity alignment (docs/methods.md §9): templates, the least-squares similarity fit and the affine warp.

Landmark order everywhere: left eye centre, right eye centre, nose tip, left mouth corner, right mouth corner, where
"left" / "right" are as seen in the picture (the first point has the smaller x on an upright face). Points are
``(x, y)`` pixel coordinates with pixel centres at integer coordinates (OpenCV's convention).

    from facesphere.data.align import align_face
    crop = align_face(image, landmarks)                 # (112, 112, 3) uint8, ArcFace template
    crop = align_face(image, landmarks, "sphereface")   # (112, 96, 3)

Pure numpy: no OpenCV needed. :func:`warp_affine` reproduces ``cv2.warpAffine(img, M, (W, H), flags=INTER_LINEAR,
borderMode=BORDER_CONSTANT, borderValue=border)``: it uses OpenCV's fixed-point arithmetic (sampling positions
rounded to 1/1024 then 1/32 pixel, bilinear weights in 1/1024 units, result rounded to the nearest integer), so the
two agree to within one grey level (bit for bit on the random warps of the tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from ..errors import DataError, InvalidOptionError

__all__ = [
    "ARCFACE_112x112",
    "SPHEREFACE_112x96",
    "Template",
    "template_for",
    "get_template",
    "estimate_similarity",
    "warp_affine",
    "transform_points",
    "align_face",
    "landmarks_68_to_5",
]

#: ArcFace 112x112 template (insightface ``arcface_dst``), (5, 2) ``(x, y)``.
ARCFACE_112x112: np.ndarray = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
ARCFACE_112x112.setflags(write=False)

#: SphereFace / CosFace 112x96 template (``face_align_demo.m``), (5, 2) ``(x, y)``: the ArcFace one shifted by -8 in x.
SPHEREFACE_112x96: np.ndarray = np.array(
    [[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655], [62.7299, 92.2041]],
    dtype=np.float64,
)
SPHEREFACE_112x96.setflags(write=False)

TemplateLike = Union[str, int, tuple[int, int], "Template"]

# OpenCV's warpAffine samples at positions rounded to 1/32 pixel (after a first rounding to 1/1024 pixel).
_SUBPIXEL_STEPS = 32
_FINE = 1024.0


def _to_subpixel(fine: np.ndarray) -> np.ndarray:
    """Positions in 1/1024 pixel -> nearest 1/32 pixel (ties up), in units of 1/32 pixel (float64 integers)."""
    step = _FINE / _SUBPIXEL_STEPS
    return np.floor((fine + step / 2) / step)


@dataclass(frozen=True)
class Template:
    """Reference points ``points`` (5, 2) ``(x, y)`` and the output crop size ``size`` = ``(H, W)``."""

    name: str
    points: np.ndarray
    size: tuple[int, int]


def template_for(size: int | tuple[int, int]) -> Template:
    """The template for an output crop of ``size`` (an int S for S x S, or ``(H, W)``).

    * ``(112, 96)`` and its multiples ``(112k, 96k)``: the SphereFace template scaled by k.
    * square S, S a multiple of 112: ``arcface · S/112`` (checked first, as insightface ``estimate_norm`` does);
    * square S, S a multiple of 128: ``arcface · S/128`` then ``x += 8·S/128``.

    Raises:
        InvalidOptionError: any other size.
    """
    if isinstance(size, (int, np.integer)):
        height = width = int(size)
    else:
        try:
            height, width = (int(v) for v in size)
        except (TypeError, ValueError):
            raise InvalidOptionError(f"template size must be an int or (H, W), got {size!r}") from None
    if height <= 0 or width <= 0:
        raise InvalidOptionError(f"template size must be positive, got {height}x{width}")
    if height == width:
        if height % 112 == 0:
            return Template(f"arcface{height}", ARCFACE_112x112 * (height / 112.0), (height, width))
        if height % 128 == 0:
            points = ARCFACE_112x112 * (height / 128.0)
            points[:, 0] += 8.0 * height / 128.0
            return Template(f"arcface{height}", points, (height, width))
    elif height % 112 == 0 and width * 112 == height * 96:
        k = height // 112
        return Template(f"sphereface{height}x{width}", SPHEREFACE_112x96 * float(k), (height, width))
    raise InvalidOptionError(
        f"no alignment template for a {height}x{width} crop: use a square multiple of 112 or 128 (ArcFace "
        "template) or 112k x 96k (SphereFace template)"
    )


def get_template(template: TemplateLike) -> Template:
    """``"arcface"`` (112x112), ``"sphereface"`` (112x96), a size for :func:`template_for`, or a :class:`Template`."""
    if isinstance(template, Template):
        return template
    if isinstance(template, str):
        name = template.lower()
        if name == "arcface":
            return Template("arcface", ARCFACE_112x112.copy(), (112, 112))
        if name in ("sphereface", "cosface"):
            return Template("sphereface", SPHEREFACE_112x96.copy(), (112, 96))
        raise InvalidOptionError(f"unknown alignment template {template!r}: use 'arcface', 'sphereface' or a size")
    return template_for(template)


def _as_points(points: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] < 2:
        raise DataError(f"{what} must be an (N, 2) array of (x, y) points with N >= 2, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise DataError(f"{what} contain NaN or infinite coordinates: {array.tolist()}")
    return array


def estimate_similarity(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping ``src_pts`` onto
    ``dst_pts`` (Umeyama 1991, docs/methods.md §9).

    Args:
        src_pts: (N, 2) points in the source image (N >= 2; 5 landmarks for face alignment).
        dst_pts: (N, 2) corresponding points (the template).

    Returns:
        float64 (2, 3) ``M = [scale·R | t]`` with ``dst ≈ M @ [x, y, 1]``.

    Raises:
        DataError: mismatched or non-(N, 2) shapes, NaN / infinite coordinates, or source points that all coincide.
    """
    src = _as_points(src_pts, "source landmarks")
    dst = _as_points(dst_pts, "template points")
    if src.shape != dst.shape:
        raise DataError(f"source landmarks {src.shape} and template points {dst.shape} differ in shape")
    count = src.shape[0]
    mean_src, mean_dst = src.mean(axis=0), dst.mean(axis=0)
    centred_src, centred_dst = src - mean_src, dst - mean_dst
    variance_src = float((centred_src**2).sum()) / count
    if variance_src <= 1e-12 * max(1.0, float(np.abs(src).max())) ** 2:
        raise DataError(f"source landmarks all coincide ({src.tolist()}): no similarity transform")
    covariance = centred_dst.T @ centred_src / count
    u, d, vt = np.linalg.svd(covariance)
    signs = np.array([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) >= 0 else -1.0])
    rotation = (u * signs) @ vt
    scale = float((d * signs).sum()) / variance_src
    translation = mean_dst - scale * rotation @ mean_src
    return np.hstack([scale * rotation, translation[:, None]])


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine ``matrix`` to (N, 2) ``points``: float64 (N, 2)."""
    points = np.asarray(points, dtype=np.float64)
    matrix = np.asarray(matrix, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def _invert_affine(matrix: np.ndarray) -> np.ndarray:
    linear = matrix[:, :2]
    det = float(np.linalg.det(linear))
    if not np.isfinite(det) or abs(det) < 1e-12:
        raise DataError(f"affine matrix {matrix.tolist()} is singular")
    inverse = np.linalg.inv(linear)
    return np.hstack([inverse, (-inverse @ matrix[:, 2])[:, None]])


def warp_affine(image: np.ndarray, matrix: np.ndarray, out_size: tuple[int, int], border: int = 0) -> np.ndarray:
    """Bilinear affine warp with ``cv2.warpAffine`` semantics, in numpy.

    Args:
        image: uint8 (H, W) or (H, W, C).
        matrix: (2, 3) affine map from source pixel coordinates to destination pixel coordinates.
        out_size: ``(H_out, W_out)`` (note: OpenCV's ``dsize`` is ``(W, H)``).
        border: value of pixels outside the source (constant border); interpolation near the edge blends with it.

    Returns:
        uint8 (H_out, W_out) or (H_out, W_out, C).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise DataError(f"warp_affine expects a uint8 (H, W) or (H, W, C) image, got {image.dtype} {image.shape}")
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3) or not np.isfinite(matrix).all():
        raise DataError(f"affine matrix must be a finite (2, 3) array, got {matrix.shape}")
    if not 0 <= int(border) <= 255:
        raise InvalidOptionError(f"border must be a grey level in 0..255, got {border}")
    out_h, out_w = (int(v) for v in out_size)
    if out_h <= 0 or out_w <= 0:
        raise InvalidOptionError(f"output size must be positive, got {out_h}x{out_w}")
    inverse = _invert_affine(matrix)
    squeeze = image.ndim == 2
    source = image[:, :, None] if squeeze else image
    height, width, channels = source.shape

    # Source position of every destination pixel in fixed point, as OpenCV computes it: the column term and the
    # row term are each rounded to 1/1024 pixel, then their sum is rounded (half up) to 1/32 pixel.
    columns = np.arange(out_w, dtype=np.float64)
    rows = np.arange(out_h, dtype=np.float64)
    fixed_x = _to_subpixel(np.rint(inverse[0, 0] * columns * _FINE)[None, :]
                           + np.rint((inverse[0, 1] * rows + inverse[0, 2]) * _FINE)[:, None])
    fixed_y = _to_subpixel(np.rint(inverse[1, 0] * columns * _FINE)[None, :]
                           + np.rint((inverse[1, 1] * rows + inverse[1, 2]) * _FINE)[:, None])
    x0 = np.floor(fixed_x / _SUBPIXEL_STEPS)
    y0 = np.floor(fixed_y / _SUBPIXEL_STEPS)
    # Bilinear weights in integer units of 1/1024 (= 1/32 x 1/32): the interpolation is exact integer arithmetic.
    wx = (fixed_x - x0 * _SUBPIXEL_STEPS).astype(np.int32)
    wy = (fixed_y - y0 * _SUBPIXEL_STEPS).astype(np.int32)
    # Far-away positions only ever read the border; clamp before converting to int to avoid overflow.
    x0 = np.clip(x0, -2, width).astype(np.intp) + 2
    y0 = np.clip(y0, -2, height).astype(np.intp) + 2

    # Pad by 2 border pixels on every side so every neighbour index is in range.
    padded = np.full((height + 4, width + 4, channels), border, dtype=np.uint8)
    padded[2:-2, 2:-2] = source
    steps = _SUBPIXEL_STEPS
    w_tl = ((steps - wx) * (steps - wy))[:, :, None]
    w_tr = (wx * (steps - wy))[:, :, None]
    w_bl = ((steps - wx) * wy)[:, :, None]
    w_br = (wx * wy)[:, :, None]
    value = (padded[y0, x0] * w_tl + padded[y0, x0 + 1] * w_tr
             + padded[y0 + 1, x0] * w_bl + padded[y0 + 1, x0 + 1] * w_br)
    half = steps * steps // 2
    out = ((value + half) // (steps * steps)).astype(np.uint8)
    return out[:, :, 0] if squeeze else out


def align_face(image: np.ndarray, landmarks: np.ndarray, template: TemplateLike = "arcface",
               border: int = 0) -> np.ndarray:
    """Align the face with 5 ``landmarks`` (5, 2) in ``image`` (uint8 (H, W) or (H, W, C)) to ``template``.

    ``template``: ``"arcface"`` (112x112), ``"sphereface"`` (112x96), an output size (see :func:`template_for`) or a
    :class:`Template`. Returns the uint8 crop (H_t, W_t[, C]).
    """
    spec = get_template(template)
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2):
        raise DataError(f"expected 5 (x, y) landmarks, shape (5, 2), got {points.shape}")
    matrix = estimate_similarity(points, spec.points)
    return warp_affine(image, matrix, spec.size, border=border)


def landmarks_68_to_5(landmarks: np.ndarray) -> np.ndarray:
    """The 5 alignment points from 68 iBUG landmarks ``(..., 68, 2)``: eyes = mean of points (36, 39) and (42, 45),
    nose = 30, mouth corners = 48 and 54 (0-based). Returns float64 ``(..., 5, 2)``."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim < 2 or points.shape[-2:] != (68, 2):
        raise DataError(f"expected 68 (x, y) landmarks, shape (..., 68, 2), got {points.shape}")
    left_eye = (points[..., 36, :] + points[..., 39, :]) / 2
    right_eye = (points[..., 42, :] + points[..., 45, :]) / 2
    return np.stack([left_eye, right_eye, points[..., 30, :], points[..., 48, :], points[..., 54, :]], axis=-2)
